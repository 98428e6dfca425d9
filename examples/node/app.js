// A node:http app serving the leaveFunRoom action at POST /leaveFunRoom,
// for a gateway's --upstream-url:
//
//	MEMBERSHIP_URL=http://127.0.0.1:50051 PORT=3000 node app.js
//	gateway --upstream-url http://127.0.0.1:3000 …
//
// MEMBERSHIP_TOKEN is the membership-server's --auth-token-file token, if any.
import http from "node:http";
import { pathToFileURL } from "node:url";
import { leaveFunRoom } from "./leaveFunRoom.js";
import { action, createSails } from "./sails.js";

/** createApp returns the app's node:http server (not yet listening). */
export function createApp(sails) {
  const leave = action(leaveFunRoom(sails));
  return http.createServer((req, res) => {
    if (req.method === "POST" && new URL(req.url, "http://app").pathname === "/leaveFunRoom") {
      return leave(req, res);
    }
    res.writeHead(404, { "Content-Type": "application/json" });
    res.end(JSON.stringify({ error: "not found" }));
  });
}

if (process.argv[1] && import.meta.url === pathToFileURL(process.argv[1]).href) {
  const sails = createSails({
    address: process.env.MEMBERSHIP_URL ?? "http://127.0.0.1:50051",
    token: process.env.MEMBERSHIP_TOKEN,
  });
  const port = Number(process.env.PORT ?? 3000);
  createApp(sails).listen(port, "127.0.0.1", () => sails.log.info(`leaveFunRoom app on 127.0.0.1:${port}`));
}
