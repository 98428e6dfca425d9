// Drives the real client Socket classes (and sails.io.js on top of
// socket.io-client 2) without a server: a stand-in for the client's Manager
// encodes what the Socket sends with the client's own parser and records
// it, and feeds it server packets (Socket.IO packet text, decoded by the
// client's own parser). Everything above the Manager is the released code.
//
//   node offline-clients.cjs v5|sails   stdin: {server packets}   stdout: {what the app saw}
//
// The scenario is fixed (see each function); the server packets come from
// the caller, so the caller's encoder is what the clients read.
"use strict";
const path = require("path");
const parsers = require("./parsers.cjs");

// Logs of the libraries go to stderr: stdout carries only the result.
console.log = console.info = console.warn = (...a) => process.stderr.write(a.join(" ") + "\n");

function emitterOf(p) {
  return require(require.resolve(p.parser.protocol === 5 ? "@socket.io/component-emitter" : "component-emitter", { paths: [path.dirname(p.client)] }));
}

// fakeManager stands in for socket.io-client's Manager: an open connection
// whose engine writes into sent.
function fakeManager(p, sent) {
  const E = emitterOf(p);
  const Emitter = E.Emitter || E;
  const m = new Emitter();
  const encoder = new p.parser.Encoder();
  const record = (parts) => parts.forEach((x) => sent.push(typeof x === "string" ? x : "<binary>"));
  Object.assign(m, {
    // protocol 5 Manager
    _autoConnect: true, _readyState: "open", _reconnecting: false,
    _packet(packet) { record(encoder.encode(packet)); },
    _destroy() {},
    // protocol 4 Manager
    autoConnect: true, readyState: "open", reconnecting: false,
    packet(packet) { encoder.encode(packet, record); },
    destroy() {},
    open() {},
    engine: { transport: new Emitter(), id: "engine-session-id", _hasPingExpired: () => false },
    feed(str) {
      const dec = new p.parser.Decoder();
      dec.on("decoded", (pkt) => (m.emitReserved ? m.emitReserved("packet", pkt) : m.emit("packet", pkt)));
      dec.add(str);
    },
  });
  return m;
}

// v5: socket.io-client 4.8 with auth {token}, against packets:
//   in.connect (answer to CONNECT), in.chat, in.joined, in.left (events),
//   in.typingAck (answer to ack 0), in.postAck (answer to ack 1),
//   in.adminError (answer to a CONNECT to /admin).
function v5(input) {
  const p = parsers.v5;
  const { Socket } = require(path.join(path.dirname(p.client), "socket.js"));
  const out = { sent: [], seen: [] };
  const m = fakeManager(p, out.sent);
  const socket = new Socket(m, "/", { auth: { token: "jwt-1" } });
  socket.on("connect", () => out.seen.push(["connect", socket.id, socket.connected]));
  socket.on("connect_error", (err) => out.seen.push(["connect_error", err.message, err.data ?? null]));
  for (const ev of ["chat", "membership:joined", "membership:left"]) {
    socket.on(ev, (...args) => out.seen.push([ev, ...args]));
  }
  m.feed(input.connect);
  m.feed(input.chat);
  m.feed(input.joined);
  m.feed(input.left);
  socket.emit("typing", { on: true }, (res) => out.seen.push(["typing ack", res]));
  m.feed(input.typingAck);
  socket.emit("post", { url: "/leaveFunRoom", data: { roomName: "fun" } }, (res) => out.seen.push(["post ack", res]));
  m.feed(input.postAck);

  const m2 = fakeManager(p, out.sent);
  const admin = new Socket(m2, "/admin", {});
  admin.on("connect_error", (err) => out.seen.push(["admin connect_error", err.message]));
  m2.feed(input.adminError);
  return out;
}

// sails: sails.io.js 1.2.1 over socket.io-client 2.5 (protocol 4), against:
//   in.connect (sent on the server's own after the handshake), in.chat,
//   in.ok (answer to ack 0: the post), in.bad (answer to ack 1: a second post).
function sails(input) {
  const p = parsers.v4;
  const Socket = require(path.join(path.dirname(p.client), "socket.js"));
  const out = { sent: [], seen: [] };
  let m;
  const fakeIo = function (url, opts) {
    out.query = opts.query;
    m = fakeManager(p, out.sent);
    return new Socket(m, "/", opts);
  };
  const io = require("sails.io.js")(fakeIo);
  io.sails.autoConnect = false;
  io.sails.environment = "production";
  io.sails.url = "http://127.0.0.1:1";
  io.sails.headers = { "x-app": "a" };
  const socket = io.sails.connect();
  socket.on("connect", () => out.seen.push(["connect", socket.isConnected()]));
  socket.on("chat", (data) => out.seen.push(["chat", data]));
  socket.post("/leaveFunRoom", { roomName: "fun" }, (body, jwr) =>
    out.seen.push(["post cb", body, { statusCode: jwr.statusCode, headers: jwr.headers, error: jwr.error ? jwr.error.message : null }]));
  socket.post("/leaveFunRoom", {}, (body, jwr) =>
    out.seen.push(["post cb", body, { statusCode: jwr.statusCode, headers: jwr.headers, error: jwr.error ? jwr.error.message : null }]));
  m.feed(input.connect); // the queued requests go out on connect
  m.feed(input.chat);
  m.feed(input.ok);
  m.feed(input.bad);
  return out;
}

const scenario = { v5, sails }[process.argv[2]];
if (!scenario) throw new Error("argument: v5 or sails");
const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
process.stdout.write(JSON.stringify(scenario(input)));
