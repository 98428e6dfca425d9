// The console page: sign-in, the cluster's gateways and rates, rooms and
// their members, a socket's detail, the live feed and the actions. Every
// value from the API is placed with textContent; the token lives in the
// Client object only (never a URL, storage or cookie).

import { Client, RpcError } from "./rpc.js";
import { MembershipWatch } from "./watch.js";

const $ = (id) => document.getElementById(id);
const ROOMS_PAGE = 50;
const SEARCH_PAGES = 20; // a search reads at most this many pages of 1000 rooms
const FEED_MAX = 200;
const RATE_WINDOW_S = 5;

let client = null;
let timers = [];
let stats = null;
let feed = null;
let gatewaysTimer = null;

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = String(text);
  if (cls) e.className = cls;
  return e;
}

function describe(e) {
  return e instanceof RpcError ? e.describe() : String(e?.message ?? e);
}

function setError(id, e) { $(id).textContent = e ? describe(e) : ""; }

function duration(ms) {
  let s = Math.max(0, Math.floor(ms / 1000));
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60); s -= m * 60;
  if (d) return `${d}d ${h}h`;
  if (h) return `${h}h ${m}m`;
  if (m) return `${m}m ${s}s`;
  return `${s}s`;
}

// ---- sign-in ----

$("signin-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const token = $("token").value.trim();
  $("token").value = "";
  setError("signin-error", null);
  $("signin-button").disabled = true;
  const c = new Client("", token);
  try {
    await c.call("ListGateways", { pageSize: 1 });
  } catch (e) {
    $("signin-error").textContent = `Sign-in failed: ${describe(e)}`;
    return;
  } finally {
    $("signin-button").disabled = false;
  }
  client = c;
  $("signin").hidden = true;
  $("app").hidden = false;
  $("cluster-bar").hidden = false;
  start();
});

$("sign-out").addEventListener("click", () => {
  stats?.stop(); feed?.stop();
  stats = feed = null;
  for (const t of timers) clearInterval(t);
  timers = [];
  client = null; // the token goes with it
  $("app").hidden = true;
  $("cluster-bar").hidden = true;
  $("signin").hidden = false;
  $("feed").replaceChildren();
});

function start() {
  refreshGateways();
  timers.push(setInterval(refreshGateways, 2000));
  loadRooms("");
  timers.push(setInterval(() => { if (!rooms.query) loadRooms(rooms.token); }, 3000));
  startStats();
  startFeed({});
}

// ---- cluster: gateways, revision, rates ----

async function refreshGateways() {
  const c = client;
  if (!c) return;
  try {
    const gws = [];
    let pageToken = "";
    do {
      const r = await c.call("ListGateways", { pageSize: 1000, pageToken });
      gws.push(...(r.gateways ?? []));
      pageToken = r.nextPageToken ?? "";
    } while (pageToken && gws.length < 10000);
    if (c !== client) return;
    const now = Date.now();
    $("gateways").tBodies[0].replaceChildren(...gws.map((g) => {
      const tr = el("tr");
      tr.dataset.gateway = g.id;
      const ttl = Number(g.leaseTtlSeconds ?? 0);
      tr.append(el("td", g.id), el("td", g.grpcAddr ?? ""), el("td", g.socketCount ?? "0", "num"),
        el("td", ttl < 0 ? "expired" : `${ttl}s of ${g.leaseGrantedTtlSeconds ?? 0}s`, "num"),
        el("td", g.startedAt ? duration(now - Date.parse(g.startedAt)) : "—", "num"),
        el("td", g.version ?? ""));
      return tr;
    }));
    $("gateways-count").textContent = `(${gws.length})`;
    setError("gateways-error", null);
  } catch (e) {
    setError("gateways-error", e);
  }
}

function startStats() {
  const joins = [], leaves = []; // event times, ms
  stats = new MembershipWatch(client, {}, {
    onEvents(events) {
      const now = Date.now();
      for (const e of events) {
        if (e.type === "EVENT_TYPE_JOINED") joins.push(now);
        else if (e.type === "EVENT_TYPE_LEFT") leaves.push(now);
      }
    },
    onRevision(rev) { $("revision").textContent = rev; },
    onState(text, err) { $("stats-state").textContent = text === "live" ? "" : (err ? `stream: ${describe(err)}` : text); },
  });
  timers.push(setInterval(() => {
    const since = Date.now() - RATE_WINDOW_S * 1000;
    for (const a of [joins, leaves]) while (a.length && a[0] < since) a.shift();
    $("rate-joins").textContent = (joins.length / RATE_WINDOW_S).toFixed(1);
    $("rate-leaves").textContent = (leaves.length / RATE_WINDOW_S).toFixed(1);
  }, 1000));
}

// ---- rooms ----

const rooms = { token: "", next: "", query: "" };

function renderRooms(list) {
  $("rooms").tBodies[0].replaceChildren(...list.map((r) => {
    const tr = el("tr");
    const name = el("button", r.name, "link");
    name.type = "button";
    name.addEventListener("click", () => loadMembers(r.name, ""));
    const td = el("td");
    td.append(name);
    tr.append(td, el("td", r.memberCount ?? "0", "num"), el("td", r.userCount ?? "0", "num"));
    return tr;
  }));
}

async function loadRooms(token) {
  const c = client;
  if (!c) return;
  try {
    const r = await c.call("ListRooms", { pageSize: ROOMS_PAGE, pageToken: token });
    if (c !== client || rooms.query) return;
    rooms.token = token;
    rooms.next = r.nextPageToken ?? "";
    renderRooms(r.rooms ?? []);
    $("rooms-next").disabled = !rooms.next;
    $("rooms-info").textContent = `revision ${r.revision ?? "0"}${token ? "" : ", first page"}`;
    setError("rooms-error", null);
  } catch (e) {
    setError("rooms-error", e);
  }
}

$("rooms-first").addEventListener("click", () => { rooms.query = ""; $("room-search").value = ""; loadRooms(""); });
$("rooms-next").addEventListener("click", () => { if (rooms.next) loadRooms(rooms.next); });

// Searching reads the listing a page of 1000 rooms at a time (there is no
// server-side search) and keeps the names that contain the text.
$("room-search-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const q = $("room-search").value;
  rooms.query = q;
  if (!q) { loadRooms(""); return; }
  const found = [];
  let pageToken = "", pages = 0;
  try {
    do {
      const r = await client.call("ListRooms", { pageSize: 1000, pageToken });
      for (const room of r.rooms ?? []) if (room.name.includes(q)) found.push(room);
      pageToken = r.nextPageToken ?? "";
    } while (pageToken && ++pages < SEARCH_PAGES && found.length < ROOMS_PAGE);
    if (rooms.query !== q) return;
    renderRooms(found.slice(0, ROOMS_PAGE));
    $("rooms-next").disabled = true;
    $("rooms-info").textContent = `${found.length} found${pageToken ? " (more rooms not searched)" : ""}`;
    setError("rooms-error", null);
  } catch (e) {
    setError("rooms-error", e);
  }
});

// ---- a room's members, a socket ----

let membersRoom = "", membersNext = "";

async function loadMembers(room, token) {
  try {
    const r = await client.call("ListMembers", { room, pageSize: 100, pageToken: token });
    membersRoom = room;
    membersNext = r.nextPageToken ?? "";
    $("members-room").textContent = room;
    const items = (r.members ?? []).map((m) => {
      const li = el("li");
      const b = el("button", m.socketId, "link");
      b.type = "button";
      b.addEventListener("click", () => loadSocket(m.socketId));
      li.append(b, el("span", ` ${m.user ? `user ${m.user}, ` : ""}on ${m.gateway}${m.detachedSince ? ", detached" : ""}`, "muted"));
      return li;
    });
    if (token) $("members").append(...items);
    else $("members").replaceChildren(...items);
    $("members-next").hidden = !membersNext;
    setError("members-error", null);
  } catch (e) {
    setError("members-error", e);
  }
}
$("members-next").addEventListener("click", () => loadMembers(membersRoom, membersNext));

let shownSocket = "";

async function loadSocket(id) {
  $("socket-input").value = id;
  try {
    const r = await client.call("GetSocket", { socketId: id });
    const s = r.socket ?? {};
    shownSocket = s.socketId ?? id;
    $("socket-id").textContent = shownSocket;
    $("socket-gateway").textContent = s.gateway ?? "";
    $("socket-user").textContent = s.user || "—";
    $("socket-connected").textContent = s.connectedAt ? new Date(s.connectedAt).toLocaleString() : "—";
    $("socket-detached").textContent = s.detachedSince ? new Date(s.detachedSince).toLocaleString() : "—";
    $("socket-rooms").replaceChildren(...(s.rooms ?? []).map((room) => el("li", room)));
    $("socket-disconnect").disabled = false;
    setError("socket-error", null);
  } catch (e) {
    shownSocket = "";
    for (const f of ["socket-id", "socket-gateway", "socket-user", "socket-connected", "socket-detached"]) $(f).textContent = "—";
    $("socket-rooms").replaceChildren();
    $("socket-disconnect").disabled = true;
    setError("socket-error", e);
  }
}
$("socket-form").addEventListener("submit", (ev) => { ev.preventDefault(); loadSocket($("socket-input").value.trim()); });
$("socket-disconnect").addEventListener("click", () => {
  if (shownSocket) disconnect({ socketIds: [shownSocket] }, `socket ${shownSocket}`, "");
});

// ---- live feed ----

const SHORT = { EVENT_TYPE_CONNECTED: "CONNECTED", EVENT_TYPE_DISCONNECTED: "DISCONNECTED",
  EVENT_TYPE_JOINED: "JOINED", EVENT_TYPE_LEFT: "LEFT" };

function startFeed(filter) {
  feed?.stop();
  $("feed").replaceChildren();
  feed = new MembershipWatch(client, filter, {
    onEvents(events, rev) {
      const list = $("feed");
      for (const e of events) {
        const type = SHORT[e.type] ?? e.type;
        const parts = [`r${rev}`, type];
        if (e.room) parts.push(`room ${e.room}`);
        parts.push(`socket ${e.socketId}`);
        if (e.user) parts.push(`user ${e.user}`);
        if (e.gateway) parts.push(`on ${e.gateway}`);
        const li = el("li", parts.join(" "), type);
        list.prepend(li);
      }
      while (list.children.length > FEED_MAX) list.lastElementChild.remove();
    },
    onState(text, err) {
      const what = [filter.room && `room ${filter.room}`, filter.user && `user ${filter.user}`].filter(Boolean).join(", ");
      $("feed-state").textContent = `${what ? `${what}: ` : "all events: "}${err && text === "stopped" ? describe(err) : text}`;
    },
  });
}

$("feed-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const f = {};
  const room = $("feed-room").value, user = $("feed-user").value;
  if (room) f.room = room;
  if (user) f.user = user;
  startFeed(f);
});

// ---- actions ----

function confirmAction(text) {
  const d = $("confirm");
  $("confirm-text").textContent = text;
  return new Promise((resolve) => {
    d.addEventListener("close", () => resolve(d.returnValue === "ok"), { once: true });
    d.returnValue = "";
    d.showModal();
  });
}

async function act(what, fn) {
  $("action-result").textContent = "";
  setError("action-error", null);
  if (!(await confirmAction(what))) return;
  try {
    $("action-result").textContent = await fn();
  } catch (e) {
    $("action-error").textContent = describe(e);
  }
}

$("broadcast-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const room = $("broadcast-room").value, event = $("broadcast-event").value;
  let data;
  try {
    data = JSON.parse($("broadcast-data").value || "null");
  } catch (e) {
    $("action-error").textContent = `data is not JSON: ${e.message}`;
    return;
  }
  act(`Broadcast event "${event || "message"}" to room "${room}"?`, async () => {
    const r = await client.call("Broadcast", { rooms: [room], event, data });
    return `Broadcast delivered to ${r.delivered ?? 0} socket(s) at revision ${r.revision ?? 0}` +
      (r.failedGateways ? `; ${r.failedGateways} gateway(s) unreachable` : "");
  });
});

$("leave-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const room = $("leave-room").value, kind = $("leave-kind").value, who = $("leave-who").value.trim();
  act(`Make ${kind === "user" ? "user" : "socket"} "${who}" leave room "${room}"?`, async () => {
    const r = await client.call("Leave", { room, [kind]: who });
    return `${r.wasMember ? "Left" : "Was not a member of"} room ${room} at revision ${r.revision ?? 0}`;
  });
});

function disconnect(selector, what, reason) {
  act(`Disconnect ${what}? Its clients are closed with code 4000${reason ? ` and reason "${reason}"` : ""}.`, async () => {
    const r = await client.call("Disconnect", { ...selector, code: 4000, reason });
    if (shownSocket && selector.socketIds?.includes(shownSocket)) loadSocket(shownSocket); // now gone
    return `Disconnected ${r.disconnected ?? 0} socket(s) at revision ${r.revision ?? 0}`;
  });
}

$("disconnect-form").addEventListener("submit", (ev) => {
  ev.preventDefault();
  const kind = $("disconnect-kind").value, who = $("disconnect-who").value.trim(), reason = $("disconnect-reason").value;
  const selector = kind === "socket" ? { socketIds: [who] } : { [kind]: who };
  disconnect(selector, `${kind === "room" ? "every member of room" : kind} "${who}"`, reason);
});
