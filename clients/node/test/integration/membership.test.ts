// Integration tests against real binaries: internal/e2e's TestNodeClient
// starts etcd, a membership-server (gRPC and --http-addr, with a token) and
// a gateway, and runs these with their addresses in the environment:
// MEMBERSHIP_GRPC_URL, MEMBERSHIP_HTTP_URL, MEMBERSHIP_TOKEN, GATEWAY_WS_URL.
import assert from "node:assert/strict";
import { readFileSync } from "node:fs";
import { after, describe, test } from "node:test";
import WebSocket from "ws";
import { MembershipError, createSockets } from "../../src/index.js";
import type { ClientOptions, Protocol, Sockets } from "../../src/index.js";

function env(name: string): string {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: run through internal/e2e's TestNodeClient`);
  return v;
}

type Frame = { type: string; room?: string; event?: string; data?: unknown; socket_id?: string };

/** A native WebSocket client of the gateway. */
class Sock {
  readonly frames: Frame[] = [];
  private waiters: (() => void)[] = [];
  id = "";
  constructor(readonly ws: WebSocket) {
    ws.on("message", (b) => {
      this.frames.push(JSON.parse(b.toString()) as Frame);
      for (const w of this.waiters.splice(0)) w();
    });
  }
  static async connect(url: string): Promise<Sock> {
    const s = new Sock(new WebSocket(url));
    const hello = await s.next((f) => f.type === "connected");
    s.id = hello.socket_id ?? "";
    assert.ok(s.id, "connected frame without socket_id");
    return s;
  }
  /** next waits for (and removes) the first frame that matches. */
  async next(match: (f: Frame) => boolean, timeoutMs = 5000): Promise<Frame> {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const i = this.frames.findIndex(match);
      if (i >= 0) return this.frames.splice(i, 1)[0];
      const left = deadline - Date.now();
      if (left <= 0) throw new Error(`socket ${this.id}: no matching frame; got ${JSON.stringify(this.frames)}`);
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left);
        this.waiters.push(() => {
          clearTimeout(t);
          resolve();
        });
      });
    }
  }
  expect(type: string, room?: string, event?: string, timeoutMs?: number): Promise<Frame> {
    return this.next(
      (f) => f.type === type && (room === undefined || f.room === room) && (event === undefined || f.event === event),
      timeoutMs,
    );
  }
  close() {
    this.ws.close();
  }
}

const sockets: Sock[] = [];
after(() => sockets.forEach((s) => s.close()));
async function connect(): Promise<Sock> {
  const s = await Sock.connect(env("GATEWAY_WS_URL"));
  sockets.push(s);
  return s;
}

function options(protocol: Protocol, extra: Partial<ClientOptions> = {}): ClientOptions {
  return {
    address: protocol === "grpc" ? env("MEMBERSHIP_GRPC_URL") : env("MEMBERSHIP_HTTP_URL"),
    protocol,
    token: env("MEMBERSHIP_TOKEN"),
    waitFor: "apply",
    timeoutMs: 10000,
    ...extra,
  };
}

function wantError(code: string, reason: string, field: string) {
  return (err: unknown) => {
    assert.ok(err instanceof MembershipError, `want a MembershipError, got ${String(err)}`);
    assert.ok(err instanceof Error);
    assert.equal(err.code, code, err.message);
    assert.equal(err.reason, reason, err.message);
    assert.equal(err.field, field, err.message);
    return true;
  };
}

for (const protocol of ["grpc", "connect", "grpc-web"] as Protocol[]) {
  describe(`over ${protocol}`, () => {
    const sails: Sockets = createSockets(options(protocol));
    const room = (name: string) => `${protocol}-${name}`;

    test("join and leave by socket id and by socket request; broadcast reaches the room", async () => {
      const a = await connect();
      const b = await connect();
      const fun = room("fun");
      const joined = await sails.join(a.id, fun);
      assert.equal(joined.alreadyMember, false);
      assert.ok(joined.revision > 0n);
      await a.expect("joined", fun);
      // A request the gateway forwarded: its x-socket-id names b.
      const req = { headers: { "x-socket-id": b.id } };
      await sails.join(req, fun);
      await b.expect("joined", fun);
      assert.equal(sails.getId(req), b.id);

      const br = await sails.broadcast(fun, "chat", { text: "hi" });
      assert.equal(br.delivered, 2n);
      for (const s of [a, b]) {
        const m = await s.expect("message", fun, "chat");
        assert.deepEqual(m.data, { text: "hi" });
      }
      // Sails' short forms: the data alone is a "message"; socketToOmit skips one.
      const br2 = await sails.broadcast([fun], { n: 2 }, req);
      assert.equal(br2.delivered, 1n);
      assert.deepEqual((await a.expect("message", fun, "message")).data, { n: 2 });

      const left = await sails.leave(req, fun);
      assert.equal(left.wasMember, true);
      await b.expect("left", fun);
      const again = await sails.leave(b.id, fun);
      assert.equal(again.wasMember, false);
      await sails.broadcast(fun, "after", 3);
      await a.expect("message", fun, "after");
      await assert.rejects(b.expect("message", fun, "after", 300), /no matching frame/);
    });

    test("room-wide calls: addRoomMembersToRooms, removeRoomMembersFromRooms, leaveAll", async () => {
      const a = await connect();
      const b = await connect();
      const src = room("src");
      await sails.join(a.id, src);
      await sails.join(b.id, src);
      const added = await sails.addRoomMembersToRooms(src, [room("d1"), room("d2")]);
      assert.equal(added.sockets, 2n);
      assert.equal(added.changed, 4n);
      await a.expect("joined", room("d2"));
      const removed = await sails.removeRoomMembersFromRooms(src, room("d1"));
      assert.equal(removed.changed, 2n);
      await b.expect("left", room("d1"));
      const all = await sails.leaveAll(src);
      assert.equal(all.sockets, 2n);
      await a.expect("left", src);
      await b.expect("left", src);
    });

    test("blast reaches every socket but the one omitted", async () => {
      const a = await connect();
      const b = await connect();
      const event = room("blast");
      const res = await sails.blast(event, { all: true }, b.id);
      assert.ok(res.delivered >= 1n);
      assert.deepEqual((await a.expect("message", undefined, event)).data, { all: true });
      await assert.rejects(b.expect("message", undefined, event, 300), /no matching frame/);
    });

    test("an invalid room is INVALID_ARGUMENT with its reason and field", async () => {
      const a = await connect();
      await assert.rejects(sails.join(a.id, ""), wantError("INVALID_ARGUMENT", "INVALID_ARGUMENT", "room"));
      await assert.rejects(sails.leaveAll(""), wantError("INVALID_ARGUMENT", "INVALID_ARGUMENT", "room"));
      await assert.rejects(
        sails.addRoomMembersToRooms(room("x"), []),
        wantError("INVALID_ARGUMENT", "INVALID_ARGUMENT", "dest_rooms"),
      );
      // A well-formed id of a socket that is not connected.
      const gone = a.id.replace(/\.[^.]*$/, "." + "A".repeat(22));
      await assert.rejects(sails.join(gone, room("x")), (err: MembershipError) => {
        assert.equal(err.grpcCode, 5);
        assert.equal(err.code, "NOT_FOUND");
        assert.equal(err.reason, "SOCKET_NOT_FOUND");
        return true;
      });
    });

    test("without the token: UNAUTHENTICATED", async () => {
      const anon = createSockets(options(protocol, { token: undefined }));
      await assert.rejects(anon.leaveAll(room("x")), (err: MembershipError) => {
        assert.ok(err instanceof MembershipError);
        assert.equal(err.code, "UNAUTHENTICATED");
        assert.equal(err.grpcCode, 16);
        return true;
      });
    });

    test("Sails' callback form: cb(null, response) and cb(err)", async () => {
      const a = await connect();
      const cbRoom = room("cb");
      const [err, res] = await new Promise<unknown[]>((resolve) => {
        void sails.join(a.id, cbRoom, (...args) => resolve(args));
      });
      assert.equal(err, null);
      assert.equal((res as { alreadyMember: boolean }).alreadyMember, false);
      const got = await new Promise<unknown[]>((resolve) => {
        void sails.leave(a.id, "", (...args) => resolve(args));
      });
      assert.equal(got.length, 1);
      wantError("INVALID_ARGUMENT", "INVALID_ARGUMENT", "room")(got[0]);
      // With a callback the promise does not reject.
      await sails.leave({ headers: {} }, cbRoom, () => {});
    });
  });
}

describe("over TLS", () => {
  const ca = () => readFileSync(env("MEMBERSHIP_TLS_CA"));
  for (const [protocol, urlVar] of [
    ["grpc", "MEMBERSHIP_TLS_GRPC_URL"],
    ["connect", "MEMBERSHIP_TLS_HTTP_URL"],
    ["grpc-web", "MEMBERSHIP_TLS_HTTP_URL"],
  ] as [Protocol, string][]) {
    test(`${protocol}: the server's certificate is verified against the CA given`, async () => {
      const address = env(urlVar);
      const trusted = createSockets({ address, protocol, tls: { ca: ca() }, timeoutMs: 10000 });
      assert.equal((await trusted.leaveAll("tls")).sockets, 0n);
      // Not signed by a trusted root: refused unless verification is turned off.
      const untrusted = createSockets({ address, protocol, timeoutMs: 10000 });
      // connect-node reports the failed handshake as INTERNAL (grpc-go: UNAVAILABLE).
      await assert.rejects(untrusted.leaveAll("tls"), (err: MembershipError) => {
        assert.ok(err instanceof MembershipError);
        assert.match(err.message, /certificate/);
        return true;
      });
      const skipping = createSockets({ address, protocol, tls: { insecureSkipVerify: true }, timeoutMs: 10000 });
      assert.equal((await skipping.leaveAll("tls")).sockets, 0n);
    });
  }
});

test("Connect with the binary protobuf encoding", async () => {
  const sails = createSockets(options("connect", { useBinaryFormat: true }));
  const a = await connect();
  await sails.join(a.id, "binary");
  await a.expect("joined", "binary");
  assert.equal((await sails.leave(a.id, "binary")).wasMember, true);
  await assert.rejects(sails.join(a.id, ""), wantError("INVALID_ARGUMENT", "INVALID_ARGUMENT", "room"));
});
