// Shared by the case scripts: opens a real engine.io-client of the protocol
// asked for and turns its events into awaitable steps.
//
// Usage of every script: node <case>.mjs <base-url> <3|4>
// The server under test (engineio_node_test.go) is mounted at /socket.io/
// and echoes "echo:<m>" for each message <m>, sends "welcome" on open, and
// closes the session when it receives "close-me".
import { createRequire } from "node:module";
import { Socket as Socket4 } from "eio4";

const require = createRequire(import.meta.url);
const eio3 = require("eio3");

export function open(url, proto, transports) {
  const opts = { path: "/socket.io/", transports, upgrade: transports.length > 1 };
  const socket = proto === "3" ? eio3(url, opts) : new Socket4(url, opts);
  const inbox = [];
  const waiters = [];
  socket.on("message", (m) => {
    inbox.push(m);
    for (const w of waiters.splice(0)) w();
  });
  socket.closed = new Promise((resolve) => {
    socket.on("close", (reason, desc) => resolve({ reason, desc: String(desc?.description ?? desc ?? "") }));
  });
  socket.opened = new Promise((resolve, reject) => {
    socket.on("open", resolve);
    socket.on("error", reject);
  });
  // next resolves with the next message received (in order).
  socket.next = async (ms = 3000) => {
    const deadline = Date.now() + ms;
    while (inbox.length === 0) {
      if (Date.now() > deadline) throw new Error("no message within " + ms + "ms");
      await new Promise((r) => {
        waiters.push(r);
        setTimeout(r, 50);
      });
    }
    return inbox.shift();
  };
  return socket;
}

export function fail(msg) {
  console.error("FAIL: " + msg);
  process.exit(1);
}

export function expect(cond, msg) {
  if (!cond) fail(msg);
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

export function withTimeout(ms) {
  setTimeout(() => fail("script timed out after " + ms + "ms"), ms).unref();
}

// exchange sends messages and checks each echo, then checks the session
// survives more than two ping intervals, then asks the server to close and
// waits for the close to reach the client.
export async function exchange(socket, transport) {
  expect((await socket.next()) === "welcome", "first message is not welcome");
  for (const m of ["hello", "ü€😀 unicode", "x".repeat(70000)]) {
    socket.send(m);
    const got = await socket.next();
    expect(got === "echo:" + m, "echo of " + m.slice(0, 20) + " was " + String(got).slice(0, 40));
  }
  const interval = socket.pingInterval ?? socket._pingInterval;
  expect(interval > 0 && interval < 2000, "short pingInterval expected, got " + interval);
  await sleep(interval * 2.5 + 100);
  expect(socket.readyState === "open", "session not open after 2.5 ping intervals: " + socket.readyState);
  expect(socket.transport.name === transport, "transport " + socket.transport.name + ", want " + transport);
  socket.send("after-heartbeat");
  expect((await socket.next()) === "echo:after-heartbeat", "no echo after heartbeats");
  socket.send("close-me");
  const closed = await socket.closed;
  console.log(JSON.stringify({ ok: true, closed }));
}
