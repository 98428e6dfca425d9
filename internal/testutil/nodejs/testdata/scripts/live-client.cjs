// A real client against a running gateway, driven line by line.
//
//   node live-client.cjs v5-websocket|v5-polling|sails|sails-polling <origin>
//
// stdout: one JSON object per line: {"ev":"connect","id":socket.id} once
// connected, {"ev":<event>,"args":[…]} for every event the socket receives,
// {"ev":"connect_error","message":…}, {"ev":"disconnect","reason":…}, and
// for sails {"ev":"cb","seq":n,"body":…,"status":…} per answered request.
// stdin: one JSON command per line: {"cmd":"post","seq":n,"url":…,"data":…}
// (sails: io.socket.<method>), {"cmd":"emit","seq":n,"event":…,"data":…}
// (socket.emit with an ack), {"cmd":"close"}.
"use strict";
const readline = require("readline");

// Logs of the libraries go to stderr: stdout carries only the result.
const out = (o) => process.stdout.write(JSON.stringify(o) + "\n");
console.log = console.info = console.warn = (...a) => process.stderr.write(a.join(" ") + "\n");

const [mode, origin] = process.argv.slice(2);
let socket;
if (mode === "v5-websocket" || mode === "v5-polling") {
  const { io } = require("socket.io-client");
  const opts = { reconnection: false };
  if (mode === "v5-websocket") opts.transports = ["websocket"];
  if (process.env.SIO_TOKEN) opts.auth = { token: process.env.SIO_TOKEN };
  socket = io(origin, opts);
  socket.on("connect", () => out({ ev: "connect", id: socket.id, transport: socket.io.engine.transport.name }));
  socket.io.engine.on("upgrade", (t) => out({ ev: "upgrade", transport: t.name }));
  socket.on("connect_error", (err) => out({ ev: "connect_error", message: err.message }));
  socket.on("disconnect", (reason) => out({ ev: "disconnect", reason }));
  socket.onAny((ev, ...args) => out({ ev, args }));
} else if (mode === "sails" || mode === "sails-polling") {
  const io = require("sails.io.js")(require("socket.io-client-v2"));
  io.sails.autoConnect = false;
  io.sails.environment = "production";
  io.sails.reconnection = false;
  io.sails.url = origin;
  // sails.io.js's default is WebSocket alone; sails-polling starts with
  // polling and upgrades, as socket.io-client 2 does by default.
  if (mode === "sails-polling") io.sails.transports = ["polling", "websocket"];
  if (process.env.SIO_TOKEN) io.sails.query = "token=" + process.env.SIO_TOKEN;
  socket = io.sails.connect();
  socket.on("connect", () => out({ ev: "connect", id: socket._raw.id }));
  socket._raw.io.on("open", () => socket._raw.io.engine.on("upgrade", (t) => out({ ev: "upgrade", transport: t.name })));
  socket.on("disconnect", () => out({ ev: "disconnect" }));
  // socket.io-client 2: a refused handshake is the manager's connect_error,
  // a refused namespace connection the socket's error.
  socket.on("connect_error", (e) => out({ ev: "connect_error", message: String(e && e.message || e) }));
  socket.on("error", (e) => out({ ev: "connect_error", message: String(e) }));
  for (const ev of ["chat", "membership:joined", "membership:left"]) {
    socket.on(ev, (...args) => out({ ev, args }));
  }
} else {
  throw new Error("argument: v5-websocket, v5-polling, sails or sails-polling");
}

readline.createInterface({ input: process.stdin }).on("line", (line) => {
  const c = JSON.parse(line);
  if (c.cmd === "close") {
    (socket._raw || socket).disconnect();
    setTimeout(() => process.exit(0), 100);
  } else if (c.cmd === "emit") {
    socket.emit(c.event, c.data, (res) => out({ ev: "ack", seq: c.seq, res }));
  } else {
    socket[c.cmd](c.url, c.data, (body, jwr) => out({ ev: "cb", seq: c.seq, body, status: jwr.statusCode }));
  }
});
process.stdin.on("end", () => process.exit(0));
