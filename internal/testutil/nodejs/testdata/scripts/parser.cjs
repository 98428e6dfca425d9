// Encodes and decodes Socket.IO packets with the clients' own parsers.
//
//   node parser.cjs info
//   node parser.cjs v4|v5 encode   stdin: [packet…]  stdout: [{ok, parts|error}…]
//   node parser.cjs v4|v5 decode   stdin: [string…]  stdout: [{ok, packet|error|binary}…]
//
// A packet is {type, nsp, id?, data?}; in data, {"$binary": "<base64>"}
// stands for a Buffer (so that the encoder makes a binary packet).
"use strict";
const parsers = require("./parsers.cjs");

function revive(v) {
  if (Array.isArray(v)) return v.map(revive);
  if (v && typeof v === "object") {
    if (typeof v.$binary === "string") return Buffer.from(v.$binary, "base64");
    const o = {};
    for (const k of Object.keys(v)) o[k] = revive(v[k]);
    return o;
  }
  return v;
}

function hasBinary(v) {
  if (Buffer.isBuffer(v)) return true;
  if (Array.isArray(v)) return v.some(hasBinary);
  if (v && typeof v === "object") return Object.keys(v).some((k) => hasBinary(v[k]));
  return false;
}

// encode runs the parser's encoder as the client's Socket does: protocol 5's
// encoder picks BINARY_* itself; with protocol 4 the Socket picks it
// (has-binary2) before calling the callback-style encoder.
function encode(p, packet) {
  if (p.parser.protocol === 5) {
    return new p.parser.Encoder().encode(packet);
  }
  if ((packet.type === 2 || packet.type === 3) && hasBinary(packet.data)) packet.type += 3;
  let out;
  new p.parser.Encoder().encode(packet, (parts) => { out = parts; });
  return out;
}

function decode(p, str) {
  const dec = new p.parser.Decoder();
  let got = null;
  dec.on("decoded", (pkt) => { got = pkt; });
  try {
    dec.add(str);
  } catch (e) {
    return { ok: false, error: String(e.message || e) };
  }
  if (got === null) return { ok: false, binary: true, error: "awaiting binary attachments" };
  // socket.io-parser 3.x reports some errors as an ERROR packet instead of throwing.
  if (p.parser.protocol === 4 && got.type === 4 && typeof got.data === "string" && got.data.startsWith("parser error")) {
    return { ok: false, error: got.data };
  }
  const out = { type: got.type, nsp: got.nsp };
  if (got.id !== undefined) out.id = got.id;
  if (got.data !== undefined) out.data = got.data;
  return { ok: true, packet: out };
}

function main() {
  const [which, op] = process.argv.slice(2);
  if (which === "info") {
    const info = {};
    for (const k of ["v4", "v5"]) {
      const p = parsers[k];
      info[k] = { parser: p.version, protocol: p.parser.protocol, client: p.clientVersion };
    }
    // The reserved event names, read from the released sources (none of the
    // lists is exported): the clients' Socket and protocol 5's parser.
    const fs = require("fs");
    const path = require("path");
    const names = (file, re) => {
      const m = fs.readFileSync(file, "utf8").match(re);
      if (!m) throw new Error("no reserved list in " + file);
      return [...m[1].matchAll(/["']?([A-Za-z_]+)["']?\s*(?::\s*1)?\s*,?\s*(?:\/\/[^\n]*)?/g)].map((x) => x[1]);
    };
    info.v5.clientReserved = names(path.join(path.dirname(parsers.v5.client), "socket.js"), /RESERVED_EVENTS = Object\.freeze\(\{([^}]*)\}/);
    info.v5.parserReserved = names(require.resolve("socket.io-parser", { paths: [path.dirname(parsers.v5.client)] }), /RESERVED_EVENTS = \[([^\]]*)\]/);
    info.v4.clientReserved = names(path.join(path.dirname(parsers.v4.client), "socket.js"), /var events = \{([^}]*)\}/);
    process.stdout.write(JSON.stringify(info));
    return;
  }
  const p = parsers[which];
  if (!p) throw new Error("first argument: info, v4 or v5");
  const input = JSON.parse(require("fs").readFileSync(0, "utf8"));
  let out;
  if (op === "encode") {
    out = input.map((pkt) => {
      try {
        const parts = encode(p, revive(pkt));
        return { ok: true, parts: parts.map((x) => (typeof x === "string" ? x : { $binary: Buffer.from(x).toString("base64") })) };
      } catch (e) {
        return { ok: false, error: String(e.message || e) };
      }
    });
  } else if (op === "decode") {
    out = input.map((s) => decode(p, s));
  } else {
    throw new Error("second argument: encode or decode");
  }
  process.stdout.write(JSON.stringify(out));
}

main();
