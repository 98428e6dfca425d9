import { create, toBinary } from "@bufbuild/protobuf";
import { Code, ConnectError } from "@connectrpc/connect";
import assert from "node:assert/strict";
import { IncomingMessage } from "node:http";
import { Socket } from "node:net";
import { test } from "node:test";
import { ErrorInfoSchema } from "../../src/gen/google/rpc/error_details_pb.js";
import {
  MembershipError,
  createSockets,
  createTransport,
  eventArgs,
  getId,
  socketId,
  toMembershipError,
} from "../../src/index.js";

function request(headers: Record<string, string>): IncomingMessage {
  const req = new IncomingMessage(new Socket());
  Object.assign(req.headers, headers);
  return req;
}

test("socketId takes a socket id or a forwarded request's x-socket-id", () => {
  assert.equal(socketId("g1.abc"), "g1.abc");
  assert.equal(socketId(request({ "x-socket-id": "g1.def" })), "g1.def");
  // Express's req is an IncomingMessage too; a plain object with Node's headers works the same.
  assert.equal(socketId({ headers: { "x-socket-id": "g1.ghi" } }), "g1.ghi");
});

test("a request without x-socket-id is a clear Error, as Sails' isSocket check", () => {
  assert.throws(() => socketId(request({})), /not a socket request: it has no x-socket-id header/);
  assert.throws(() => getId(request({ "x-socket-id": "" })), /not a socket request/);
  assert.throws(() => socketId(42 as never), /socket: want a socket id \(string\) or a socket request, got number/);
  assert.throws(() => socketId(null as never), /got null/);
  assert.throws(() => socketId({ id: "x" } as never), /got an? (Object|object)/);
  assert.throws(() => getId({} as never), /getId: want a socket request/);
});

test("eventArgs reads Sails' ([eventName], data, [socketToOmit])", () => {
  assert.deepEqual(eventArgs([{ a: 1 }]), ["message", { a: 1 }, undefined]);
  assert.deepEqual(eventArgs(["hi"]), ["message", "hi", undefined]);
  assert.deepEqual(eventArgs([{ a: 1 }, "g1.x"]), ["message", { a: 1 }, "g1.x"]);
  assert.deepEqual(eventArgs(["chat", { a: 1 }]), ["chat", { a: 1 }, undefined]);
  assert.deepEqual(eventArgs(["chat", "text", "g1.x"]), ["chat", "text", "g1.x"]);
  assert.deepEqual(eventArgs([null, 5]), ["message", 5, undefined]);
  assert.throws(() => eventArgs([7, 5]), /eventName: want a string, got number/);
});

test("toMembershipError carries the code, its number, the ErrorInfo reason and field", () => {
  const info = create(ErrorInfoSchema, {
    reason: "INVALID_ROOM",
    domain: "membership.v1",
    metadata: { field: "room" },
  });
  const ce = new ConnectError("room: empty", Code.InvalidArgument, undefined, [
    { desc: ErrorInfoSchema, value: info },
  ]);
  // Round-trip the detail through its bytes, as it arrives off the wire.
  const wire = new ConnectError("room: empty", Code.InvalidArgument, undefined, [
    { type: "google.rpc.ErrorInfo", value: toBinary(ErrorInfoSchema, info) } as never,
  ]);
  for (const e of [ce, wire]) {
    const err = toMembershipError(e);
    assert.ok(err instanceof MembershipError);
    assert.ok(err instanceof Error);
    assert.equal(err.code, "INVALID_ARGUMENT");
    assert.equal(err.grpcCode, 3);
    assert.equal(err.reason, "INVALID_ROOM");
    assert.equal(err.domain, "membership.v1");
    assert.equal(err.field, "room");
    assert.match(err.message, /^INVALID_ARGUMENT\/INVALID_ROOM: room: empty$/);
  }
  const bare = toMembershipError(new ConnectError("no token", Code.Unauthenticated));
  assert.equal(bare.code, "UNAUTHENTICATED");
  assert.equal(bare.grpcCode, 16);
  assert.equal(bare.reason, "");
  assert.equal(bare.field, "");
});

test("createTransport refuses what is not an http(s) URL or a known protocol", () => {
  assert.throws(() => createTransport({ address: "127.0.0.1:50051" }), /address: want/);
  assert.throws(() => createTransport({ address: "ftp://x" }), /want an http or https URL/);
  assert.throws(() => createTransport({ address: "http://x", protocol: "rest" as never }), /protocol: want/);
  assert.throws(() => createSockets({ address: "http://x", waitFor: "soon" as never }), /waitFor: want/);
});

test("bad arguments reject before anything is sent, and reach a callback", async () => {
  // Nothing listens on port 9: a call that reached the network would be UNAVAILABLE.
  const sails = createSockets({ address: "http://127.0.0.1:9" });
  await assert.rejects(sails.leave(request({}), "fun"), (err: Error) => {
    assert.ok(!(err instanceof MembershipError));
    assert.match(err.message, /not a socket request/);
    return true;
  });
  await assert.rejects(sails.broadcast(["r"], "ev", {}, { headers: {} }), /not a socket request/);
  await assert.rejects(sails.addRoomMembersToRooms("a", [1] as never), /destRooms: want/);
  const got = await new Promise<unknown[]>((resolve) => {
    void sails.join(5 as never, "fun", (...args) => resolve(args));
  });
  assert.equal(got.length, 1);
  assert.match(String(got[0]), /socket: want a socket id/);
});

test("an unreachable server is UNAVAILABLE", async () => {
  const sails = createSockets({ address: "http://127.0.0.1:9", timeoutMs: 5000 });
  await assert.rejects(sails.leaveAll("fun"), (err: MembershipError) => {
    assert.ok(err instanceof MembershipError);
    assert.equal(err.code, "UNAVAILABLE");
    return true;
  });
});
