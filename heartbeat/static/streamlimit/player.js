// StreamLimit player library: the heartbeat loop of one player, as an ES module.
//
//   import { StreamLimitSession } from "https://limits.example.com/static/streamlimit/player.js";
//   const session = new StreamLimitSession({ userId, streamId, deviceName, getToken });
//   session.addEventListener("refused", (e) => showWhoIsWatching(e.detail));
//   session.addEventListener("stopped", (e) => pauseAndSay(e.detail.message));
//   session.start();          // or session.handOff(otherSessionId): "move playback here"
//
// No dependencies. The README's "For player teams" section is the manual; the
// types are in player.d.ts beside this file.

const DEFAULT_INTERVAL_SECONDS = 20;
const DEFAULT_REQUEST_TIMEOUT_SECONDS = 10;
const DEFAULT_MAX_RETRY_SECONDS = 120;
// Retries wait interval x 2^(n-1), capped, plus up to this share more at random,
// so that players that failed together do not come back together.
const RETRY_JITTER = 0.2;
const SESSION_STORAGE_KEY = "streamlimit.sessionId";
// localStorage: one id per browser profile, kept across tabs, reloads and restarts (the policy's deviceId).
const DEVICE_STORAGE_KEY = "streamlimit.deviceId";
// Beside the tab's session id: when this tab last sent a stop (ms), for the hand-over below.
const STOP_SENT_SUFFIX = ".stopSentAt";
// After this tab sent a stop, its next session may find the account full until that stop
// lands (a beacon of a page being reloaded can take a moment): for this long it asks again,
// every HANDOVER_RETRY_MS, instead of taking the refusal as final.
const HANDOVER_MS = 10_000;
const HANDOVER_RETRY_MS = 1_000;

// Answers that end playback on this screen because something else ended it.
// session_handed_off: the viewer moved playback to another screen (its name is in the message).
const STOPPED_CODES = new Set(["session_evicted", "session_replaced", "session_stopped", "session_handed_off"]);

/** A random id (UUID when the browser has crypto.randomUUID, e.g. on http://localhost or https). */
function randomId() {
  if (globalThis.crypto && typeof globalThis.crypto.randomUUID === "function") {
    return globalThis.crypto.randomUUID();
  }
  const bytes = new Uint8Array(16);
  globalThis.crypto.getRandomValues(bytes);
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * The session id of this tab: kept in sessionStorage, so a reload keeps its slot
 * while a second tab (its own sessionStorage) is a second screen.
 */
export function tabSessionId(storageKey = SESSION_STORAGE_KEY) {
  try {
    const stored = globalThis.sessionStorage.getItem(storageKey);
    if (stored) return stored;
    const fresh = randomId();
    globalThis.sessionStorage.setItem(storageKey, fresh);
    return fresh;
  } catch {
    // Storage may be off (privacy settings, sandboxed frames): an id for this page's life.
    return randomId();
  }
}

/**
 * The id of this browser (profile): kept in localStorage, made once, the same in every tab and
 * after a restart. Under a policy with sameDeviceTakeover, a player that restarts on the same
 * device takes its own ghost session's place instead of being refused.
 */
export function browserDeviceId(storageKey = DEVICE_STORAGE_KEY) {
  try {
    const stored = globalThis.localStorage.getItem(storageKey);
    if (stored) return stored;
    const fresh = randomId();
    globalThis.localStorage.setItem(storageKey, fresh);
    return fresh;
  } catch {
    // No localStorage (privacy settings, sandboxed frames): an id for this page's life only.
    return randomId();
  }
}

/** Forget this tab's session id, so the next tabSessionId() is a new one (a new play after a stop). */
export function resetTabSessionId(storageKey = SESSION_STORAGE_KEY) {
  try {
    globalThis.sessionStorage.removeItem(storageKey);
  } catch {
    // Nothing kept, nothing to forget.
  }
}

/** When this tab last sent a stop for its session id (ms since the epoch), or 0. */
function stopSentAt(storageKey) {
  try {
    return Number(globalThis.sessionStorage.getItem(storageKey + STOP_SENT_SUFFIX)) || 0;
  } catch {
    return 0;
  }
}

// --- Timers --------------------------------------------------------------------
//
// Chrome throttles the timers of hidden tabs (to one wake-up a minute once a
// silent tab has been hidden five minutes), which would let the session expire
// while the video plays in a background tab. Timers of a dedicated Worker are
// not throttled that way, so the loop's timer runs in one (one Worker per page,
// shared by every session). docs/background-tabs.md has the measurement.

const WORKER_SOURCE = `
const timers = new Map();
onmessage = (event) => {
  const { op, id, ms } = event.data;
  if (op === "set") {
    timers.set(id, setTimeout(() => { timers.delete(id); postMessage(id); }, ms));
  } else {
    clearTimeout(timers.get(id));
    timers.delete(id);
  }
};`;

class MainThreadTimer {
  constructor() {
    this.kind = "main";
  }
  set(callback, ms) {
    return setTimeout(callback, ms);
  }
  clear(id) {
    clearTimeout(id);
  }
}

class WorkerTimer {
  constructor() {
    this.kind = "worker";
    const url = URL.createObjectURL(new Blob([WORKER_SOURCE], { type: "text/javascript" }));
    this.worker = new Worker(url);
    URL.revokeObjectURL(url);
    // id -> { callback, due, handle }: handle is set once the timer runs on the page instead.
    this.timers = new Map();
    this.nextId = 1;
    this.broken = false;
    this.worker.onmessage = (event) => this.fire(event.data);
    // A Worker that cannot run (a Content-Security-Policy refusing blob: workers
    // may only say so here) must not stop the heartbeats: its timers move to the page.
    this.worker.onerror = () => this.fallBack();
  }
  set(callback, ms) {
    const id = this.nextId++;
    const timer = { callback, due: Date.now() + ms, handle: null };
    this.timers.set(id, timer);
    if (this.broken) timer.handle = setTimeout(() => this.fire(id), ms);
    else this.worker.postMessage({ op: "set", id, ms });
    return id;
  }
  clear(id) {
    const timer = this.timers.get(id);
    if (!timer) return;
    this.timers.delete(id);
    if (timer.handle !== null) clearTimeout(timer.handle);
    else this.worker.postMessage({ op: "clear", id });
  }
  fire(id) {
    const timer = this.timers.get(id);
    this.timers.delete(id);
    if (timer) timer.callback();
  }
  fallBack() {
    if (this.broken) return;
    this.broken = true;
    this.kind = "main";
    this.worker.terminate();
    for (const [id, timer] of this.timers) {
      timer.handle = setTimeout(() => this.fire(id), Math.max(0, timer.due - Date.now()));
    }
  }
}

let sharedWorkerTimer = null;

function makeTimer(kind) {
  if (kind === "main" || typeof Worker === "undefined") return new MainThreadTimer();
  if (sharedWorkerTimer) return sharedWorkerTimer;
  try {
    sharedWorkerTimer = new WorkerTimer();
    return sharedWorkerTimer;
  } catch {
    // A Content-Security-Policy without blob: in worker-src: fall back, throttled in hidden tabs.
    return new MainThreadTimer();
  }
}

// --- Errors ----------------------------------------------------------------------

/** A request to StreamLimit that did not succeed (stopOther, listSessions). */
export class StreamLimitError extends Error {
  constructor(code, message, status = 0, body = null) {
    super(message);
    this.name = "StreamLimitError";
    this.code = code;
    this.status = status;
    this.body = body;
  }
}

// --- The session -----------------------------------------------------------------

/**
 * One player's session: sends the heartbeats, follows the answers, and tells the page
 * through events: allowed, refused, stopped, error (and answer, for every answer).
 */
export class StreamLimitSession extends EventTarget {
  constructor(options = {}) {
    super();
    if (!options.streamId) throw new TypeError("StreamLimitSession: streamId is required");
    if (options.token !== undefined && options.getToken !== undefined) {
      throw new TypeError("StreamLimitSession: give token or getToken, not both");
    }
    this.endpoint = String(options.endpoint ?? new URL(import.meta.url).origin).replace(/\/+$/, "");
    this.userId = options.userId ?? null;
    this.streamId = options.streamId;
    // With no sessionId given, the session uses the tab's id, and retires it when it sends a stop.
    this.storageKey = options.sessionId ? null : (options.sessionStorageKey ?? SESSION_STORAGE_KEY);
    this.sessionId = options.sessionId ?? tabSessionId(this.storageKey);
    this.retired = false;
    this.handoverUntil = 0;
    this.deviceName = options.deviceName ?? null;
    // The policy's inputs. deviceId: the browser's own unless given; null sends none (a token's
    // deviceId claim then decides: a body that contradicts a claim is refused with token_mismatch).
    this.deviceId = options.deviceId === undefined ? browserDeviceId(options.deviceStorageKey) : options.deviceId;
    this.deviceClass = options.deviceClass ?? null;
    this.quality = options.quality ?? null;
    // The session the next first heartbeat takes over (handOff); cleared once admitted.
    this.replaces = null;
    this.replaceToken = null;
    this.token = options.token ?? null;
    this.getToken = options.getToken ?? null;
    this.getAccountToken = options.getAccountToken ?? null;
    this.errorGraceSeconds = options.errorGraceSeconds ?? null;
    this.requestTimeoutMs = 1000 * (options.requestTimeoutSeconds ?? DEFAULT_REQUEST_TIMEOUT_SECONDS);
    this.maxRetryMs = 1000 * (options.maxRetrySeconds ?? DEFAULT_MAX_RETRY_SECONDS);
    this.stopOnPageHide = options.stopOnPageHide ?? true;
    this.random = options.random ?? Math.random;
    this.timer = makeTimer(options.timer ?? "worker");

    /** "idle", "starting", "playing", "refused", "stopped". */
    this.state = "idle";
    /** Seconds between heartbeats, as the last answer said. */
    this.heartbeatInterval = options.heartbeatInterval ?? DEFAULT_INTERVAL_SECONDS;
    /** The body of the last answer (any status), or null. */
    this.lastAnswer = null;
    this.failures = 0;
    this.lastSuccessAt = null;
    this.errorReported = false;
    this.timerId = null;
    this.inFlight = null;
    this.generation = 0;
    this.startedAt = null;
    this.refreshed = false;
    this.onPageHide = (event) => this.pageHidden(event);
    this.onPageShow = (event) => this.pageShown(event);
    this.resumeAfterShow = false;
  }

  /** Start heartbeating now (the first heartbeat asks for a slot). Calling it while running does nothing. */
  start() {
    if (this.state === "starting" || this.state === "playing") return;
    this.state = "starting";
    if (this.retired) {
      // This id's stop is on its way: play on under the tab's new id (see retire()).
      this.retired = false;
      this.sessionId = tabSessionId(this.storageKey);
      if (this.getToken) this.token = null; // a session token names the old id
    }
    this.handoverUntil = this.storageKey === null ? 0 : stopSentAt(this.storageKey) + HANDOVER_MS;
    this.generation += 1;
    this.failures = 0;
    this.errorReported = false;
    this.lastSuccessAt = null;
    this.startedAt = Date.now();
    if (typeof addEventListener === "function") {
      addEventListener("pagehide", this.onPageHide);
      addEventListener("pageshow", this.onPageShow);
    }
    this.beat(this.generation);
  }

  /**
   * "Move playback here": start this session in place of another screen's `sessionId`, in one
   * step, even when the account is full (the other screen is told session_handed_off, with this
   * screen's deviceName). The first heartbeat carries `replaces` with an account token
   * (`options.token`, else getAccountToken(), else the session's own token: a session token may
   * only take over a session of its own deviceId claim). Not while this session plays (stopOther()
   * is for that). Resolves once the hand-off's heartbeat is on its way; the answer comes as events.
   */
  async handOff(sessionId, options = {}) {
    if (!sessionId) throw new TypeError("handOff: sessionId is required");
    if (sessionId === this.sessionId) throw new TypeError("handOff: that is this session's own id");
    if (this.state === "starting" || this.state === "playing") {
      // The service takes `replaces` only from a session's first heartbeat: to end another
      // screen while this one plays, stopOther() is the call.
      throw new Error("handOff: this session is already playing; stopOther() ends another screen");
    }
    this.replaceToken = options.token ?? (this.getAccountToken ? await this.getAccountToken() : null);
    this.replaces = sessionId;
    this.start();
  }

  /** Autoplay moved on: the next heartbeat names the new stream; the slot is kept. */
  changeStream(streamId) {
    if (!streamId) throw new TypeError("changeStream: streamId is required");
    this.streamId = streamId;
  }

  /** The viewer stopped: free the slot now. Resolves when the service has answered (or failed to). */
  async stop() {
    const wasRunning = this.state === "starting" || this.state === "playing";
    this.halt();
    this.removePageListeners();
    if (!wasRunning) return;
    this.state = "stopped";
    const body = this.stopBody(null);
    this.retire();
    this.emit("stopped", { code: "stopped_locally", message: "Playback was stopped on this screen.", local: true });
    try {
      const token = await this.currentToken();
      await this.request("POST", "/heartbeat/stop", body, token, { keepalive: true });
    } catch {
      // The slot frees by itself one session TTL after the last heartbeat.
    }
  }

  /**
   * Stop another screen of the account (the "stop watching on the living-room TV" button).
   * Needs an account token (one without a sid claim): `options.token`, else getAccountToken(),
   * else this session's own token.
   */
  async stopOther(sessionId, options = {}) {
    if (!sessionId) throw new TypeError("stopOther: sessionId is required");
    const token = options.token ?? (await this.accountToken());
    const body = { sessionId };
    if (this.userId) body.userId = this.userId;
    const response = await this.request("POST", "/heartbeat/stop", body, token);
    if (response.status !== 204) throw await this.failure(response);
  }

  /** The account's limit and live sessions (`GET /sessions`; needs a token). */
  async listSessions(options = {}) {
    const token = options.token ?? (await this.accountToken());
    const response = await this.request("GET", "/sessions", null, token);
    if (response.status !== 200) throw await this.failure(response);
    return response.json();
  }

  /** `session.on("allowed", (detail) => ...)`: a listener that receives the event's detail. */
  on(type, listener) {
    const wrapped = (event) => listener(event.detail);
    this.wrappers ??= new Map();
    this.wrappers.set(listener, wrapped);
    this.addEventListener(type, wrapped);
    return this;
  }

  off(type, listener) {
    const wrapped = this.wrappers?.get(listener);
    if (wrapped) this.removeEventListener(type, wrapped);
    return this;
  }

  // --- The loop ------------------------------------------------------------------

  async beat(generation) {
    if (generation !== this.generation) return;
    this.timerId = null;
    let token;
    try {
      token = this.replaces && this.replaceToken ? this.replaceToken : await this.currentToken();
    } catch (error) {
      return this.transientFailure(generation, { code: "token_unavailable", message: String(error) });
    }
    if (generation !== this.generation) return;
    let response;
    try {
      response = await this.request("POST", "/heartbeat", this.heartbeatBody(), token, {}, true);
    } catch (error) {
      if (generation !== this.generation) return;
      const timedOut = error && error.name === "AbortError";
      return this.transientFailure(generation, {
        code: timedOut ? "timeout" : "network_error",
        message: timedOut ? "StreamLimit did not answer in time." : "StreamLimit could not be reached.",
      });
    }
    if (generation !== this.generation) return;
    const body = await response.json().catch(() => null);
    if (generation !== this.generation) return;
    this.lastAnswer = body;
    this.emit("answer", { status: response.status, body, at: new Date().toISOString() });
    if (body && typeof body.heartbeatInterval === "number" && body.heartbeatInterval > 0) {
      this.heartbeatInterval = body.heartbeatInterval;
    }
    if (response.status === 200 && body && body.allowed) return this.allowed(generation, body);
    if (response.status === 401 && body && body.code === "token_expired" && this.getToken && !this.refreshed) {
      // One fresh token, then the same heartbeat again; a second expiry is final.
      this.refreshed = true;
      this.token = null;
      return this.beat(generation);
    }
    if (response.status === 400 && body && body.code === "concurrency_limit_reached" && this.handingOver()) {
      // Most likely the slot this tab's own stop is freeing: ask again shortly (see HANDOVER_MS).
      return this.schedule(generation, HANDOVER_RETRY_MS);
    }
    if (response.status >= 500 || response.status === 429 || response.status === 0) {
      return this.transientFailure(generation, {
        code: (body && body.code) || "http_" + response.status,
        message: (body && body.message) || "StreamLimit had an internal error.",
        correlationId: (body && body.correlationId) || response.headers.get("X-Correlation-ID"),
        status: response.status,
      });
    }
    return this.ended(body, response.status);
  }

  allowed(generation, body) {
    const first = this.state === "starting";
    // The hand-off is done: the next heartbeats are this session's own, with its own token.
    this.replaces = null;
    this.replaceToken = null;
    const recovered = this.errorReported;
    this.state = "playing";
    this.failures = 0;
    this.refreshed = false;
    this.errorReported = false;
    this.lastSuccessAt = Date.now();
    this.emit("allowed", { ...body, first, recovered });
    this.schedule(generation, this.heartbeatInterval * 1000);
  }

  /** 500, network error, time-out: keep playing, retry with backoff, report `error` after the grace. */
  transientFailure(generation, detail) {
    if (generation !== this.generation) return;
    this.failures += 1;
    // A fresh token may help next time (one refresh per attempt, never a loop).
    this.refreshed = false;
    const since = this.lastSuccessAt ?? this.startedAt;
    const graceMs = 1000 * (this.errorGraceSeconds ?? 2 * this.heartbeatInterval);
    if (!this.errorReported && Date.now() - since >= graceMs) {
      this.errorReported = true;
      this.emit("error", { ...detail, failures: this.failures, since: new Date(since).toISOString() });
    }
    this.schedule(generation, this.retryDelayMs());
  }

  /** Still starting, shortly after this tab sent a stop whose slot may not be free yet. */
  handingOver() {
    return this.state === "starting" && Date.now() < this.handoverUntil;
  }

  /**
   * A stop for this session id is being sent: never heartbeat with this id again.
   *
   * A stop may reach the service after the next heartbeat of the same tab: the
   * beacon of a page being reloaded races the reloaded page's first heartbeat
   * (the service runs requests in parallel), and stop() then start() race the
   * same way. Were both for one id, the late stop would end the session that
   * replaced it (it does, for a sessionId given as an option: there the page
   * owns the id). So the tab's id is retired: the tab's next session (the
   * reloaded page, or this object's next start()) plays under a new id, which
   * no stop in flight names. Its slot is the one the stop frees; until the stop
   * lands, a full account refuses it, hence the short hand-over (HANDOVER_MS).
   */
  retire() {
    if (this.storageKey === null) return;
    this.retired = true;
    try {
      globalThis.sessionStorage.setItem(this.storageKey + STOP_SENT_SUFFIX, String(Date.now()));
      if (globalThis.sessionStorage.getItem(this.storageKey) === this.sessionId) resetTabSessionId(this.storageKey);
    } catch {
      // No storage: each page life already has an id of its own.
    }
  }

  /** The wait before retry number `failures`: never shorter than the interval. */
  retryDelayMs() {
    const interval = this.heartbeatInterval * 1000;
    const backoff = Math.min(interval * 2 ** (this.failures - 1), Math.max(this.maxRetryMs, interval));
    return Math.round(backoff * (1 + RETRY_JITTER * this.random()));
  }

  /** Any other answer (400, 401, 403, 404...): playback on this screen ends. */
  ended(body, status) {
    this.halt();
    this.removePageListeners();
    const detail = {
      code: (body && body.code) || "http_" + status,
      message: (body && body.message) || "StreamLimit refused this heartbeat.",
      status,
      body,
    };
    if (body && Array.isArray(body.sessions)) detail.sessions = body.sessions;
    if (body && typeof body.limit === "number") detail.limit = body.limit;
    if (body && typeof body.activeSessions === "number") detail.activeSessions = body.activeSessions;
    // Under a policy: the rule that refused ({name, limit, active}) and the id support finds it by.
    if (body && body.rule && typeof body.rule === "object") detail.rule = body.rule;
    if (body && typeof body.decisionId === "string") detail.decisionId = body.decisionId;
    if (this.replaces) {
      detail.replaces = this.replaces;
      this.replaces = null;
      this.replaceToken = null;
    }
    if (STOPPED_CODES.has(detail.code)) {
      this.state = "stopped";
      this.emit("stopped", { ...detail, local: false });
    } else {
      this.state = "refused";
      this.emit("refused", detail);
    }
  }

  schedule(generation, ms) {
    if (generation !== this.generation) return;
    this.timerId = this.timer.set(() => this.beat(generation), ms);
  }

  halt() {
    this.generation += 1;
    if (this.timerId !== null) this.timer.clear(this.timerId);
    this.timerId = null;
    if (this.inFlight) this.inFlight.abort();
    this.inFlight = null;
  }

  // --- Page life -----------------------------------------------------------------

  pageHidden(event) {
    if (!this.stopOnPageHide || (this.state !== "playing" && this.state !== "starting")) return;
    // sendBeacon survives the page's end, but sets no headers: the token goes in the body.
    const body = JSON.stringify(this.stopBody(this.token));
    this.halt();
    this.retire();
    this.state = "stopped";
    this.resumeAfterShow = Boolean(event && event.persisted);
    if (!(navigator.sendBeacon && navigator.sendBeacon(this.endpoint + "/heartbeat/stop", body))) {
      fetch(this.endpoint + "/heartbeat/stop", {
        method: "POST",
        body,
        keepalive: true,
        headers: { "Content-Type": "text/plain" },
      }).catch(() => {});
    }
    this.emit("stopped", { code: "page_hidden", message: "The page was closed or left.", local: true });
  }

  pageShown(event) {
    // Back from the back/forward cache: the page lives again, so does its session.
    if (event && event.persisted && this.resumeAfterShow) {
      this.resumeAfterShow = false;
      this.start();
    }
  }

  removePageListeners() {
    if (typeof removeEventListener === "function") {
      removeEventListener("pagehide", this.onPageHide);
      removeEventListener("pageshow", this.onPageShow);
    }
  }

  // --- Requests ------------------------------------------------------------------

  heartbeatBody() {
    const body = { streamId: this.streamId, sessionId: this.sessionId };
    if (this.userId) body.userId = this.userId;
    if (this.deviceName) body.deviceName = this.deviceName;
    if (this.deviceClass) body.deviceClass = this.deviceClass;
    if (this.deviceId) body.deviceId = this.deviceId;
    if (this.quality) body.quality = this.quality;
    if (this.replaces) body.replaces = this.replaces;
    return body;
  }

  stopBody(token) {
    const body = { sessionId: this.sessionId };
    if (this.userId) body.userId = this.userId;
    if (token) body.token = token;
    return body;
  }

  async currentToken() {
    if (this.token) return this.token;
    if (!this.getToken) return null;
    this.token = await this.getToken();
    return this.token;
  }

  async accountToken() {
    return this.getAccountToken ? this.getAccountToken() : this.currentToken();
  }

  async request(method, path, body, token, extra = {}, isHeartbeat = false) {
    const controller = new AbortController();
    // Only the heartbeat is aborted by halt(); a stop or stopOther must go through.
    if (isHeartbeat) this.inFlight = controller;
    const abortTimer = setTimeout(() => controller.abort(), this.requestTimeoutMs);
    const headers = {};
    if (body !== null) headers["Content-Type"] = "application/json";
    if (token) headers.Authorization = "Bearer " + token;
    try {
      return await fetch(this.endpoint + path, {
        method,
        headers,
        body: body === null ? undefined : JSON.stringify(body),
        signal: controller.signal,
        cache: "no-store",
        ...extra,
      });
    } finally {
      clearTimeout(abortTimer);
      if (this.inFlight === controller) this.inFlight = null;
    }
  }

  async failure(response) {
    const body = await response.json().catch(() => null);
    return new StreamLimitError(
      (body && body.code) || "http_" + response.status,
      (body && body.message) || "StreamLimit answered " + response.status + ".",
      response.status,
      body,
    );
  }

  emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }
}
