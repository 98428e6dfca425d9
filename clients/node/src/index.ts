/**
 * @socketrooms/membership: the MembershipService client (gRPC, Connect,
 * gRPC-Web) and a facade with sails.sockets' names and argument forms.
 */
export { createClient, createTransport } from "./client.js";
export type { ClientOptions, MembershipClient, Protocol } from "./client.js";
export { MembershipError, toMembershipError } from "./errors.js";
export type { StatusCodeName } from "./errors.js";
export {
  DEFAULT_EVENT_NAME,
  SOCKET_ID_HEADER,
  Sockets,
  createSockets,
  eventArgs,
  getId,
  socketId,
} from "./sockets.js";
export type { Callback, SocketOrReq, SocketRequest } from "./sockets.js";
export * from "./gen/membership/v1/membership_pb.js";
