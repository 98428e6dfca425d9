import { fromJson } from "@bufbuild/protobuf";
import type { JsonValue } from "@bufbuild/protobuf";
import { ValueSchema } from "@bufbuild/protobuf/wkt";
import { ConnectError } from "@connectrpc/connect";
import type { IncomingHttpHeaders } from "node:http";
import { createClient, createTransport, waitForValue } from "./client.js";
import type { ClientOptions, MembershipClient } from "./client.js";
import { toMembershipError } from "./errors.js";
import type { MembershipError } from "./errors.js";
import type {
  AddRoomMembersToRoomsResponse,
  BlastResponse,
  BroadcastResponse,
  JoinResponse,
  LeaveAllResponse,
  LeaveResponse,
  RemoveRoomMembersFromRoomsResponse,
  WaitFor,
} from "./gen/membership/v1/membership_pb.js";

/** The header a gateway marks a forwarded socket request with. */
export const SOCKET_ID_HEADER = "x-socket-id";

/** Sails' default event name (sails.config.sockets defaults). */
export const DEFAULT_EVENT_NAME = "message";

/**
 * A request a gateway forwarded to its --upstream-url: node:http's
 * IncomingMessage, an Express req, or anything with Node's `headers` object.
 */
export interface SocketRequest {
  headers: IncomingHttpHeaders;
}

/** A socket id (the `connected` frame's socket_id) or a socket request. */
export type SocketOrReq = string | SocketRequest;

/** Sails' optional node-style callback: err first, then the call's response. */
export type Callback<T> = (err: MembershipError | Error | null, result?: T) => void;

function describe(v: unknown): string {
  if (v === null) return "null";
  if (typeof v === "object") return v.constructor?.name ? `a ${v.constructor.name}` : "an object";
  return typeof v;
}

/**
 * getId returns the socket id of a socket request: its x-socket-id header,
 * set by the gateway that forwarded it. Throws an Error (like Sails'
 * getId on a non-socket request) when req is not a request or has no
 * x-socket-id header.
 */
export function getId(req: SocketRequest): string {
  if (req === null || typeof req !== "object" || typeof req.headers !== "object" || req.headers === null) {
    throw new Error(`getId: want a socket request (an HTTP request with an ${SOCKET_ID_HEADER} header), got ${describe(req)}`);
  }
  const id = req.headers[SOCKET_ID_HEADER];
  if (typeof id !== "string" || id === "") {
    throw new Error(
      `getId: not a socket request: it has no ${SOCKET_ID_HEADER} header (only requests a gateway forwards from a socket have one)`,
    );
  }
  return id;
}

/**
 * socketId resolves Sails' `socket` argument: a socket id string as is, a
 * request through getId. Anything else throws an Error, as Sails' isSocket
 * check does.
 */
export function socketId(socketOrReq: SocketOrReq, arg = "socket"): string {
  if (typeof socketOrReq === "string") {
    return socketOrReq;
  }
  if (socketOrReq !== null && typeof socketOrReq === "object" && "headers" in socketOrReq) {
    return getId(socketOrReq);
  }
  throw new Error(`${arg}: want a socket id (string) or a socket request, got ${describe(socketOrReq)}`);
}

function rooms(v: string | string[], arg: string): string[] {
  if (typeof v === "string") return [v];
  if (Array.isArray(v) && v.every((r) => typeof r === "string")) return v;
  throw new Error(`${arg}: want a room name or an array of room names, got ${describe(v)}`);
}

function isObject(v: unknown): boolean {
  // lodash's _.isObject, which Sails uses to tell data from an event name.
  return v !== null && (typeof v === "object" || typeof v === "function");
}

function toValue(data: unknown) {
  return data === undefined ? undefined : fromJson(ValueSchema, data as JsonValue);
}

/**
 * settle runs a call; with a callback it reports to it (and the returned
 * promise then always resolves, after the callback ran), without one the
 * promise rejects with a MembershipError (or the Error of bad arguments).
 */
function settle<T>(run: () => Promise<T>, cb?: Callback<T>): Promise<T> {
  const p = (async () => {
    try {
      return await run();
    } catch (err) {
      // Bad arguments are plain Errors thrown before anything is sent;
      // everything the call itself rejected with is a ConnectError.
      throw err instanceof ConnectError ? toMembershipError(err) : err;
    }
  })();
  if (cb === undefined) return p;
  if (typeof cb !== "function") {
    return Promise.reject(new Error(`cb: want a function, got ${describe(cb)}`));
  }
  return p.then(
    (r) => {
      cb(null, r);
      return r;
    },
    (err: Error) => {
      cb(err);
      return undefined as T;
    },
  );
}

/**
 * Sockets is sails.sockets over the membership-server: the same names and
 * argument forms, cluster-wide. Every method returns a Promise of the RPC's
 * response and also takes Sails' optional node-style callback `cb(err,
 * response)`; given one, the Promise does not reject (the callback gets the
 * error). Errors are MembershipError (gRPC code, ErrorInfo reason, field),
 * or a plain Error for arguments of the wrong kind (not a socket id or
 * socket request, …), raised before anything is sent.
 */
export class Sockets {
  /** The typed client underneath, for the RPCs Sails has no name for. */
  readonly client: MembershipClient;
  private readonly waitFor: WaitFor;

  constructor(options: ClientOptions) {
    this.waitFor = waitForValue(options.waitFor);
    this.client = createClient(createTransport(options));
  }

  /** sails.sockets.join(socket, roomName, cb): Join. */
  join(socketOrReq: SocketOrReq, roomName: string, cb?: Callback<JoinResponse>): Promise<JoinResponse> {
    return settle(
      async () => this.client.join({ socketId: socketId(socketOrReq), room: roomName, waitFor: this.waitFor }),
      cb,
    );
  }

  /** sails.sockets.leave(socket, roomName, cb): Leave. */
  leave(socketOrReq: SocketOrReq, roomName: string, cb?: Callback<LeaveResponse>): Promise<LeaveResponse> {
    return settle(
      async () => this.client.leave({ socketId: socketId(socketOrReq), room: roomName, waitFor: this.waitFor }),
      cb,
    );
  }

  /** sails.sockets.leaveAll(roomName, cb): LeaveAll. */
  leaveAll(roomName: string, cb?: Callback<LeaveAllResponse>): Promise<LeaveAllResponse> {
    return settle(async () => this.client.leaveAll({ room: roomName }), cb);
  }

  /** sails.sockets.addRoomMembersToRooms(sourceRoom, destRooms, cb): destRooms is a name or an array. */
  addRoomMembersToRooms(
    sourceRoom: string,
    destRooms: string | string[],
    cb?: Callback<AddRoomMembersToRoomsResponse>,
  ): Promise<AddRoomMembersToRoomsResponse> {
    return settle(
      async () =>
        this.client.addRoomMembersToRooms({ sourceRoom, destRooms: rooms(destRooms, "destRooms") }),
      cb,
    );
  }

  /** sails.sockets.removeRoomMembersFromRooms(sourceRoom, destRooms, cb). */
  removeRoomMembersFromRooms(
    sourceRoom: string,
    destRooms: string | string[],
    cb?: Callback<RemoveRoomMembersFromRoomsResponse>,
  ): Promise<RemoveRoomMembersFromRoomsResponse> {
    return settle(
      async () =>
        this.client.removeRoomMembersFromRooms({ sourceRoom, destRooms: rooms(destRooms, "destRooms") }),
      cb,
    );
  }

  /**
   * sails.sockets.broadcast(roomNames, [eventName], data, [socketToOmit]).
   * As in Sails, an object in place of eventName is the data (the event is
   * then "message"), and so is the second argument of a two-argument call;
   * socketToOmit is a socket id or a socket request. data must be JSON.
   */
  broadcast(roomNames: string | string[], data: unknown): Promise<BroadcastResponse>;
  broadcast(roomNames: string | string[], data: object, socketToOmit?: SocketOrReq): Promise<BroadcastResponse>;
  broadcast(
    roomNames: string | string[],
    eventName: string,
    data: unknown,
    socketToOmit?: SocketOrReq,
  ): Promise<BroadcastResponse>;
  broadcast(roomNames: string | string[], ...rest: unknown[]): Promise<BroadcastResponse> {
    return settle(async () => {
      const [eventName, data, omit] = eventArgs(rest);
      return this.client.broadcast({
        rooms: rooms(roomNames, "roomNames"),
        event: eventName,
        data: toValue(data),
        exceptSocketIds: omit === undefined ? [] : [socketId(omit, "socketToOmit")],
      });
    });
  }

  /**
   * sails.sockets.blast([eventName], data, [socketToOmit]): every connected
   * socket, with the argument forms of broadcast.
   */
  blast(data: unknown): Promise<BlastResponse>;
  blast(data: object, socketToOmit?: SocketOrReq): Promise<BlastResponse>;
  blast(eventName: string, data: unknown, socketToOmit?: SocketOrReq): Promise<BlastResponse>;
  blast(...rest: unknown[]): Promise<BlastResponse> {
    return settle(async () => {
      const [eventName, data, omit] = eventArgs(rest);
      return this.client.blast({
        event: eventName,
        data: toValue(data),
        exceptSocketIds: omit === undefined ? [] : [socketId(omit, "socketToOmit")],
      });
    });
  }

  /** sails.sockets.getId(req): the socket id of a socket request. */
  getId(req: SocketRequest): string {
    return getId(req);
  }
}

/**
 * eventArgs reads Sails' ([eventName], data, [socketToOmit]) the way
 * sails-hook-sockets does: an object where the event name goes is the data.
 */
export function eventArgs(rest: unknown[]): [string, unknown, SocketOrReq | undefined] {
  let [eventName, data, omit] = rest;
  if (rest.length === 1 || isObject(eventName)) {
    omit = data;
    data = eventName;
    eventName = undefined;
  }
  if (eventName !== undefined && eventName !== null && typeof eventName !== "string") {
    throw new Error(`eventName: want a string, got ${describe(eventName)}`);
  }
  return [(eventName as string | undefined | null) || DEFAULT_EVENT_NAME, data, omit as SocketOrReq | undefined];
}

/** createSockets returns the sails.sockets facade over a new transport. */
export function createSockets(options: ClientOptions): Sockets {
  return new Sockets(options);
}
