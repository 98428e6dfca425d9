// The socket.io-parser modules that the pinned clients bundle, resolved from
// each client's own location: protocol 5 from socket.io-client 4, protocol 4
// from socket.io-client 2 (alias socket.io-client-v2).
"use strict";
const fs = require("fs");
const path = require("path");

function packageOf(file, name) {
  for (let dir = path.dirname(file); dir !== path.dirname(dir); dir = path.dirname(dir)) {
    const p = path.join(dir, "package.json");
    if (fs.existsSync(p)) {
      const pkg = JSON.parse(fs.readFileSync(p, "utf8"));
      if (pkg.name === name) return pkg;
    }
  }
  throw new Error("no package.json of " + name + " above " + file);
}

function load(client) {
  const clientMain = require.resolve(client);
  const parserMain = require.resolve("socket.io-parser", { paths: [path.dirname(clientMain)] });
  return {
    parser: require(parserMain),
    version: packageOf(parserMain, "socket.io-parser").version,
    client: clientMain,
    clientVersion: packageOf(clientMain, "socket.io-client").version,
  };
}

module.exports = {
  v5: load("socket.io-client"),
  v4: load("socket.io-client-v2"),
};
