// demo.js: the gateway's demo page. It shows this browser's socket, its rooms
// and what it receives, and the grpcurl commands that drive it through the
// membership API. Everything that comes from the network or the page's inputs
// reaches the DOM as textContent, never as markup.

import { MembershipSocket } from "./membership.js";

const SERVICE = "membership.v1.MembershipService";

/** shellQuote makes s one POSIX shell word, quoting only when needed. */
export function shellQuote(s) {
  if (/^[A-Za-z0-9_./:@%+=,-]+$/.test(s)) return s;
  return "'" + s.replace(/'/g, "'\\''") + "'";
}

/**
 * grpcurl is the command line calling method with request (an object sent as
 * JSON). flags are the operator's grpcurl flags, shell syntax, used as given.
 */
export function grpcurl(flags, addr, method, request) {
  const parts = ["grpcurl"];
  if (flags.trim() !== "") parts.push(flags.trim());
  parts.push("-d", shellQuote(JSON.stringify(request)), shellQuote(addr), `${SERVICE}/${method}`);
  return parts.join(" ");
}

/** commands are the Join, Broadcast and Leave command lines for one socket and room. */
export function commands({ flags, addr, socketId, room, event, text }) {
  return {
    join: grpcurl(flags, addr, "Join", { socket_id: socketId, room }),
    broadcast: grpcurl(flags, addr, "Broadcast", { rooms: [room], event, data: { text } }),
    leave: grpcurl(flags, addr, "Leave", { socket_id: socketId, room }),
  };
}

function meta(doc, name, fallback) {
  const el = doc.querySelector(`meta[name="${name}"]`);
  return el ? el.getAttribute("content") : fallback;
}

const MAX_LOG = 200;

/** start wires the page in doc to a socket on this page's gateway. */
export function start(doc) {
  const $ = (id) => doc.getElementById(id);
  const api = { addr: meta(doc, "membership-api-addr", "127.0.0.1:50051"), flags: meta(doc, "membership-grpcurl-flags", "-plaintext") };
  let reconnections = 0;

  function log(kind, text) {
    const li = doc.createElement("li");
    li.className = kind;
    const time = doc.createElement("time");
    time.textContent = new Date().toLocaleTimeString();
    li.append(time, " ", text);
    const list = $("log");
    list.prepend(li);
    while (list.children.length > MAX_LOG) list.lastElementChild.remove();
  }

  // A gateway that checks JWTs gets the one this page was opened with
  // (/?token=…), for a try of authentication by hand.
  const token = new URLSearchParams(doc.defaultView?.location?.search ?? "").get("token") || undefined;
  const socket = new MembershipSocket(undefined, { token });

  function renderRooms() {
    const list = $("rooms");
    list.replaceChildren(
      ...socket.rooms.map((room) => {
        const li = doc.createElement("li");
        li.textContent = room;
        return li;
      }),
    );
    $("no-rooms").hidden = socket.rooms.length > 0;
  }

  function renderCommands() {
    const id = socket.socketId;
    const cmds = commands({
      ...api,
      socketId: id ?? "SOCKET_ID",
      room: $("room-input").value,
      event: "message",
      text: $("text-input").value,
    });
    $("cmd-join").textContent = cmds.join;
    $("cmd-broadcast").textContent = cmds.broadcast;
    $("cmd-leave").textContent = cmds.leave;
  }

  function setStatus(text, state) {
    $("status").textContent = text;
    $("status").dataset.state = state;
  }

  function showSocket() {
    $("socket-id").textContent = socket.socketId ?? "—";
    $("user").textContent = socket.user ?? "—";
    renderRooms();
    renderCommands();
  }

  socket.on("connected", ({ socketId }) => {
    setStatus("connected", "up");
    log("life", `connected as ${socketId}`);
    showSocket();
  });
  socket.on("reconnected", ({ socketId, previousSocketId, resumeError }) => {
    reconnections++;
    $("reconnections").textContent = String(reconnections);
    $("previous-id").textContent = previousSocketId ?? "—";
    setStatus("reconnected", "up");
    const why = resumeError ? ` (not resumed: ${resumeError})` : "";
    log("life", `reconnected as ${socketId} (was ${previousSocketId})${why}; the new socket is in no room`);
    showSocket();
  });
  socket.on("resumed", ({ socketId, rooms }) => {
    setStatus("resumed", "up");
    log("life", `resumed ${socketId} in ${rooms.length} room(s); missed messages follow`);
    showSocket();
  });
  socket.on("disconnected", ({ code, reason }) => {
    setStatus(`disconnected (${code}${reason ? " " + reason : ""})`, "down");
    log("life", `disconnected: ${code} ${reason}`);
    showSocket();
  });
  socket.on("reconnecting", ({ attempt, delay }) => {
    setStatus(`reconnecting: attempt ${attempt} in ${(delay / 1000).toFixed(1)} s`, "down");
  });
  socket.on("joined", (room) => {
    log("life", `joined ${room}`);
    renderRooms();
  });
  socket.on("left", (room) => {
    log("life", `left ${room}`);
    renderRooms();
  });
  socket.on("message", (data, { room, event }) => {
    const where = room === null ? "blast" : `room ${room}`;
    const li = doc.createElement("li");
    const head = doc.createElement("strong");
    head.textContent = `${where}, event ${event}: `;
    const body = doc.createElement("code");
    body.textContent = JSON.stringify(data);
    li.append(head, body);
    const list = $("messages");
    list.prepend(li);
    while (list.children.length > MAX_LOG) list.lastElementChild.remove();
    $("no-messages").hidden = true;
  });

  $("room-input").addEventListener("input", renderCommands);
  $("text-input").addEventListener("input", renderCommands);

  for (const button of doc.querySelectorAll("button[data-copy]")) {
    button.addEventListener("click", async () => {
      const text = $(button.dataset.copy).textContent;
      try {
        await navigator.clipboard.writeText(text);
        button.textContent = "copied";
      } catch {
        // No clipboard (a plain-http page on another host): select the text instead.
        doc.getSelection().selectAllChildren($(button.dataset.copy));
        button.textContent = "selected";
      }
      setTimeout(() => (button.textContent = "copy"), 1500);
    });
  }

  $("request-form").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const out = $("response");
    let body;
    const raw = $("request-body").value.trim();
    if (raw !== "") {
      try {
        body = JSON.parse(raw);
      } catch (err) {
        out.textContent = `body is not JSON: ${err.message}`;
        return;
      }
    }
    out.textContent = "…";
    try {
      const res = await socket.request($("request-method").value, $("request-path").value, body);
      out.textContent = `${res.status} ${JSON.stringify(res.body)}`;
    } catch (err) {
      out.textContent = `failed: ${err.message}`;
    }
  });

  setStatus("connecting", "down");
  showSocket();
  return socket;
}

if (typeof document !== "undefined") {
  // Loaded by the page; in Node (the tests) only the functions above are used.
  globalThis.membershipDemo = start(document);
}
