// A WatchMembership stream that outlives the stream it rides on: when the
// stream breaks (a membership-server restarting, the network) it calls
// again with after_revision set to the last revision it saw (events or
// progress), so every event after it arrives exactly once (the contract in
// membership.proto). A compacted revision (OUT_OF_RANGE / COMPACTED) cannot
// be resumed: it starts again from now and reports the gap.

import { RpcError } from "./rpc.js";

const RETRY_MS = [250, 500, 1000, 2000, 4000];

export class MembershipWatch {
  /** client: an rpc.Client; filter: {room, user, socketId}; handlers:
   * onEvents(events, revision), onRevision(revision), onState(text, error). */
  constructor(client, filter, handlers) {
    this.client = client;
    this.filter = filter;
    this.h = handlers;
    this.revision = "0"; // int64 as protojson spells it
    this.abort = new AbortController();
    this.resumes = 0;
    this.run();
  }

  stop() { this.abort.abort(); }

  async run() {
    let attempt = 0;
    const signal = this.abort.signal;
    while (!signal.aborted) {
      const req = { ...this.filter, afterRevision: this.revision };
      try {
        this.h.onState?.(this.revision === "0" ? "connecting" : `resuming after revision ${this.revision}`);
        for await (const m of this.client.stream("WatchMembership", req, { signal })) {
          attempt = 0;
          this.h.onState?.("live");
          if (m.events) {
            this.revision = m.events.revision;
            this.h.onEvents?.(m.events.events ?? [], m.events.revision);
          } else if (m.progress) {
            this.revision = m.progress.revision;
          }
          this.h.onRevision?.(this.revision);
        }
      } catch (e) {
        if (signal.aborted) return;
        if (!(e instanceof RpcError)) e = new RpcError("unknown", String(e?.message ?? e));
        if (e.code === "unauthenticated" || e.code === "permission_denied" || e.code === "invalid_argument") {
          this.h.onState?.("stopped", e);
          return;
        }
        if (e.code === "out_of_range") {
          this.h.onState?.(`revision ${this.revision} was compacted: events were missed; watching from now`, e);
          this.revision = "0";
        } else {
          this.h.onState?.(`disconnected (${e.describe()}); retrying`, e);
        }
      }
      this.resumes++;
      await sleep(RETRY_MS[Math.min(attempt++, RETRY_MS.length - 1)], signal);
    }
  }
}

function sleep(ms, signal) {
  return new Promise((resolve) => {
    const t = setTimeout(resolve, ms);
    signal.addEventListener("abort", () => { clearTimeout(t); resolve(); }, { once: true });
  });
}
