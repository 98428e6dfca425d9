// Tests of membership.js under Node's test runner (node --test web/): a
// stand-in WebSocket and a manual clock drive the library deterministically.

import { test } from "node:test";
import assert from "node:assert/strict";

import { MembershipSocket, RequestError, backoffDelay, defaultURL } from "./membership.js";

// Clock runs timers only when told to, in due order.
class Clock {
  now = 0;
  #seq = 0;
  timers = new Map();
  setTimeout = (fn, ms) => {
    const id = ++this.#seq;
    this.timers.set(id, { at: this.now + ms, fn, ms });
    return id;
  };
  clearTimeout = (id) => {
    this.timers.delete(id);
  };
  // advance moves time forward by ms, running each timer that falls due.
  advance(ms) {
    const end = this.now + ms;
    for (;;) {
      let next = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (next === null || t.at < next[1].at || (t.at === next[1].at && id < next[0]))) next = [id, t];
      }
      if (next === null) break;
      this.timers.delete(next[0]);
      this.now = next[1].at;
      next[1].fn();
    }
    this.now = end;
  }
  // pending lists the delays of the timers set and not yet run.
  pending() {
    return [...this.timers.values()].map((t) => t.ms);
  }
}

// FakeGateway hands out FakeSockets and records them.
function fakeGateway() {
  const sockets = [];
  class FakeSocket {
    readyState = 0;
    sent = [];
    closedWith = null;
    constructor(url) {
      this.url = url;
      sockets.push(this);
    }
    send(s) {
      if (this.readyState !== 1) throw new Error("not open");
      this.sent.push(JSON.parse(s));
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 3;
    }
    // What the gateway does:
    accept(socketId) {
      this.readyState = 1;
      this.onopen?.({});
      if (socketId) this.push({ type: "connected", socket_id: socketId });
    }
    push(frame) {
      this.onmessage?.({ data: typeof frame === "string" ? frame : JSON.stringify(frame) });
    }
    drop(code = 1006, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
    refuse() {
      this.readyState = 3;
      this.onerror?.({});
      this.onclose?.({ code: 1006, reason: "" });
    }
  }
  return { FakeSocket, sockets, last: () => sockets[sockets.length - 1] };
}

// setup returns a socket on a fake gateway, a clock and a recorder of events.
function setup(options = {}) {
  const clock = new Clock();
  const gw = fakeGateway();
  let r = 0.5;
  const randoms = [];
  const socket = new MembershipSocket("ws://gw.test/ws", {
    WebSocket: gw.FakeSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    random: () => (randoms.length ? randoms.shift() : r),
    ...options,
  });
  const events = [];
  for (const name of ["connected", "reconnected", "disconnected", "reconnecting", "closed", "joined", "left", "message", "chat"]) {
    socket.on(name, (...args) => events.push([name, ...args]));
  }
  return { socket, clock, gw, events, randoms, setRandom: (v) => (r = v) };
}

// state is "pending", {ok: value} or {err: error}: what p has come to once
// every microtask queued so far has run.
async function state(p) {
  let result = "pending";
  p.then(
    (x) => (result = { ok: x }),
    (e) => (result = { err: e }),
  );
  await new Promise((resolve) => setImmediate(resolve));
  return result;
}

test("backoffDelay: full jitter below a cap that doubles up to the maximum", () => {
  const base = 500;
  const max = 30000;
  for (let attempt = 0; attempt < 80; attempt++) {
    const cap = Math.min(max, base * 2 ** attempt);
    assert.equal(backoffDelay(attempt, base, max, () => 0), 0);
    assert.equal(backoffDelay(attempt, base, max, () => 0.5), Math.floor(cap / 2));
    const top = backoffDelay(attempt, base, max, () => 0.9999999);
    assert.ok(top < cap && top >= cap - 1, `attempt ${attempt}: ${top} against cap ${cap}`);
  }
  assert.equal(backoffDelay(1000, base, max, () => 0.5), 15000, "huge attempt counts stay at the cap");
});

test("connects, exposes the socket id and emits connected once", () => {
  const { socket, gw, events } = setup();
  assert.equal(gw.sockets.length, 1);
  assert.equal(gw.last().url, "ws://gw.test/ws");
  assert.equal(socket.socketId, null);
  assert.equal(socket.connected, false);
  gw.last().accept("gw.1.abc");
  assert.equal(socket.socketId, "gw.1.abc");
  assert.equal(socket.connected, true);
  assert.deepEqual(events, [["connected", { socketId: "gw.1.abc" }]]);
  gw.last().push({ type: "connected", socket_id: "gw.1.other" });
  assert.equal(socket.socketId, "gw.1.abc", "a second connected frame on one connection is ignored");
  assert.equal(events.length, 1);
});

test("joined, left and room messages reach their listeners; rooms follows them", () => {
  const { socket, gw, events } = setup();
  const ws = gw.last();
  ws.accept("s1");
  events.length = 0;
  ws.push({ type: "joined", room: "fun" });
  ws.push({ type: "joined", room: "work" });
  assert.deepEqual(socket.rooms, ["fun", "work"]);
  ws.push({ type: "message", room: "fun", event: "chat", data: { text: "hi" } });
  ws.push({ type: "message", event: "chat", data: [1, 2] }); // a blast has no room
  ws.push({ type: "message", room: "fun", event: "joined", data: "spoof" });
  ws.push({ type: "left", room: "fun" });
  assert.deepEqual(socket.rooms, ["work"]);
  assert.deepEqual(events, [
    ["joined", "fun"],
    ["joined", "work"],
    ["chat", { text: "hi" }, { room: "fun", event: "chat" }],
    ["message", { text: "hi" }, { room: "fun", event: "chat" }],
    ["chat", [1, 2], { room: null, event: "chat" }],
    ["message", [1, 2], { room: null, event: "chat" }],
    // A message named like a lifecycle event goes to "message" listeners only.
    ["message", "spoof", { room: "fun", event: "joined" }],
    ["left", "fun"],
  ]);
});

test("malformed frames and frames before connected are ignored", () => {
  const { socket, gw, events } = setup();
  const ws = gw.last();
  ws.accept();
  ws.push({ type: "joined", room: "early" });
  ws.push("not json");
  ws.push("null");
  ws.push("42");
  ws.push({ type: "connected" });
  ws.push({ type: "connected", socket_id: 7 });
  assert.equal(socket.socketId, null);
  ws.push({ type: "connected", socket_id: "s1" });
  ws.push({ type: "joined", room: 5 });
  ws.push({ type: "message", room: "r", data: 1 }); // no event
  ws.push({ type: "response", id: 99, status: 200 }); // no such request
  ws.push({ type: "surprise" });
  assert.deepEqual(socket.rooms, []);
  assert.deepEqual(events, [["connected", { socketId: "s1" }]]);
});

test("off and the function on returns remove a listener", () => {
  const { socket, gw } = setup();
  const got = [];
  const fn = (room) => got.push(room);
  const unsubscribe = socket.on("joined", fn);
  gw.last().accept("s1");
  gw.last().push({ type: "joined", room: "a" });
  unsubscribe();
  gw.last().push({ type: "joined", room: "b" });
  socket.on("joined", fn);
  socket.off("joined", fn);
  gw.last().push({ type: "joined", room: "c" });
  assert.deepEqual(got, ["a"]);
  assert.throws(() => socket.on("joined"), TypeError);
});

test("reconnects after a drop with a new socket id and reports both ids", () => {
  const { socket, clock, gw, events, setRandom } = setup();
  setRandom(0.5);
  gw.last().accept("old");
  gw.last().push({ type: "joined", room: "fun" });
  events.length = 0;
  gw.last().drop(1001, "gateway shutting down");
  assert.equal(socket.socketId, null);
  assert.deepEqual(socket.rooms, [], "the rooms went with the socket");
  assert.deepEqual(events, [
    ["disconnected", { code: 1001, reason: "gateway shutting down", socketId: "old" }],
    ["reconnecting", { attempt: 1, delay: 250 }],
  ]);
  assert.equal(gw.sockets.length, 1);
  clock.advance(249);
  assert.equal(gw.sockets.length, 1, "not before the backoff delay");
  clock.advance(1);
  assert.equal(gw.sockets.length, 2);
  gw.last().accept("new");
  assert.equal(socket.socketId, "new");
  assert.deepEqual(events.slice(2), [["reconnected", { socketId: "new", previousSocketId: "old" }]]);
});

test("backoff grows while attempts fail, stays under the cap, and resets once a connection is stable", () => {
  const { clock, gw, events } = setup({ backoffBase: 100, backoffMax: 1000, stableAfter: 5000, random: () => 0.999 });
  const delays = () => events.filter((e) => e[0] === "reconnecting").map((e) => e[1].delay);
  gw.last().refuse();
  for (let i = 0; i < 6; i++) {
    clock.advance(delays().at(-1));
    gw.last().refuse();
  }
  assert.deepEqual(delays(), [99, 199, 399, 799, 999, 999, 999]);
  clock.advance(999);
  gw.last().accept("s1");
  // Dropped before it was stable: the next wait keeps growing from where it was.
  clock.advance(4999);
  gw.last().drop(1012, "lease lost");
  assert.equal(delays().at(-1), 999);
  clock.advance(999);
  gw.last().accept("s2");
  clock.advance(5000);
  gw.last().drop(1001, "");
  assert.equal(delays().at(-1), 99, "a connection that lasted stableAfter resets the backoff");
});

test("a policy close (1008) is retried with backoff like any other", () => {
  const { gw, clock, events } = setup({ random: () => 0.5 });
  gw.last().accept("s1");
  gw.last().drop(1008, "too many frames");
  assert.deepEqual(events.at(-1), ["reconnecting", { attempt: 1, delay: 250 }]);
  clock.advance(250);
  assert.equal(gw.sockets.length, 2);
});

test("a close code in 4000-4999 (the API's Disconnect) stops reconnecting and says so", async () => {
  const { socket, clock, gw, events } = setup({ random: () => 0.5 });
  gw.last().accept("s1");
  events.length = 0;
  gw.last().drop(4001, "banned");
  assert.deepEqual(events, [
    ["disconnected", { code: 4001, reason: "banned", socketId: "s1" }],
    ["closed", { code: 4001, reason: "banned" }],
  ]);
  clock.advance(60000);
  assert.equal(gw.sockets.length, 1, "no reconnection");
  await assert.rejects(socket.request("GET", "/x"), (e) => e.code === "CLOSED");
});

test("a connection that never says connected is given up after connectTimeout", () => {
  const { socket, clock, gw, events } = setup({ connectTimeout: 3000, random: () => 0 });
  const first = gw.last();
  first.accept(); // open, but silent
  clock.advance(2999);
  assert.equal(gw.sockets.length, 1);
  clock.advance(1);
  assert.ok(first.closedWith, "the silent connection is closed");
  assert.deepEqual(events, [["reconnecting", { attempt: 1, delay: 0 }]], "no disconnected: it never had an id");
  clock.advance(0);
  assert.equal(gw.sockets.length, 2);
  first.push({ type: "connected", socket_id: "late" });
  assert.equal(socket.socketId, null, "the abandoned connection's frames are ignored");
  gw.last().accept("s2");
  assert.equal(socket.socketId, "s2");
});

test("request resolves with the response of its id, any status", async () => {
  const { socket, gw } = setup();
  const ws = gw.last();
  ws.accept("s1");
  const a = socket.request("POST", "/leaveFunRoom", { roomName: "fun" });
  const b = socket.request("GET", "/x");
  assert.deepEqual(ws.sent, [
    { type: "request", id: 1, method: "POST", path: "/leaveFunRoom", body: { roomName: "fun" } },
    { type: "request", id: 2, method: "GET", path: "/x" },
  ]);
  ws.push({ type: "response", id: 2, status: 501, body: { error: "no upstream" } });
  ws.push({ type: "response", id: 1, status: 200, body: "ok" });
  assert.deepEqual(await b, { status: 501, body: { error: "no upstream" } });
  assert.deepEqual(await a, { status: 200, body: "ok" });
});

test("request rejects on timeout and ignores a late response", async () => {
  const { socket, clock, gw } = setup({ requestTimeout: 1000 });
  const ws = gw.last();
  ws.accept("s1");
  const p = socket.request("POST", "/slow", {});
  const q = socket.request("POST", "/slower", {}, { timeout: 3000 });
  clock.advance(999);
  assert.equal(await state(p), "pending");
  clock.advance(1);
  const r = await state(p);
  assert.ok(r.err instanceof RequestError && r.err.code === "TIMEOUT", String(r.err));
  ws.push({ type: "response", id: 1, status: 200, body: null }); // too late: ignored
  assert.equal(await state(q), "pending", "the other request keeps its own timeout");
  clock.advance(2000);
  assert.equal((await state(q)).err.code, "TIMEOUT");
});

test("requests in flight are rejected when the connection drops; ids stay unique across connections", async () => {
  const { socket, clock, gw } = setup({ random: () => 0 });
  gw.last().accept("s1");
  const p = socket.request("POST", "/a", 1);
  gw.last().drop(1012, "lease lost");
  const r = await state(p);
  assert.ok(r.err instanceof RequestError && r.err.code === "DISCONNECTED", String(r.err));
  clock.advance(0);
  const ws = gw.last();
  ws.accept("s2");
  const q = socket.request("POST", "/b", 2);
  assert.equal(ws.sent[0].id, 2, "a new connection does not reuse request ids");
  ws.push({ type: "response", id: 1, status: 200, body: "stale" });
  assert.equal(await state(q), "pending");
  ws.push({ type: "response", id: 2, status: 200, body: "fresh" });
  assert.deepEqual(await q, { status: 200, body: "fresh" });
});

test("a request made while disconnected waits for the next connection", async () => {
  const { socket, clock, gw } = setup({ random: () => 0, requestTimeout: 5000 });
  const early = socket.request("GET", "/before-connected");
  assert.equal(gw.last().sent.length, 0);
  gw.last().accept("s1");
  assert.deepEqual(gw.last().sent.map((f) => f.path), ["/before-connected"]);
  gw.last().push({ type: "response", id: 1, status: 204, body: null });
  assert.equal((await early).status, 204);

  gw.last().drop(1006, "");
  const during = socket.request("GET", "/while-reconnecting");
  clock.advance(0);
  gw.last().accept("s2");
  assert.deepEqual(gw.last().sent, [{ type: "request", id: 2, method: "GET", path: "/while-reconnecting" }]);

  gw.last().drop(1006, "");
  assert.equal((await state(during)).err.code, "DISCONNECTED", "it was sent: it is not sent again");
  const never = socket.request("GET", "/never");
  for (let t = 0; t < 5000; t += 100) {
    clock.advance(100);
    if (gw.last().readyState === 0) gw.last().refuse(); // every attempt fails meanwhile
  }
  assert.equal((await state(never)).err.code, "TIMEOUT");
  assert.ok(gw.sockets.length > 3, "it kept trying meanwhile");
  assert.ok(gw.sockets.every((ws) => !ws.sent.some((f) => f.path === "/never")));
});

test("request refuses bad input without sending anything", async () => {
  const { socket, gw } = setup();
  gw.last().accept("s1");
  await assert.rejects(socket.request("POST", "relative"), TypeError);
  await assert.rejects(socket.request("", "/x"), TypeError);
  await assert.rejects(socket.request("GET", 42), TypeError);
  await assert.rejects(socket.request("GET", "/x", undefined, { timeout: -1 }), RangeError);
  const cyclic = {};
  cyclic.self = cyclic;
  await assert.rejects(socket.request("POST", "/x", cyclic), TypeError);
  await assert.rejects(socket.request("POST", "/x", 10n), TypeError);
  await assert.rejects(socket.request("POST", "/x", "x".repeat(2 << 20)), (e) => e.code === "TOO_LARGE");
  assert.deepEqual(gw.last().sent, []);
});

test("close stops reconnecting, rejects pending requests and ignores later frames", async () => {
  const { socket, clock, gw, events } = setup();
  const ws = gw.last();
  ws.accept("s1");
  const p = socket.request("POST", "/x");
  events.length = 0;
  socket.close();
  assert.deepEqual(ws.closedWith, { code: 1000, reason: "client closed" });
  assert.equal((await state(p)).err.code, "CLOSED");
  assert.equal(socket.socketId, null);
  ws.push({ type: "joined", room: "fun" });
  ws.push({ type: "message", room: "fun", event: "chat", data: 1 });
  ws.drop(1000, "");
  clock.advance(10 * 60 * 1000);
  assert.equal(gw.sockets.length, 1, "no reconnection after close()");
  assert.deepEqual(events, []);
  assert.deepEqual(clock.pending(), [], "no timer left behind");
  assert.equal((await state(socket.request("GET", "/y"))).err.code, "CLOSED");
  socket.close(); // twice is harmless
});

test("close while waiting to retry cancels the retry", () => {
  const { socket, clock, gw } = setup();
  gw.last().refuse();
  assert.equal(clock.pending().length, 1);
  socket.close();
  clock.advance(60000);
  assert.equal(gw.sockets.length, 1);
});

test("a throwing listener does not stop the others or the socket", () => {
  const reported = [];
  const { socket, gw } = setup({ onListenerError: (err) => reported.push(err.message) });
  const seen = [];
  socket.on("joined", () => {
    throw new Error("listener bug");
  });
  socket.on("joined", (room) => seen.push(room));
  gw.last().accept("s1");
  gw.last().push({ type: "joined", room: "fun" });
  assert.deepEqual(seen, ["fun"]);
  assert.deepEqual(socket.rooms, ["fun"]);
  assert.deepEqual(reported, ["listener bug"], "the error is still reported");
});

test("the URL: default from the page's location, bad ones refused", () => {
  assert.equal(defaultURL({ protocol: "http:", host: "127.0.0.1:8080" }), "ws://127.0.0.1:8080/ws");
  assert.equal(defaultURL({ protocol: "https:", host: "chat.example" }), "wss://chat.example/ws");
  assert.throws(() => defaultURL(undefined), TypeError);
  const { FakeSocket } = fakeGateway();
  assert.throws(() => new MembershipSocket("http://gw.test/ws", { WebSocket: FakeSocket }), TypeError);
  assert.throws(() => new MembershipSocket("not a url", { WebSocket: FakeSocket }), TypeError);
  assert.throws(() => new MembershipSocket("ws://gw.test/ws", { WebSocket: FakeSocket, backoffBase: 0 }), RangeError);
  assert.throws(() => new MembershipSocket("ws://gw.test/ws", { WebSocket: FakeSocket, backoffMax: NaN }), RangeError);
  // Node 20 has no WebSocket: the library says so rather than failing later.
  if (typeof globalThis.WebSocket !== "function") {
    assert.throws(() => new MembershipSocket("ws://gw.test/ws"), /no WebSocket/);
  }
});

test("close from a disconnected listener stops the reconnection it would have made", () => {
  const { socket, clock, gw } = setup();
  socket.on("disconnected", () => socket.close());
  gw.last().accept("s1");
  gw.last().drop(1001, "");
  clock.advance(60000);
  assert.equal(gw.sockets.length, 1);
  assert.deepEqual(clock.pending(), []);
});

test("a token is sent as ?token= and the connected frame's user is exposed", () => {
  const { socket, gw } = setup({ token: "a.b c" });
  assert.equal(gw.last().url, "ws://gw.test/ws?token=a.b+c");
  gw.last().push({ type: "connected", socket_id: "gw.1.abc", user: "alice" });
  assert.equal(socket.user, "alice");
  gw.last().drop(1012);
  assert.equal(socket.user, null, "no user between connections");
});

// runNext runs the earliest timer, then lets promises settle (a token
// function's answer arrives in a microtask, not on the manual clock).
async function runNext(clock) {
  const at = Math.min(...[...clock.timers.values()].map((t) => t.at));
  clock.advance(at - clock.now);
  await new Promise((resolve) => setImmediate(resolve));
}

test("a token function is asked again before every attempt, and its failure is retried with backoff", async () => {
  const tokens = ["t1", new Error("token service down"), "t3"];
  let calls = 0;
  const { socket, gw, events, clock } = setup({
    token: async () => {
      const t = tokens[calls++];
      if (t instanceof Error) throw t;
      return t;
    },
  });
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(gw.sockets.length, 1);
  assert.equal(gw.last().url, "ws://gw.test/ws?token=t1");
  gw.last().accept("gw.1.a");
  gw.last().drop(1001);
  await runNext(clock); // the retry: the token function fails, so no socket
  assert.equal(calls, 2);
  assert.equal(gw.sockets.length, 1);
  assert.ok(events.filter((e) => e[0] === "reconnecting").length === 2, "another retry is scheduled");
  await runNext(clock);
  assert.equal(calls, 3);
  assert.equal(gw.last().url, "ws://gw.test/ws?token=t3");
  gw.last().accept("gw.1.b");
  assert.deepEqual(events.at(-1), ["reconnected", { socketId: "gw.1.b", previousSocketId: "gw.1.a" }]);
  socket.close();
});

test("close while a token function is pending opens nothing", async () => {
  let release;
  const { socket, gw } = setup({ token: () => new Promise((resolve) => (release = resolve)) });
  socket.close();
  release("late");
  await new Promise((resolve) => setImmediate(resolve));
  assert.equal(gw.sockets.length, 0);
});

test("a token that is neither a string nor a function is refused", () => {
  assert.throws(() => setup({ token: 42 }), TypeError);
});

test("a token function that never answers is given up after connectTimeout and asked again", async () => {
  let calls = 0;
  const { socket, gw, clock } = setup({
    connectTimeout: 1000,
    token: () => {
      calls++;
      return calls === 1 ? new Promise(() => {}) : Promise.resolve("t2");
    },
  });
  assert.deepEqual(clock.pending(), [1000], "only the token timeout is set");
  await runNext(clock); // the token timeout: a retry is scheduled
  await runNext(clock); // the retry asks again, and gets one
  assert.equal(calls, 2);
  assert.equal(gw.sockets.length, 1);
  assert.equal(gw.last().url, "ws://gw.test/ws?token=t2");
  socket.close();
});

// nextAttempt advances the clock to the next connection attempt.
function nextAttempt(clock, gw) {
  const n = gw.sockets.length;
  while (gw.sockets.length === n) clock.advance(1);
}

test("a reconnection resumes the socket: same id, its rooms, missed messages once, then resumed", () => {
  const { socket, clock, gw, events } = setup();
  socket.on("resumed", (...args) => events.push(["resumed", ...args]));
  gw.last().accept();
  gw.last().push({ type: "connected", socket_id: "gw.1.a", resume_token: "tok1" });
  gw.last().push({ type: "joined", room: "fun" });
  gw.last().push({ type: "message", seq: 1, room: "fun", event: "chat", data: 1 });
  gw.last().push({ type: "message", seq: 2, room: "fun", event: "chat", data: 2 });
  gw.last().drop(1006);
  events.length = 0;
  nextAttempt(clock, gw);
  const u = new URL(gw.last().url);
  assert.equal(u.searchParams.get("resume_token"), "tok1");
  assert.equal(u.searchParams.get("last_seq"), "2");
  gw.last().accept();
  gw.last().push({ type: "connected", socket_id: "gw.1.a", resumed: true, rooms: ["fun", "b"], resume_token: "tok2" });
  gw.last().push({ type: "message", seq: 2, room: "fun", event: "chat", data: 2 }); // already had it
  gw.last().push({ type: "message", seq: 3, room: "b", event: "chat", data: 3 });
  assert.equal(socket.socketId, "gw.1.a");
  assert.deepEqual(socket.rooms, ["fun", "b"]);
  assert.deepEqual(
    events.filter(([n]) => n === "resumed" || n === "chat" || n === "reconnected"),
    [
      ["resumed", { socketId: "gw.1.a", rooms: ["fun", "b"] }],
      ["chat", 3, { room: "b", event: "chat" }],
    ],
  );
  gw.last().drop(1006);
  nextAttempt(clock, gw);
  const u2 = new URL(gw.last().url);
  assert.equal(u2.searchParams.get("resume_token"), "tok2", "a resumed socket has a new token");
  assert.equal(u2.searchParams.get("last_seq"), "3");
});

test("a refused resume is a new socket: reconnected with the reason, seq counted afresh", () => {
  const { socket, clock, gw, events } = setup();
  gw.last().accept();
  gw.last().push({ type: "connected", socket_id: "gw.1.a", resume_token: "tok1" });
  gw.last().push({ type: "message", seq: 5, event: "chat", data: 5 });
  gw.last().drop(1006);
  events.length = 0;
  nextAttempt(clock, gw);
  gw.last().accept();
  gw.last().push({ type: "connected", socket_id: "gw.1.b", resumed: false, resume_error: "EXPIRED", resume_token: "tok9" });
  gw.last().push({ type: "message", seq: 1, event: "chat", data: "new" });
  assert.deepEqual(events.filter(([n]) => n === "reconnected" || n === "chat"), [
    ["reconnected", { socketId: "gw.1.b", previousSocketId: "gw.1.a", resumeError: "EXPIRED" }],
    ["chat", "new", { room: null, event: "chat" }],
  ]);
  assert.equal(socket.socketId, "gw.1.b");
  socket.close();
  assert.equal(gw.last().closedWith.code, 1000);
});

test("a gateway without resume tokens is reconnected to as before", () => {
  const { clock, gw } = setup();
  gw.last().accept("gw.1.a");
  gw.last().drop(1006);
  nextAttempt(clock, gw);
  assert.equal(gw.last().url, "ws://gw.test/ws");
});

test("a 1012 close (gateway restarting) resumes the socket with its token, like any dropped connection", () => {
  const { socket, clock, gw, events } = setup();
  socket.on("resumed", (...args) => events.push(["resumed", ...args]));
  gw.last().accept();
  gw.last().push({ type: "connected", socket_id: "gw1.1.a", resume_token: "tok1" });
  gw.last().push({ type: "joined", room: "fun" });
  gw.last().push({ type: "message", seq: 1, room: "fun", event: "chat", data: 1 });
  gw.last().drop(1012, "gateway restarting");
  events.length = 0;
  nextAttempt(clock, gw);
  const u = new URL(gw.last().url);
  assert.equal(u.searchParams.get("resume_token"), "tok1", "the token is kept across a 1012");
  assert.equal(u.searchParams.get("last_seq"), "1");
  // The Service sends the reconnection to another gateway, which resumes it.
  gw.last().accept();
  gw.last().push({ type: "connected", socket_id: "gw1.1.a", resumed: true, rooms: ["fun"], resume_token: "tok2" });
  gw.last().push({ type: "message", seq: 2, room: "fun", event: "chat", data: 2 });
  assert.equal(socket.socketId, "gw1.1.a");
  assert.deepEqual(
    events.filter(([n]) => n === "resumed" || n === "chat" || n === "reconnected"),
    [
      ["resumed", { socketId: "gw1.1.a", rooms: ["fun"] }],
      ["chat", 2, { room: "fun", event: "chat" }],
    ],
  );
});
