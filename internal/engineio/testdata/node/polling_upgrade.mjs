// Connects by long-polling, upgrades to WebSocket, exchanges messages.
import { open, exchange, expect, withTimeout, sleep } from "./lib.mjs";

const [url, proto] = process.argv.slice(2);
withTimeout(15000);
const socket = open(url, proto, ["polling", "websocket"]);
const upgraded = new Promise((resolve) => socket.on("upgrade", resolve));
await socket.opened;
expect(socket.transport.name === "polling", "opened on " + socket.transport.name);
await upgraded;
await exchange(socket, "websocket");
