// The console's Connect client against a real HTTP server: streamed
// envelopes split at every byte boundary, the end-of-stream error with its
// ErrorInfo, and a unary error. Run by make test-js.
import { test } from "node:test";
import assert from "node:assert/strict";
import http from "node:http";
import { Client, RpcError, decodeErrorInfo } from "./static/rpc.js";

// ErrorInfo{reason, domain, metadata} in protobuf's binary form.
function errorInfo(reason, domain, metadata) {
  const str = (num, s) => {
    const b = Buffer.from(s);
    return Buffer.concat([Buffer.from([(num << 3) | 2, b.length]), b]);
  };
  const parts = [str(1, reason), str(2, domain)];
  for (const [k, v] of Object.entries(metadata)) {
    const entry = Buffer.concat([str(1, k), str(2, v)]);
    parts.push(Buffer.from([(3 << 3) | 2, entry.length]), entry);
  }
  return Buffer.concat(parts);
}

function envelope(flags, obj) {
  const json = Buffer.from(JSON.stringify(obj));
  const head = Buffer.alloc(5);
  head[0] = flags;
  head.writeUInt32BE(json.length, 1);
  return Buffer.concat([head, json]);
}

async function serve(handler) {
  const server = http.createServer(handler);
  await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
  return { base: `http://127.0.0.1:${server.address().port}`, close: () => server.close() };
}

test("decodeErrorInfo reads reason, domain and metadata", () => {
  const info = decodeErrorInfo(errorInfo("INVALID_ARGUMENT", "membership.v1", { field: "room" }));
  assert.deepEqual(info, { reason: "INVALID_ARGUMENT", domain: "membership.v1", metadata: { field: "room" } });
});

test("a stream's messages survive any split, and its end carries the error", async () => {
  const info = errorInfo("COMPACTED", "membership.v1", { compact_revision: "5" }).toString("base64").replace(/=+$/, "");
  const body = Buffer.concat([
    envelope(0, { progress: { revision: "7" } }),
    envelope(0, { events: { revision: "8", events: [{ type: "EVENT_TYPE_JOINED", room: "é" }] } }),
    envelope(2, { error: { code: "out_of_range", message: "compacted", details: [{ type: "google.rpc.ErrorInfo", value: info }] } }),
  ]);
  let seen;
  const srv = await serve(async (req, res) => {
    const chunks = [];
    for await (const c of req) chunks.push(c);
    seen = { headers: req.headers, body: Buffer.concat(chunks) };
    res.writeHead(200, { "Content-Type": "application/connect+json" });
    for (const b of body) { // one byte per write
      res.write(Buffer.from([b]));
      await new Promise((r) => setImmediate(r));
    }
    res.end();
  });
  try {
    const got = [];
    const c = new Client(srv.base, "tok");
    await assert.rejects(async () => {
      for await (const m of c.stream("WatchMembership", { afterRevision: "6" })) got.push(m);
    }, (e) => e instanceof RpcError && e.code === "out_of_range" && e.reason === "COMPACTED" &&
      e.metadata.compact_revision === "5");
    assert.deepEqual(got, [{ progress: { revision: "7" } },
      { events: { revision: "8", events: [{ type: "EVENT_TYPE_JOINED", room: "é" }] } }]);
    assert.equal(seen.headers.authorization, "Bearer tok");
    assert.equal(seen.headers["content-type"], "application/connect+json");
    assert.deepEqual(seen.body, envelope(0, { afterRevision: "6" }));
  } finally {
    srv.close();
  }
});

test("a unary error is an RpcError with its code and message", async () => {
  const srv = await serve((req, res) => {
    res.writeHead(401, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ code: "unauthenticated", message: "Request unauthenticated with bearer" }));
  });
  try {
    await assert.rejects(new Client(srv.base, "").call("ListGateways", {}),
      (e) => e instanceof RpcError && e.describe() === "unauthenticated: Request unauthenticated with bearer");
  } finally {
    srv.close();
  }
});

test("an unreachable server is unavailable", async () => {
  const srv = await serve(() => {});
  const base = srv.base;
  srv.close();
  await assert.rejects(new Client(base, "").call("ListGateways", {}), (e) => e instanceof RpcError && e.code === "unavailable");
});
