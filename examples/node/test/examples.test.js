// The two examples against real binaries: internal/e2e's TestNodeExamples
// starts etcd, a membership-server (with a token) and a gateway whose
// --upstream-url is http://APP_ADDR, and runs this with MEMBERSHIP_GRPC_URL,
// MEMBERSHIP_TOKEN, GATEWAY_WS_URL and APP_ADDR in the environment.
import assert from "node:assert/strict";
import { once } from "node:events";
import { after, before, test } from "node:test";
import sailsIOClient from "sails.io.js";
import socketIOClient from "socket.io-client";
import WebSocket from "ws";
import { createApp } from "../app.js";
import { banUser } from "../banUser.js";
import { createSails } from "../sails.js";

function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run through internal/e2e's TestNodeExamples`);
  return v;
}

// A native WebSocket client of the gateway: frames in arrival order.
async function connect() {
  const ws = new WebSocket(env("GATEWAY_WS_URL"));
  const s = { ws, frames: [], waiters: [], id: "" };
  ws.on("message", (b) => {
    s.frames.push(JSON.parse(b.toString()));
    for (const w of s.waiters.splice(0)) w();
  });
  s.next = async (match, timeoutMs = 5000) => {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = s.frames.findIndex(match);
      if (i >= 0) return s.frames.splice(i, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`socket ${s.id}: no matching frame; got ${JSON.stringify(s.frames)}`);
      await new Promise((resolve) => {
        const t = setTimeout(resolve, left);
        s.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  };
  s.expect = (type, room, timeoutMs) => s.next((f) => f.type === type && (room === undefined || f.room === room), timeoutMs);
  let nextId = 1;
  s.request = async (method, path, body) => {
    const id = nextId++;
    ws.send(JSON.stringify({ type: "request", id, method, path, body }));
    return s.next((f) => f.type === "response" && f.id === id);
  };
  s.id = (await s.expect("connected")).socket_id;
  sockets.push(s);
  return s;
}

const sockets = [];
const logged = { info: [], warn: [] };
const log = {
  info: (...args) => logged.info.push(args),
  warn: (...args) => logged.warn.push(args),
};
let sails;
let server;

before(async () => {
  sails = createSails(
    { address: env("MEMBERSHIP_GRPC_URL"), token: env("MEMBERSHIP_TOKEN"), waitFor: "apply", timeoutMs: 10000 },
    log,
  );
  const [host, port] = env("APP_ADDR").split(":");
  server = createApp(sails).listen(Number(port), host);
  await once(server, "listening");
});

after(() => {
  for (const s of sockets) s.ws.close();
  server?.close();
});

test("leaveFunRoom: a socket's request makes that socket leave the room", async () => {
  const a = await connect();
  const b = await connect();
  for (const s of [a, b]) {
    await sails.sockets.join(s.id, "fun");
    await s.expect("joined", "fun");
  }
  await sails.sockets.broadcast("fun", "party", { n: 1 });
  await a.next((f) => f.type === "message" && f.event === "party");

  const res = await a.request("POST", "/leaveFunRoom", { roomName: "fun" });
  assert.equal(res.status, 200, JSON.stringify(res));
  assert.deepEqual(res.body, { message: "Left a fun room called fun!" });
  await a.expect("left", "fun");

  // Delivery follows every completed leave: b gets this one, a never does.
  const br = await sails.sockets.broadcast("fun", "party", { n: 2 });
  assert.equal(br.delivered, 1n);
  await b.next((f) => f.type === "message" && f.event === "party" && f.data.n === 2);
  await assert.rejects(a.next((f) => f.type === "message" && f.data?.n === 2, 300), /no matching frame/);

  const missing = await a.request("POST", "/leaveFunRoom", {});
  assert.equal(missing.status, 400);
  assert.deepEqual(missing.body, { error: "`roomName` is required." });
  const invalid = await a.request("POST", "/leaveFunRoom", { roomName: "" });
  assert.equal(invalid.status, 500);
  assert.equal(invalid.body.code, "INVALID_ARGUMENT");
});

test("leaveFunRoom from sails.io.js: io.socket.post through the gateway's Socket.IO", async () => {
  const io = sailsIOClient(socketIOClient);
  io.sails.autoConnect = false;
  io.sails.environment = "production";
  io.sails.reconnection = false;
  io.sails.url = env("GATEWAY_WS_URL").replace(/^ws/, "http").replace(/\/ws$/, "");
  const socket = io.sails.connect();
  try {
    await new Promise((resolve) => socket.on("connect", resolve));
    const id = socket._raw.id; // protocol 4: the Engine.IO sid is the socket id
    const parties = [];
    socket.on("party", (data) => parties.push(data));
    const left = new Promise((resolve) => socket.on("membership:left", resolve));
    await sails.sockets.join(id, "sails-fun");
    await sails.sockets.broadcast("sails-fun", "party", { n: 1 });
    for (let i = 0; i < 50 && parties.length === 0; i++) await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(parties, [{ n: 1 }]);

    const [body, jwr] = await new Promise((resolve) =>
      socket.post("/leaveFunRoom", { roomName: "sails-fun" }, (body, jwr) => resolve([body, jwr])),
    );
    assert.equal(jwr.statusCode, 200, JSON.stringify(body));
    assert.deepEqual(body, { message: "Left a fun room called sails-fun!" });
    await left;
    const br = await sails.sockets.broadcast("sails-fun", "party", { n: 2 });
    assert.equal(br.delivered, 0n);
  } finally {
    socket.disconnect();
  }
});

test("leaveFunRoom: a request that did not come from a socket is refused", async () => {
  const res = await fetch(`http://${env("APP_ADDR")}/leaveFunRoom`, {
    method: "POST",
    headers: { "content-type": "application/json" },
    body: JSON.stringify({ roomName: "fun" }),
  });
  assert.equal(res.status, 400);
  assert.deepEqual(await res.json(), { error: "This endpoints only supports socket requests." });
});

test("banUser: every socket of the user leaves privateAdminRoom; an unknown one is logged and skipped", async () => {
  const tab1 = await connect();
  const tab2 = await connect();
  const other = await connect();
  for (const s of [tab1, tab2, other]) {
    await sails.sockets.join(s.id, "privateAdminRoom");
    await s.expect("joined", "privateAdminRoom");
  }
  // The user's second tab closed without the app noticing: its id is gone.
  const gone = tab1.id.replace(/\.[^.]*$/, "." + "A".repeat(22));
  const users = new Map([[7, { id: 7, banned: false, connectedSocketIds: [tab1.id, gone, tab2.id] }]]);
  const User = {
    findOne: ({ id }) => ({ exec: (cb) => cb(null, users.get(id)) }),
    update: ({ id }, values) => ({ exec: (cb) => (Object.assign(users.get(id), values), cb(null)) }),
  };
  const ban = banUser(sails, User);

  await new Promise((resolve, reject) => ban({ userId: 7 }, (err) => (err ? reject(err) : resolve())));
  assert.equal(users.get(7).banned, true);
  await tab1.expect("left", "privateAdminRoom");
  await tab2.expect("left", "privateAdminRoom");
  assert.equal(logged.warn.length, 1, JSON.stringify(logged.warn));
  assert.match(logged.warn[0][0], new RegExp("Could not unsubscribe socket `" + gone.replace(/\./g, "\\.") + "`"));
  assert.equal(logged.warn[0][1].code, "NOT_FOUND");
  assert.equal(logged.warn[0][1].reason, "SOCKET_NOT_FOUND");
  assert.equal(logged.info.length, 1);

  const br = await sails.sockets.broadcast("privateAdminRoom", "secret", {});
  assert.equal(br.delivered, 1n);
  await other.next((f) => f.event === "secret");

  const noUser = await new Promise((resolve) => ban({ userId: 8 }, resolve));
  assert.match(noUser.message, /no such user/);
  const noId = await new Promise((resolve) => ban({}, resolve));
  assert.match(noId.message, /`userId` is required/);
});
