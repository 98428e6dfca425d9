// membership.js: the browser client of a socketrooms gateway.
//
// A plain ES module with no dependencies and no build step:
//
//   import { MembershipSocket } from "/membership.js";
//   const socket = new MembershipSocket();           // ws(s)://<this host>/ws
//   socket.on("connected", ({ socketId }) => …);     // the first connection
//   socket.on("reconnected", ({ socketId, previousSocketId }) => …); // re-join rooms here
//   socket.on("resumed", ({ socketId, rooms }) => …);  // the same socket: nothing lost
//   socket.on("joined", (room) => …);
//   socket.on("chat", (data, { room, event }) => …); // room messages by event name
//   const { status, body } = await socket.request("POST", "/leaveFunRoom", { roomName: "fun" });
//
// The gateway speaks JSON text frames (see the project README, "Client
// protocol"). When the gateway makes sockets resumable (--resume-window), a
// reconnection first asks to resume the socket with the connected frame's
// resume_token and the seq of the last message received: on success the
// socket keeps its id and rooms, the messages missed meanwhile arrive in
// order before live ones, and "resumed" is emitted. Otherwise (the window
// passed, the gateway was lost, too much was missed, or the gateway does not
// resume sockets) the socket is new, in no room, and the app's back end must
// join it again, which is why "reconnected" carries both ids (and
// resumeError, the gateway's reason, when a resume was refused). A message
// whose seq was already received is not emitted twice.
//
// Every closed connection is retried, whatever its close code (1001 gateway
// shutting down, 1012 gateway restarting or lost its lease: the resume goes
// to another gateway, 1013 too slow, 1008 too many frames, 1006
// unreachable), with exponential backoff and full jitter: attempt n waits a
// random time in [0, min(backoffMax, backoffBase * 2^n)). The attempt count
// goes back to 0 once a connection has stayed up for stableAfter ms, so a
// gateway that accepts sockets and drops them at once is not hammered. Only
// close() stops reconnecting, and a close code in 4000-4999, which the
// membership API's Disconnect sends: the socket then emits "closed" ({code,
// reason}) after "disconnected" and rejects the requests waiting to be sent
// with CLOSED (those already sent get DISCONNECTED, as on any close).

// Lifecycle event names. A room message whose event is one of them reaches
// only "message" listeners, so that a broadcast cannot pose as a lifecycle
// event.
const RESERVED = new Set(["connected", "reconnected", "resumed", "disconnected", "reconnecting", "closed", "joined", "left", "message"]);

const OPEN = 1; // WebSocket.OPEN, also when the constructor is a stand-in

/** RequestError rejects request(): code is "TIMEOUT", "DISCONNECTED", "CLOSED" or "TOO_LARGE". */
export class RequestError extends Error {
  constructor(code, message) {
    super(message);
    this.name = "RequestError";
    this.code = code;
  }
}

/**
 * backoffDelay is the wait before reconnection attempt `attempt` (0-based):
 * full jitter, uniformly random in [0, min(max, base * 2^attempt)).
 */
export function backoffDelay(attempt, base, max, random) {
  // The exponent is capped so that 2^attempt stays a finite number.
  const cap = Math.min(max, base * 2 ** Math.min(attempt, 52));
  return Math.floor(random() * cap);
}

/** defaultURL is ws(s)://<host of the page>/ws. */
export function defaultURL(location = globalThis.location) {
  if (!location || !location.host) {
    throw new TypeError("membership.js: no page location to derive the gateway URL from; pass a URL");
  }
  return (location.protocol === "https:" ? "wss://" : "ws://") + location.host + "/ws";
}

function positive(options, name, fallback) {
  const v = options[name] ?? fallback;
  if (typeof v !== "number" || !(v > 0) || !Number.isFinite(v)) {
    throw new RangeError(`membership.js: ${name} must be a positive number of ms, got ${v}`);
  }
  return v;
}

export class MembershipSocket {
  #url;
  #WebSocket;
  #setTimeout;
  #clearTimeout;
  #random;
  #backoffBase;
  #backoffMax;
  #stableAfter;
  #connectTimeout;
  #requestTimeout;
  #maxFrameBytes;
  #onListenerError;
  #token; // undefined, a string, or a function returning one (or a Promise of one)

  #ws = null; // the connection being opened or open; null between attempts
  #socketId = null; // set while the current connection has said "connected"
  #user = null; // the user the gateway authenticated the current connection as
  #lastSocketId = null; // the previous connection's id, for "reconnected"
  #resumeToken = null; // the socket's resume token, while it may be resumed
  #lastSeq = 0; // the seq of the last message received on the socket
  #everConnected = false;
  #closed = false;
  #attempt = 0;
  #retryTimer = null;
  #stableTimer = null;
  #connectTimer = null;
  #rooms = new Set();
  #listeners = new Map();
  #nextRequestId = 1; // never reused, so ids are unique on every connection
  #pending = new Map(); // request id -> request sent on the current connection
  #waiting = []; // requests made while not connected, sent on the next "connected"

  /**
   * @param {string} [url] ws:// or wss:// URL of the gateway's /ws; default: this page's host.
   * @param {object} [options]
   * @param {number} [options.backoffBase=500] ms; the first retry waits up to this long
   * @param {number} [options.backoffMax=30000] ms; no retry waits longer
   * @param {number} [options.stableAfter=5000] ms a connection must last to reset the backoff
   * @param {number} [options.connectTimeout=10000] ms from opening to the "connected" frame
   * @param {number} [options.requestTimeout=10000] ms a request() may take, unless it says otherwise
   * @param {number} [options.maxFrameBytes=1048576] the gateway's frame limit (a larger frame would close the socket)
   * @param {string|Function} [options.token] a JWT for gateways that check them, sent as ?token=;
   *   a function (which may return a Promise) is called before every connection attempt,
   *   so each reconnection can present a fresh token
   * @param {Function} [options.WebSocket] the WebSocket constructor (tests pass a stand-in)
   * @param {Function} [options.setTimeout] timers and randomness, injectable for tests
   * @param {Function} [options.clearTimeout]
   * @param {Function} [options.random]
   * @param {Function} [options.onListenerError] gets what a listener threw; default: rethrown
   *   in a microtask, so it reaches the console without stopping the other listeners
   */
  constructor(url, options = {}) {
    this.#url = url ?? defaultURL();
    let parsed;
    try {
      parsed = new URL(this.#url);
    } catch {
      throw new TypeError(`membership.js: bad gateway URL ${JSON.stringify(String(this.#url))}`);
    }
    if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
      throw new TypeError(`membership.js: gateway URL must be ws:// or wss://, got ${parsed.protocol}`);
    }
    this.#WebSocket = options.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== "function") {
      throw new TypeError("membership.js: no WebSocket here; pass options.WebSocket");
    }
    this.#setTimeout = options.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.#clearTimeout = options.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.#random = options.random ?? Math.random;
    this.#onListenerError =
      options.onListenerError ??
      ((err) =>
        queueMicrotask(() => {
          throw err;
        }));
    this.#backoffBase = positive(options, "backoffBase", 500);
    this.#backoffMax = positive(options, "backoffMax", 30000);
    this.#stableAfter = positive(options, "stableAfter", 5000);
    this.#connectTimeout = positive(options, "connectTimeout", 10000);
    this.#requestTimeout = positive(options, "requestTimeout", 10000);
    this.#maxFrameBytes = positive(options, "maxFrameBytes", 1 << 20);
    this.#token = options.token;
    if (this.#token !== undefined && typeof this.#token !== "string" && typeof this.#token !== "function") {
      throw new TypeError("membership.js: token must be a string or a function returning one");
    }
    this.#open();
  }

  /** The current connection's socket id; null while (re)connecting or after close(). */
  get socketId() {
    return this.#socketId;
  }

  /** The user the gateway authenticated this connection as (the token's subject); null without one. */
  get user() {
    return this.#user;
  }

  /** Whether a connection is up and has its socket id. */
  get connected() {
    return this.#socketId !== null;
  }

  /** The rooms the current socket is in, as the gateway reported them (joined/left). */
  get rooms() {
    return [...this.#rooms];
  }

  /**
   * on adds a listener and returns a function that removes it. Events:
   * "connected" ({socketId}) once, for the first connection;
   * "reconnected" ({socketId, previousSocketId, resumeError}) for every later one
   *   that is a new socket (resumeError: why a resume was refused, or undefined);
   * "resumed" ({socketId, rooms}) when a reconnection resumed the same socket;
   * "disconnected" ({code, reason, socketId}) when a connection that had an id ends;
   * "reconnecting" ({attempt, delay}) when a retry is scheduled;
   * "joined" (room), "left" (room);
   * any other name: room messages with that event, (data, {room, event});
   * "message": every room message and blast, (data, {room, event}); room is null for a blast.
   */
  on(event, fn) {
    if (typeof event !== "string" || typeof fn !== "function") {
      throw new TypeError("membership.js: on(event: string, fn: function)");
    }
    let set = this.#listeners.get(event);
    if (!set) {
      set = new Set();
      this.#listeners.set(event, set);
    }
    set.add(fn);
    return () => this.off(event, fn);
  }

  off(event, fn) {
    this.#listeners.get(event)?.delete(fn);
  }

  /**
   * request sends a socket request, which the gateway forwards to its upstream
   * app with the X-Socket-Id header, and resolves to {status, body} for every
   * answer, whatever its status (501: the gateway has no upstream). It rejects
   * with a RequestError when no answer comes within the timeout, when the
   * connection it was sent on drops first (the app may or may not have acted
   * on it, so it is not resent), or on close(). Made while reconnecting, it
   * waits for the next connection within the same timeout.
   */
  request(method, path, body, { timeout } = {}) {
    if (this.#closed) {
      return Promise.reject(new RequestError("CLOSED", "membership.js: socket closed"));
    }
    if (typeof method !== "string" || method === "") {
      return Promise.reject(new TypeError("membership.js: request method must be a string such as \"POST\""));
    }
    if (typeof path !== "string" || !path.startsWith("/")) {
      return Promise.reject(new TypeError("membership.js: request path must start with /"));
    }
    let ms;
    try {
      ms = positive({ timeout }, "timeout", this.#requestTimeout);
    } catch (err) {
      return Promise.reject(err);
    }
    let bodyJSON;
    try {
      bodyJSON = body === undefined ? undefined : JSON.stringify(body);
    } catch (err) {
      return Promise.reject(err); // a cycle or a BigInt: not JSON
    }
    return new Promise((resolve, reject) => {
      const req = { method, path, bodyJSON, resolve, reject, id: null, timer: null };
      req.timer = this.#setTimeout(() => {
        this.#forget(req);
        reject(new RequestError("TIMEOUT", `membership.js: no response to ${method} ${path} within ${ms} ms`));
      }, ms);
      if (this.connected) {
        this.#send(req);
      } else {
        this.#waiting.push(req);
      }
    });
  }

  /** close ends the connection and stops reconnecting; pending requests are rejected. */
  close() {
    if (this.#closed) return;
    this.#closed = true;
    this.#clearTimers();
    this.#clear("retry");
    const ws = this.#ws;
    this.#ws = null;
    this.#socketId = null;
    this.#user = null;
    this.#rooms.clear();
    this.#resumeToken = null; // a close frame ends the socket on the gateway
    if (ws) {
      try {
        ws.close(1000, "client closed");
      } catch {
        // Already closing: nothing to do.
      }
    }
    const err = () => new RequestError("CLOSED", "membership.js: socket closed");
    this.#rejectAll(err);
  }

  #open() {
    this.#retryTimer = null;
    if (typeof this.#token === "function") {
      // A token function may fetch a fresh token; a failure is retried with
      // backoff like a failed connection.
      let got;
      try {
        got = Promise.resolve(this.#token());
      } catch {
        this.#scheduleRetry();
        return;
      }
      // A token that does not come within connectTimeout counts as a failed
      // attempt; whatever it settles to later is ignored.
      let settled = false;
      const timer = this.#setTimeout(() => {
        settled = true;
        this.#scheduleRetry();
      }, this.#connectTimeout);
      got.then(
        (tok) => {
          if (settled) return;
          settled = true;
          this.#clearTimeout(timer);
          if (!this.#closed) this.#dial(this.#withToken(tok));
        },
        () => {
          if (settled) return;
          settled = true;
          this.#clearTimeout(timer);
          this.#scheduleRetry();
        },
      );
      return;
    }
    this.#dial(this.#withToken(this.#token));
  }

  // withToken is the gateway URL carrying tok as its token parameter.
  // It also asks to resume the previous socket when there is one.
  #withToken(tok) {
    const hasTok = !(tok === undefined || tok === null || tok === "");
    if (!hasTok && this.#resumeToken === null) return this.#url;
    const u = new URL(this.#url);
    if (hasTok) u.searchParams.set("token", String(tok));
    if (this.#resumeToken !== null) {
      u.searchParams.set("resume_token", this.#resumeToken);
      u.searchParams.set("last_seq", String(this.#lastSeq));
    }
    return u.toString();
  }

  #dial(url) {
    let ws;
    try {
      ws = new this.#WebSocket(url);
    } catch {
      // The URL was checked up front; anything thrown here is transient.
      this.#scheduleRetry();
      return;
    }
    this.#ws = ws;
    this.#connectTimer = this.#setTimeout(() => {
      this.#connectTimer = null;
      if (this.#ws !== ws) return;
      try {
        ws.close();
      } catch {
        // Closing a socket still connecting can throw in old browsers.
      }
      this.#dropped(ws, 1006, "no connected frame in time");
    }, this.#connectTimeout);
    // Handlers check that their connection is still the current one: a
    // connection given up on (close(), connect timeout) may still deliver.
    ws.onmessage = (ev) => {
      if (this.#ws === ws) this.#frame(ev.data);
    };
    ws.onclose = (ev) => {
      if (this.#ws === ws) this.#dropped(ws, ev.code ?? 1006, ev.reason ?? "");
    };
    ws.onerror = () => {}; // a close event always follows
  }

  #frame(data) {
    let f;
    try {
      f = JSON.parse(data);
    } catch {
      return; // not a frame of the protocol
    }
    if (f === null || typeof f !== "object") return;
    if (f.type === "connected") {
      if (typeof f.socket_id === "string" && f.socket_id !== "" && this.#socketId === null) {
        this.#user = typeof f.user === "string" && f.user !== "" ? f.user : null;
        this.#onConnected(f);
      }
      return;
    }
    if (this.#socketId === null) return; // the gateway sends "connected" first
    switch (f.type) {
      case "joined":
        if (typeof f.room === "string") {
          this.#rooms.add(f.room);
          this.#emit("joined", f.room);
        }
        break;
      case "left":
        if (typeof f.room === "string") {
          this.#rooms.delete(f.room);
          this.#emit("left", f.room);
        }
        break;
      case "message": {
        if (typeof f.event !== "string") return;
        if (typeof f.seq === "number") {
          if (f.seq <= this.#lastSeq) return; // replayed, and received before
          this.#lastSeq = f.seq;
        }
        const meta = { room: typeof f.room === "string" ? f.room : null, event: f.event };
        if (!RESERVED.has(f.event)) this.#emit(f.event, f.data, meta);
        this.#emit("message", f.data, meta);
        break;
      }
      case "response": {
        const req = this.#pending.get(f.id);
        if (!req) return; // timed out already, or not ours
        this.#pending.delete(f.id);
        this.#clearTimeout(req.timer);
        req.resolve({ status: f.status, body: f.body });
        break;
      }
    }
  }

  #onConnected(f) {
    const socketId = f.socket_id;
    this.#clear("connect");
    this.#socketId = socketId;
    this.#rooms.clear();
    const resumed = f.resumed === true && socketId === this.#lastSocketId;
    if (!resumed) this.#lastSeq = 0; // a new socket counts from 1
    this.#resumeToken = typeof f.resume_token === "string" && f.resume_token !== "" ? f.resume_token : null;
    this.#stableTimer = this.#setTimeout(() => {
      this.#stableTimer = null;
      this.#attempt = 0;
    }, this.#stableAfter);
    if (resumed) {
      for (const room of Array.isArray(f.rooms) ? f.rooms : []) {
        if (typeof room === "string") this.#rooms.add(room);
      }
      this.#emit("resumed", { socketId, rooms: [...this.#rooms] });
    } else if (this.#everConnected) {
      const ev = { socketId, previousSocketId: this.#lastSocketId };
      if (typeof f.resume_error === "string") ev.resumeError = f.resume_error;
      this.#emit("reconnected", ev);
    } else {
      this.#everConnected = true;
      this.#emit("connected", { socketId });
    }
    // A listener may have closed the socket, or it may have dropped.
    const waiting = this.#waiting;
    this.#waiting = [];
    for (const req of waiting) {
      if (this.connected) this.#send(req);
      else this.#waiting.push(req);
    }
  }

  #send(req) {
    const id = this.#nextRequestId++;
    let frame = `{"type":"request","id":${id},"method":${JSON.stringify(req.method)},"path":${JSON.stringify(req.path)}`;
    if (req.bodyJSON !== undefined) frame += `,"body":${req.bodyJSON}`;
    frame += "}";
    if (new TextEncoder().encode(frame).length > this.#maxFrameBytes) {
      this.#clearTimeout(req.timer);
      req.reject(new RequestError("TOO_LARGE", `membership.js: request frame over ${this.#maxFrameBytes} bytes`));
      return;
    }
    if (this.#ws?.readyState !== OPEN) {
      this.#waiting.push(req); // the close event has not arrived yet
      return;
    }
    req.id = id;
    this.#pending.set(id, req);
    try {
      this.#ws.send(frame);
    } catch {
      // The connection is failing; its close event rejects the request.
    }
  }

  #forget(req) {
    if (req.id !== null) this.#pending.delete(req.id);
    const i = this.#waiting.indexOf(req);
    if (i >= 0) this.#waiting.splice(i, 1);
  }

  #dropped(ws, code, reason) {
    this.#ws = null;
    this.#clearTimers();
    const socketId = this.#socketId;
    if (socketId !== null) {
      this.#lastSocketId = socketId;
      this.#socketId = null;
      this.#user = null;
      this.#rooms.clear();
    }
    // Requests sent on the lost connection may or may not have reached the
    // app; only the ones still waiting to be sent survive.
    const sent = [...this.#pending.values()];
    this.#pending.clear();
    for (const req of sent) {
      this.#clearTimeout(req.timer);
      req.reject(new RequestError("DISCONNECTED", `membership.js: connection closed (${code}) before the response to ${req.method} ${req.path}`));
    }
    if (socketId !== null) this.#emit("disconnected", { code, reason, socketId });
    if (code >= 4000 && code <= 4999 && !this.#closed) {
      // The back end closed this socket on purpose (the API's Disconnect):
      // coming back would undo it. Stop, as close() does, and say why.
      this.#closed = true;
      this.#resumeToken = null;
      this.#rejectAll(() => new RequestError("CLOSED", `membership.js: disconnected by the server (${code})`));
      this.#emit("closed", { code, reason });
      return;
    }
    this.#scheduleRetry(); // not after close(), which a listener may have called
  }

  #scheduleRetry() {
    if (this.#closed || this.#retryTimer !== null) return;
    const attempt = this.#attempt++;
    const delay = backoffDelay(attempt, this.#backoffBase, this.#backoffMax, this.#random);
    this.#retryTimer = this.#setTimeout(() => this.#open(), delay);
    this.#emit("reconnecting", { attempt: attempt + 1, delay });
  }

  #rejectAll(makeErr) {
    const reqs = [...this.#pending.values(), ...this.#waiting];
    this.#pending.clear();
    this.#waiting = [];
    for (const req of reqs) {
      this.#clearTimeout(req.timer);
      req.reject(makeErr());
    }
  }

  #clear(which) {
    if (which === "connect" && this.#connectTimer !== null) {
      this.#clearTimeout(this.#connectTimer);
      this.#connectTimer = null;
    } else if (which === "stable" && this.#stableTimer !== null) {
      this.#clearTimeout(this.#stableTimer);
      this.#stableTimer = null;
    } else if (which === "retry" && this.#retryTimer !== null) {
      this.#clearTimeout(this.#retryTimer);
      this.#retryTimer = null;
    }
  }

  #clearTimers() {
    this.#clear("connect");
    this.#clear("stable");
  }

  #emit(event, ...args) {
    const set = this.#listeners.get(event);
    if (!set) return;
    for (const fn of [...set]) {
      try {
        fn(...args);
      } catch (err) {
        // One failing listener must not keep the others (or the socket's own
        // bookkeeping) from running; the error still surfaces.
        this.#onListenerError(err);
      }
    }
  }
}

/** connect is new MembershipSocket(url, options). */
export function connect(url, options) {
  return new MembershipSocket(url, options);
}
