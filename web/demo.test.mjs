// Tests of the demo page's command lines: each must reach the shell as the
// JSON it shows, whatever the room or text typed into the page.

import { test } from "node:test";
import assert from "node:assert/strict";
import { execFileSync } from "node:child_process";

import { commands, grpcurl, shellQuote } from "./demo.js";

// words runs sh to split a command line into its words, as a terminal would.
// Quoting mistakes show up as a different word list; the inputs only ever
// hold harmless commands (echo), in case one is run.
function words(line) {
  return execFileSync("sh", ["-c", `set -- ${line}; for w in "$@"; do printf '%s\\0' "$w"; done`], { env: {} })
    .toString()
    .split("\0")
    .slice(0, -1);
}

test("shellQuote leaves plain words alone and quotes the rest", () => {
  assert.equal(shellQuote("127.0.0.1:50051"), "127.0.0.1:50051");
  assert.equal(shellQuote("a b"), "'a b'");
  assert.equal(shellQuote(""), "''");
  assert.equal(shellQuote("it's"), "'it'\\''s'");
  for (const s of ["it's", '"$HOME" `echo x` $(echo x) \\ ; & | * ?', "a\nb", "'", "''", "ünï ☃"]) {
    assert.deepEqual(words(shellQuote(s)), [s]);
  }
});

test("commands carry the socket id, room and text as the API's JSON", () => {
  const room = "it's \"fun\" $(echo expanded)";
  const text = "hello 'world'\n`echo expanded`";
  const c = commands({ flags: "-plaintext", addr: "127.0.0.1:50051", socketId: "gw.1a.Xy-_z", room, event: "message", text });
  const join = words(c.join);
  assert.deepEqual(join.slice(0, 3), ["grpcurl", "-plaintext", "-d"]);
  assert.deepEqual(JSON.parse(join[3]), { socket_id: "gw.1a.Xy-_z", room });
  assert.deepEqual(join.slice(4), ["127.0.0.1:50051", "membership.v1.MembershipService/Join"]);
  const bc = words(c.broadcast);
  assert.deepEqual(JSON.parse(bc[3]), { rooms: [room], event: "message", data: { text } });
  assert.equal(bc[5], "membership.v1.MembershipService/Broadcast");
  const leave = words(c.leave);
  assert.deepEqual(JSON.parse(leave[3]), { socket_id: "gw.1a.Xy-_z", room });
  assert.equal(leave[5], "membership.v1.MembershipService/Leave");
});

test("operator flags go in as shell words; none at all is allowed", () => {
  assert.deepEqual(words(grpcurl("", "api.example:443", "Join", {})), [
    "grpcurl",
    "-d",
    "{}",
    "api.example:443",
    "membership.v1.MembershipService/Join",
  ]);
  const line = grpcurl("-cacert ca.pem -H 'authorization: Bearer t0k'", "api:50051", "Leave", { room: "r" });
  assert.deepEqual(words(line).slice(0, 5), ["grpcurl", "-cacert", "ca.pem", "-H", "authorization: Bearer t0k"]);
});
