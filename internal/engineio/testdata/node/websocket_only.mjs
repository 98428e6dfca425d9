// Connects by WebSocket alone, exchanges messages.
import { open, exchange, expect, withTimeout } from "./lib.mjs";

const [url, proto] = process.argv.slice(2);
withTimeout(15000);
const socket = open(url, proto, ["websocket"]);
await socket.opened;
expect(socket.transport.name === "websocket", "opened on " + socket.transport.name);
await exchange(socket, "websocket");
