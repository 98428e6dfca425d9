// A Connect protocol client for membership.v1.MembershipService, JSON only:
// unary calls (POST application/json) and server streams (POST
// application/connect+json, messages in 5-byte-prefixed envelopes, the last
// one flagged end-of-stream with the error, if any). See
// https://connectrpc.com/docs/protocol. It is small enough to read in full,
// which a vendored library bundle would not be.

const SERVICE = "/membership.v1.MembershipService/";
const END_STREAM = 0x02;

/** RpcError is a failed call: code is a Connect code ("unauthenticated", …
 * or "unavailable" when the server could not be reached), reason and
 * metadata come from the google.rpc.ErrorInfo detail when there is one. */
export class RpcError extends Error {
  constructor(code, message, info = {}) {
    super(message);
    this.code = code;
    this.reason = info.reason ?? "";
    this.metadata = info.metadata ?? {};
  }

  /** A one-line description: code, reason, field and message. */
  describe() {
    const parts = [this.code];
    if (this.reason) parts.push(this.reason);
    if (this.metadata.field) parts.push(`field ${this.metadata.field}`);
    return `${parts.join(" / ")}: ${this.message}`;
  }
}

/** Client calls the API at base ("" for the page's origin) with token. */
export class Client {
  constructor(base, token) {
    this.base = base;
    this.token = token;
  }

  headers(contentType) {
    const h = { "Content-Type": contentType, "Connect-Protocol-Version": "1" };
    if (this.token) h.Authorization = `Bearer ${this.token}`;
    return h;
  }

  /** call sends one request and resolves to the response message. */
  async call(method, request, { signal, timeoutMs = 10000 } = {}) {
    const headers = this.headers("application/json");
    headers["Connect-Timeout-Ms"] = String(timeoutMs);
    let res;
    try {
      res = await fetch(this.base + SERVICE + method, {
        method: "POST", headers, body: JSON.stringify(request), signal,
      });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new RpcError("unavailable", `cannot reach the API: ${e.message}`);
    }
    const text = await res.text();
    let body = {};
    try {
      body = text === "" ? {} : JSON.parse(text);
    } catch {
      throw new RpcError(codeOfStatus(res.status), `HTTP ${res.status}: ${text.slice(0, 200)}`);
    }
    if (!res.ok) throw errorOf(body, res.status);
    return body;
  }

  /** stream calls a server-streaming method and yields each message. */
  async *stream(method, request, { signal } = {}) {
    const json = new TextEncoder().encode(JSON.stringify(request));
    const frame = new Uint8Array(5 + json.length);
    new DataView(frame.buffer).setUint32(1, json.length);
    frame.set(json, 5);
    let res;
    try {
      res = await fetch(this.base + SERVICE + method, {
        method: "POST", headers: this.headers("application/connect+json"), body: frame, signal,
      });
    } catch (e) {
      if (signal?.aborted) throw e;
      throw new RpcError("unavailable", `cannot reach the API: ${e.message}`);
    }
    if (!res.ok || !(res.headers.get("Content-Type") ?? "").startsWith("application/connect+json")) {
      const text = await res.text();
      let body = {};
      try { body = JSON.parse(text); } catch { /* not JSON: described by status */ }
      throw errorOf(body, res.status);
    }
    const reader = res.body.getReader();
    let buf = new Uint8Array(0);
    try {
      for (;;) {
        while (buf.length >= 5) {
          const n = new DataView(buf.buffer, buf.byteOffset).getUint32(1);
          if (buf.length < 5 + n) break;
          const flags = buf[0];
          const msg = JSON.parse(new TextDecoder().decode(buf.subarray(5, 5 + n)));
          buf = buf.slice(5 + n);
          if (flags & END_STREAM) {
            if (msg.error) throw errorOf(msg.error, 200);
            return;
          }
          yield msg;
        }
        let chunk;
        try {
          chunk = await reader.read();
        } catch (e) {
          if (signal?.aborted) throw e;
          throw new RpcError("unavailable", `stream broken: ${e.message}`);
        }
        if (chunk.done) throw new RpcError("unavailable", "stream ended without its end message");
        const next = new Uint8Array(buf.length + chunk.value.length);
        next.set(buf);
        next.set(chunk.value, buf.length);
        buf = next;
      }
    } finally {
      reader.cancel().catch(() => {});
    }
  }
}

/** errorOf reads a Connect error object ({code, message, details}). */
export function errorOf(body, status) {
  const code = typeof body.code === "string" ? body.code : codeOfStatus(status);
  let info = {};
  for (const d of Array.isArray(body.details) ? body.details : []) {
    if (d.type === "google.rpc.ErrorInfo" && typeof d.value === "string") {
      try { info = decodeErrorInfo(base64Bytes(d.value)); } catch { /* keep the code and message */ }
    }
  }
  return new RpcError(code, typeof body.message === "string" ? body.message : `HTTP ${status}`, info);
}

function codeOfStatus(status) {
  return { 400: "invalid_argument", 401: "unauthenticated", 403: "permission_denied", 404: "unimplemented",
    408: "deadline_exceeded", 429: "unavailable", 502: "unavailable", 503: "unavailable", 504: "unavailable" }[status]
    ?? "unknown";
}

function base64Bytes(s) {
  const std = s.replace(/-/g, "+").replace(/_/g, "/");
  const bin = atob(std + "=".repeat((4 - (std.length % 4)) % 4));
  return Uint8Array.from(bin, (c) => c.charCodeAt(0));
}

/** decodeErrorInfo reads google.rpc.ErrorInfo from protobuf's binary form:
 * reason (1), domain (2) and metadata (3, map<string,string> entries of key
 * 1 and value 2); every field is length-delimited, others are skipped. */
export function decodeErrorInfo(bytes) {
  const info = { reason: "", domain: "", metadata: {} };
  for (const [num, val] of fields(bytes)) {
    if (num === 1) info.reason = utf8(val);
    else if (num === 2) info.domain = utf8(val);
    else if (num === 3) {
      let k = "", v = "";
      for (const [n, b] of fields(val)) {
        if (n === 1) k = utf8(b);
        else if (n === 2) v = utf8(b);
      }
      info.metadata[k] = v;
    }
  }
  return info;
}

function utf8(b) { return new TextDecoder().decode(b); }

// fields yields [number, bytes] for each length-delimited field of a
// message, skipping varint and fixed-width ones.
function* fields(b) {
  let i = 0;
  const varint = () => {
    let v = 0, shift = 0;
    for (;;) {
      if (i >= b.length) throw new Error("truncated varint");
      const x = b[i++];
      v += (x & 0x7f) * 2 ** shift;
      if (!(x & 0x80)) return v;
      shift += 7;
    }
  };
  while (i < b.length) {
    const key = varint();
    const num = Math.floor(key / 8), wire = key % 8;
    if (wire === 2) {
      const n = varint();
      if (i + n > b.length) throw new Error("truncated field");
      yield [num, b.subarray(i, i + n)];
      i += n;
    } else if (wire === 0) varint();
    else if (wire === 1) i += 8;
    else if (wire === 5) i += 4;
    else throw new Error(`wire type ${wire}`);
  }
}
