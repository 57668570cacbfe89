// The demo player: StreamLimitSession driving a generated test pattern.
import { StreamLimitSession, resetTabSessionId } from "../streamlimit/player.js";

const root = document.getElementById("demo");
const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const MAX_ANSWERS_SHOWN = 50;

$("account").value = params.get("account") || "demo-account";
$("device").value = params.get("device") || defaultDeviceName();
if (params.get("stream")) $("stream").value = params.get("stream");
if (params.get("deviceClass")) $("device-class").value = params.get("deviceClass");
$("plan").value = params.get("plan") || "";

// Each tab of the demo is a device of its own (a phone, a TV...): its device id is kept in the
// tab's sessionStorage, so a reload keeps it (and, under sameDeviceTakeover, takes its own slot
// back) while another tab is another device. A real player keeps one per browser (the library's
// default, localStorage). ?deviceId=... sets it.
const DEVICE_ID_KEY = "streamlimit-demo.deviceId";
const deviceId = params.get("deviceId") || tabDeviceId();

function tabDeviceId() {
  try {
    const stored = sessionStorage.getItem(DEVICE_ID_KEY);
    if (stored) return stored;
    const fresh = `demo-${crypto.getRandomValues(new Uint32Array(2)).join("")}`;
    sessionStorage.setItem(DEVICE_ID_KEY, fresh);
    return fresh;
  } catch {
    return `demo-${Date.now()}`;
  }
}

let session = null;
let playing = false;
let playedMs = 0;
let lastFrame = null;

function defaultDeviceName() {
  const browser = /Firefox\//.test(navigator.userAgent) ? "Firefox" : /Edg\//.test(navigator.userAgent) ? "Edge" : "Chrome";
  return `${browser} tab ${Math.floor(Math.random() * 900 + 100)}`;
}

// A session token (sid) for this tab's own heartbeats and stop, an account token
// (no sid) for "stop this one": a stop with an account token blocks the stopped
// session for a while, which must not happen to this tab when it reloads.
async function demoToken(sessionId) {
  const asked = { userId: $("account").value.trim() };
  if (sessionId) asked.sessionId = sessionId;
  // The plan's rules of the policy in force decide for this account (a token claim, as a back end would sign).
  if ($("plan").value.trim()) asked.plan = $("plan").value.trim();
  const response = await fetch(root.dataset.tokenUrl, {
    method: "POST",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify(asked),
  });
  const body = await response.json();
  if (!response.ok) throw new Error(body.message || `token endpoint answered ${response.status}`);
  return body.token;
}

function setStatus(state, text, message = "") {
  $("status").dataset.state = state;
  $("status").textContent = text;
  $("message").textContent = message;
}

function logAnswer({ status, body, at }) {
  const item = document.createElement("li");
  item.textContent = `${at.slice(11, 23)}  ${status}  ${JSON.stringify(body)}`;
  $("answers").prepend(item);
  while ($("answers").children.length > MAX_ANSWERS_SHOWN) $("answers").lastElementChild.remove();
}

function showRule(detail) {
  $("rule").hidden = !detail || !detail.rule;
  if (!detail || !detail.rule) return;
  $("rule-name").textContent = detail.rule.name;
  $("rule-count").textContent = `${detail.rule.active} of ${detail.rule.limit}`;
  $("decision-id").textContent = detail.decisionId || "–";
}

function showScreens(sessions) {
  const list = $("screen-list");
  list.replaceChildren();
  $("screens").hidden = !sessions;
  const own = session && session.state === "playing" ? session.sessionId : null;
  for (const other of sessions || []) {
    if (other.sessionId === own) continue;
    const item = document.createElement("li");
    item.dataset.session = other.sessionId;
    const label = document.createElement("span");
    label.className = "screen-label";
    label.textContent = `${other.deviceName || other.sessionId} — ${other.streamId}, since ${other.startedAt.slice(11, 19)} UTC`;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "stop-other";
    button.textContent = "Stop this one";
    button.addEventListener("click", () => stopOther(other.sessionId, button));
    // Move here: this tab plays in that screen's place, in one step (the other is told where it went).
    const move = document.createElement("button");
    move.type = "button";
    move.className = "move-here";
    move.textContent = "Move here";
    move.disabled = Boolean(own);
    move.addEventListener("click", () => moveHere(other.sessionId, move));
    const actions = document.createElement("span");
    actions.className = "screen-actions";
    actions.append(move, button);
    item.append(label, actions);
    list.append(item);
  }
}

async function moveHere(sessionId, button) {
  button.disabled = true;
  try {
    await play(sessionId);
  } catch (error) {
    button.disabled = false;
    $("message").textContent = `Could not move playback here: ${error.message}`;
  }
}

async function listScreens() {
  try {
    const listing = await (session || makeSession()).listSessions();
    showScreens(listing.sessions);
  } catch (error) {
    $("message").textContent = `Could not list the screens: ${error.message}`;
  }
}

async function stopOther(sessionId, button) {
  button.disabled = true;
  try {
    await (session || makeSession()).stopOther(sessionId);
    showScreens(null);
    buttons(true);
    setStatus("starting", "asking for a slot…");
    session.start();
  } catch (error) {
    button.disabled = false;
    $("message").textContent = `Could not stop that screen: ${error.message}`;
  }
}

function buttons(active) {
  $("play").disabled = active;
  $("stop").disabled = !active;
  $("next").disabled = !active;
}

// Stopped from another screen or replaced: that session may not come back for a
// while, so pressing Play again is a new play, with a new session id.
const NEW_PLAY_AFTER = new Set(["session_stopped", "session_replaced", "session_handed_off"]);
let lastStopCode = null;

/** A session of the form's account and device, not started. */
function makeSession() {
  if (session) session.stop();
  if (NEW_PLAY_AFTER.has(lastStopCode)) resetTabSessionId();
  lastStopCode = null;
  const account = $("account").value.trim();
  const device = $("device").value.trim();
  const created = new StreamLimitSession({
    endpoint: location.origin,
    userId: account,
    streamId: $("stream").value,
    deviceName: device || undefined,
    deviceId,
    deviceClass: $("device-class").value || undefined,
    // ?timer=main: the throttled main-thread timer, to compare in a hidden tab (see docs/background-tabs.md).
    timer: params.get("timer") === "main" ? "main" : "worker",
    ...(root.dataset.tokensMode === "hs256"
      ? // The id the session heartbeats with: a new one after a stop (see retire() in player.js).
        { getToken: () => demoToken(created.sessionId), getAccountToken: () => demoToken(null) }
      : {}),
  });
  session = created;
  window.streamlimitDemo = { session };
  $("shown-account").textContent = account;
  $("shown-device").textContent = device || "–";
  $("shown-class").textContent = $("device-class").value || "–";
  $("device-id").textContent = deviceId;
  $("session-id").textContent = session.sessionId;
  session.on("answer", logAnswer);
  session.on("allowed", (detail) => {
    playing = true;
    $("session-id").textContent = created.sessionId;
    showScreens(null);
    showRule(null);
    setStatus("playing", `playing (${detail.activeSessions ?? "?"} of ${detail.limit} screens)`,
      detail.degraded ? "StreamLimit is degraded: playing without a check." : "");
  });
  session.on("refused", (detail) => {
    playing = false;
    setStatus("refused", `refused (${detail.code})`, detail.message);
    showRule(detail);
    showScreens(detail.sessions || null);
    buttons(false);
  });
  session.on("stopped", (detail) => {
    playing = false;
    lastStopCode = detail.code;
    setStatus("stopped", `stopped (${detail.code})`, detail.message);
    buttons(false);
  });
  session.on("error", (detail) => {
    setStatus("error", "playing; StreamLimit unreachable", `${detail.message} Retrying; playback goes on.`);
  });
  return created;
}

/** Play: start a new session, or with `replaces`, hand that screen's playback over to this tab. */
async function play(replaces = null) {
  const created = makeSession();
  buttons(true);
  setStatus("starting", replaces ? "moving playback here…" : "asking for a slot…");
  if (replaces) {
    try {
      await created.handOff(replaces);
    } catch (error) {
      buttons(false);
      throw error;
    }
  } else {
    created.start();
  }
}

$("setup").addEventListener("submit", (event) => {
  event.preventDefault();
  play();
});
$("stop").addEventListener("click", () => session && session.stop());
if ($("list-screens")) $("list-screens").addEventListener("click", listScreens);
$("next").addEventListener("click", () => {
  const select = $("stream");
  select.selectedIndex = (select.selectedIndex + 1) % select.options.length;
  session.changeStream(select.value);
  $("message").textContent = `Autoplay: now ${select.value}; the slot is kept.`;
});

// The "video": colour bars, a moving bar and the play time, drawn while the slot is ours.
const canvas = $("screen");
const ctx = canvas.getContext("2d");
const BARS = ["#c0c0c0", "#c0c000", "#00c0c0", "#00c000", "#c000c0", "#c00000", "#0000c0"];

function draw(now) {
  if (playing && lastFrame !== null) playedMs += now - lastFrame;
  lastFrame = now;
  const { width, height } = canvas;
  const barWidth = width / BARS.length;
  BARS.forEach((color, i) => {
    ctx.fillStyle = color;
    ctx.fillRect(i * barWidth, 0, barWidth + 1, height * 0.7);
  });
  ctx.fillStyle = "#111";
  ctx.fillRect(0, height * 0.7, width, height * 0.3);
  const x = (playedMs / 8) % width;
  ctx.fillStyle = "#fff";
  ctx.fillRect(x, height * 0.7, 6, height * 0.3);
  const seconds = Math.floor(playedMs / 1000);
  const clock = `${String(Math.floor(seconds / 60)).padStart(2, "0")}:${String(seconds % 60).padStart(2, "0")}`;
  ctx.font = "bold 28px ui-monospace, monospace";
  ctx.fillText(`${session ? session.streamId : "–"}  ${clock}`, 20, height * 0.9);
  if (!playing) {
    ctx.fillStyle = "rgba(0, 0, 0, 0.55)";
    ctx.fillRect(0, 0, width, height);
    ctx.fillStyle = "#fff";
    ctx.font = "bold 40px system-ui, sans-serif";
    ctx.fillText($("status").dataset.state === "idle" ? "▶ Play" : $("status").dataset.state.toUpperCase(), 24, 60);
  }
  requestAnimationFrame(draw);
}
requestAnimationFrame(draw);

if (params.get("autoplay") === "1") play();
