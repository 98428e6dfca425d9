// Stays on long-polling (no upgrade), exchanges messages.
import { open, exchange, expect, withTimeout } from "./lib.mjs";

const [url, proto] = process.argv.slice(2);
withTimeout(15000);
const socket = open(url, proto, ["polling"]);
await socket.opened;
expect(socket.transport.name === "polling", "opened on " + socket.transport.name);
await exchange(socket, "polling");
