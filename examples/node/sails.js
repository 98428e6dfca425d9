// The little of Sails the two examples use, on node:http and
// @socketrooms/membership: sails.sockets (the facade), sails.log, and the
// req/res helpers of a Sails action (req.param, req.isSocket, res.json,
// res.badRequest, res.serverError).
import { createSockets } from "@socketrooms/membership";

/**
 * createSails returns { sockets, log } for a membership-server.
 * options: the facade's ClientOptions (address, token, protocol, waitFor,
 * timeoutMs, tls); log: { info, warn } (default: console).
 */
export function createSails(options, log = console) {
  return { sockets: createSockets(options), log };
}

/**
 * action wraps a Sails-style action (req, res) as a node:http handler. The
 * JSON body and the query string are read into req.param(name); req.isSocket
 * is true for requests a gateway forwarded from a socket (X-Socket-Id).
 */
export function action(fn) {
  return (req, res) => {
    const chunks = [];
    let size = 0;
    req.on("data", (c) => {
      size += c.length;
      if (size > 64 << 10) {
        req.destroy();
        return;
      }
      chunks.push(c);
    });
    req.on("end", () => {
      let body = {};
      try {
        if (chunks.length) body = JSON.parse(Buffer.concat(chunks).toString("utf8"));
      } catch {
        return send(res, 400, { error: "the body is not JSON" });
      }
      const query = new URL(req.url, "http://app").searchParams;
      req.param = (name) =>
        body !== null && typeof body === "object" && name in body ? body[name] : (query.get(name) ?? undefined);
      req.isSocket = typeof req.headers["x-socket-id"] === "string" && req.headers["x-socket-id"] !== "";
      res.json = (v) => send(res, 200, v);
      res.badRequest = (msg) => send(res, 400, { error: msg });
      res.serverError = (err) =>
        send(res, 500, { error: String(err && err.message ? err.message : err), code: err && err.code, reason: err && err.reason });
      fn(req, res);
    });
  };
}

function send(res, status, v) {
  res.writeHead(status, { "Content-Type": "application/json" });
  res.end(JSON.stringify(v));
}
