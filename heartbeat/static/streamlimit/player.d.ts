// Types of player.js, the StreamLimit player library (an ES module without dependencies).

/** One live session of the account, as the service lists it (token mode only). */
export interface LiveSession {
  sessionId: string;
  streamId: string;
  deviceName: string | null;
  /** ISO 8601, UTC. */
  startedAt: string;
  /** ISO 8601, UTC. */
  lastHeartbeatAt: string;
}

export type LimitSource = "override" | "token" | "plan" | "default";

/** A 200 answer: keep playing. */
export interface AllowedDetail {
  allowed: true;
  activeSessions: number | null;
  limit: number;
  limitSource?: LimitSource;
  heartbeatInterval: number;
  /** Redis was down and the service runs with STREAMLIMIT_FAIL_OPEN. */
  degraded?: boolean;
  /** The first 200 since start(): playback may begin. */
  first: boolean;
  /** The first 200 after an `error` event. */
  recovered: boolean;
}

/** The policy rule that refused a session: maxStreams, devices.<class>, pools.<pool> or networks. */
export interface RuleHit {
  name: string;
  /** The rule's limit for this account (slots for maxStreams). */
  limit: number;
  /** What the rule counted when it refused (sessions, slots or networks). */
  active: number;
}

/** Why this screen may not play: the slot was not given (or a request was wrong). */
export interface RefusedDetail {
  /** "concurrency_limit_reached", or a player bug: "invalid_request", "token_mismatch", "invalid_token", ... */
  code: string;
  /** A sentence for the viewer (concurrency_limit_reached) or for the developer. */
  message: string;
  status: number;
  /** The account's live sessions: sent with concurrency_limit_reached when tokens are on. */
  sessions?: LiveSession[];
  limit?: number;
  activeSessions?: number;
  /** Under a policy document, for a refusal by one of its rules: which rule, its limit and count. */
  rule?: RuleHit;
  /** With `rule`: the decision's id, in the service's log line too; support finds the decision by it. */
  decisionId?: string;
  /** The session a handOff() asked to take over, when this refusal answered it ("replace_not_allowed": 403). */
  replaces?: string;
  body: unknown;
}

/** Playback on this screen ended. */
export interface StoppedDetail {
  /**
   * "session_evicted" (support), "session_replaced" (a newer screen took the slot),
   * "session_stopped" (stopped from another screen), "session_handed_off" (the viewer moved
   * playback to another screen; the message names it: "Playback moved to Living room TV."), or, with local: true,
   * "stopped_locally" (stop()) and "page_hidden" (the page was closed or left).
   */
  code:
    | "session_evicted"
    | "session_replaced"
    | "session_stopped"
    | "session_handed_off"
    | "stopped_locally"
    | "page_hidden"
    | string;
  message: string;
  local: boolean;
  status?: number;
  body?: unknown;
}

/** No good answer for the grace period; playback goes on and the heartbeats keep being retried. */
export interface ErrorDetail {
  /** "internal_error", "timeout", "network_error", "token_unavailable", "http_<status>". */
  code: string;
  message: string;
  correlationId?: string | null;
  status?: number;
  failures: number;
  /** ISO 8601: the last good answer (or the start). */
  since: string;
}

/** Every answer as it comes (any status), for logs and demos. */
export interface AnswerDetail {
  status: number;
  body: unknown;
  at: string;
}

export interface StreamLimitEventMap {
  allowed: AllowedDetail;
  refused: RefusedDetail;
  stopped: StoppedDetail;
  error: ErrorDetail;
  answer: AnswerDetail;
}

export interface StreamLimitSessionOptions {
  /** The service's origin, e.g. "https://limits.example.com". Default: the origin this module was loaded from. */
  endpoint?: string;
  /** The account. May be left out with tokens (the token's sub is the account). */
  userId?: string;
  streamId: string;
  /**
   * Default: the tab's id, a random id kept in sessionStorage (a reload finds it). A stop
   * (stop(), or the beacon on pagehide) retires it: the tab's next session (the reloaded page,
   * or start() again) plays under a new id, so that a stop still on its way cannot end it.
   * A sessionId given here is the page's to manage, and is never changed.
   */
  sessionId?: string;
  /** Shown to the account's other screens ("Living room TV"), at most 64 characters. */
  deviceName?: string;
  /**
   * A stable id of the device, for the policy's sameDeviceTakeover (a restarted player takes its
   * own session's place). Default: browserDeviceId(), one id per browser profile kept in
   * localStorage. null: send none (when the token's deviceId claim names the device; a body that
   * contradicts a claim is refused with token_mismatch). 1 to 128 characters.
   */
  deviceId?: string | null;
  /** localStorage key of the browser's device id. Default "streamlimit.deviceId". */
  deviceStorageKey?: string;
  /** The device class the policy caps ("mobile", "tv"; 1 to 32 of a-z 0-9 _ -). Default: none sent. */
  deviceClass?: string;
  /** "sd", "hd" or "uhd": a session takes the policy's weights[quality] slots. Default: none sent. */
  quality?: "sd" | "hd" | "uhd";
  /** A playback token (JWT) when the service has tokens on. */
  token?: string;
  /**
   * Called for the first token, and once more when the service answers token_expired. Best a
   * session token (sid = this sessionId; read session.sessionId when called, as it changes after
   * a stop): a stop sent with an account token blocks the session for the session TTL (it is how
   * "stop it there" works).
   */
  getToken?: () => string | Promise<string>;
  /** An account token (no sid) for stopOther() and listSessions(). Default: the session's own token. */
  getAccountToken?: () => string | Promise<string>;
  /** Seconds without a good answer before the `error` event. Default: 2 x heartbeatInterval (the service's default session TTL). */
  errorGraceSeconds?: number;
  /** Seconds before a heartbeat request is given up as a time-out. Default 10. */
  requestTimeoutSeconds?: number;
  /** Longest wait between retries after errors (never shorter than the interval). Default 120. */
  maxRetrySeconds?: number;
  /** Interval before the first answer says otherwise. Default 20. */
  heartbeatInterval?: number;
  /** "worker" (default): a Worker-based timer that hidden tabs do not throttle; "main": setTimeout. */
  timer?: "worker" | "main";
  /** Send the stop with navigator.sendBeacon on pagehide. Default true. */
  stopOnPageHide?: boolean;
  /** sessionStorage key of the tab's session id. Default "streamlimit.sessionId". */
  sessionStorageKey?: string;
  /** Random numbers in [0, 1) for the retry jitter (tests). Default Math.random. */
  random?: () => number;
}

export type SessionState = "idle" | "starting" | "playing" | "refused" | "stopped";

export declare class StreamLimitError extends Error {
  code: string;
  status: number;
  body: unknown;
}

export declare class StreamLimitSession extends EventTarget {
  constructor(options: StreamLimitSessionOptions);
  /** The id the heartbeats name; with the tab's id, a new one at the first start() after a stop. */
  readonly sessionId: string;
  readonly state: SessionState;
  /** Seconds between heartbeats, as the last answer said. */
  readonly heartbeatInterval: number;
  streamId: string;
  /** The device id the heartbeats carry (null: none). */
  readonly deviceId: string | null;
  readonly deviceClass: string | null;
  readonly quality: string | null;
  /**
   * Start heartbeating; the first heartbeat asks for a slot. Within 10 s after this tab sent a
   * stop, a refusal for the limit (most likely the slot that stop is freeing) is asked again
   * every second rather than reported, until that time is up.
   */
  start(): void;
  /**
   * "Move playback here": start this session in place of the account's session `sessionId`, in one
   * step, even when the account is full; that screen is told "session_handed_off" with this
   * screen's deviceName. The heartbeat that hands off uses an account token (options.token, else
   * getAccountToken(), else the session's own token, which may only take over a session of its own
   * deviceId claim). A refusal comes as the `refused` event ("replace_not_allowed", 403, when the
   * session is not the account's or the token may not end it). Rejects while this session is
   * starting or playing (stopOther() ends another screen then).
   */
  handOff(sessionId: string, options?: { token?: string }): Promise<void>;
  /** Autoplay moved on: the next heartbeat names this stream; the slot is kept. */
  changeStream(streamId: string): void;
  /** Stop and free the slot now. */
  stop(): Promise<void>;
  /** Stop another screen of the account (needs an account token: options.token, getAccountToken, or the session's). Rejects with StreamLimitError. */
  stopOther(sessionId: string, options?: { token?: string }): Promise<void>;
  /** GET /sessions (needs a token). */
  listSessions(options?: { token?: string }): Promise<{ limit: number; limitSource: LimitSource; sessions: LiveSession[] }>;
  on<K extends keyof StreamLimitEventMap>(type: K, listener: (detail: StreamLimitEventMap[K]) => void): this;
  off<K extends keyof StreamLimitEventMap>(type: K, listener: (detail: StreamLimitEventMap[K]) => void): this;
  addEventListener<K extends keyof StreamLimitEventMap>(
    type: K,
    listener: (event: CustomEvent<StreamLimitEventMap[K]>) => void,
    options?: boolean | AddEventListenerOptions,
  ): void;
  addEventListener(type: string, listener: EventListenerOrEventListenerObject | null, options?: boolean | AddEventListenerOptions): void;
}

/** The session id of this tab (sessionStorage), as StreamLimitSession uses by default. */
export declare function tabSessionId(storageKey?: string): string;

/** The id of this browser profile (localStorage, made once), as StreamLimitSession sends by default. */
export declare function browserDeviceId(storageKey?: string): string;

/** Forget this tab's session id: the next session of the tab is a new play (after session_stopped or session_replaced). */
export declare function resetTabSessionId(storageKey?: string): void;
