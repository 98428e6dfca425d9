import { Code, ConnectError } from "@connectrpc/connect";
import { ErrorInfoSchema } from "./gen/google/rpc/error_details_pb.js";

/**
 * The gRPC status code names (google.rpc.Code), indexed by number: the
 * numbers are the same over gRPC, gRPC-Web and Connect.
 */
const codeNames = [
  "OK",
  "CANCELLED",
  "UNKNOWN",
  "INVALID_ARGUMENT",
  "DEADLINE_EXCEEDED",
  "NOT_FOUND",
  "ALREADY_EXISTS",
  "PERMISSION_DENIED",
  "RESOURCE_EXHAUSTED",
  "FAILED_PRECONDITION",
  "ABORTED",
  "OUT_OF_RANGE",
  "UNIMPLEMENTED",
  "INTERNAL",
  "UNAVAILABLE",
  "DATA_LOSS",
  "UNAUTHENTICATED",
] as const;

/** A gRPC status code name, e.g. "INVALID_ARGUMENT". */
export type StatusCodeName = (typeof codeNames)[number];

/**
 * An error answered by the membership-server (or met on the way to it: a
 * refused connection is UNAVAILABLE, a passed deadline DEADLINE_EXCEEDED).
 *
 * - `code`: the gRPC status code name, e.g. "INVALID_ARGUMENT".
 * - `grpcCode`: its number (3 for INVALID_ARGUMENT), as google.rpc.Code.
 * - `reason`: the google.rpc.ErrorInfo reason, e.g. "SOCKET_NOT_FOUND";
 *   empty when the answer has no ErrorInfo (UNAUTHENTICATED, transport errors).
 * - `domain`: the ErrorInfo domain ("membership.v1").
 * - `field`: the offending request field (ErrorInfo metadata "field"), e.g.
 *   "room"; empty when none is named.
 * - `metadata`: all ErrorInfo metadata (e.g. "limit" for ROOM_LIMIT_EXCEEDED).
 * - `cause`: the underlying ConnectError.
 *
 * The codes and reasons are listed in the server's README (API section).
 */
export class MembershipError extends Error {
  readonly code: StatusCodeName;
  readonly grpcCode: number;
  readonly reason: string;
  readonly domain: string;
  readonly field: string;
  readonly metadata: Readonly<Record<string, string>>;

  constructor(
    message: string,
    opts: {
      grpcCode: number;
      reason?: string;
      domain?: string;
      metadata?: Record<string, string>;
      cause?: unknown;
    },
  ) {
    super(message, { cause: opts.cause });
    this.name = "MembershipError";
    this.grpcCode = opts.grpcCode;
    this.code = codeNames[opts.grpcCode] ?? "UNKNOWN";
    this.reason = opts.reason ?? "";
    this.domain = opts.domain ?? "";
    this.metadata = Object.freeze({ ...(opts.metadata ?? {}) });
    this.field = this.metadata.field ?? "";
  }
}

/**
 * toMembershipError converts anything a call rejected with into a
 * MembershipError, reading the ErrorInfo detail when the answer has one.
 */
export function toMembershipError(err: unknown): MembershipError {
  if (err instanceof MembershipError) {
    return err;
  }
  const ce = ConnectError.from(err, Code.Unknown);
  const [info] = ce.findDetails(ErrorInfoSchema);
  const code = codeNames[ce.code] ?? "UNKNOWN";
  const what = info?.reason ? `${code}/${info.reason}` : code;
  return new MembershipError(`${what}: ${ce.rawMessage}`, {
    grpcCode: ce.code,
    reason: info?.reason,
    domain: info?.domain,
    metadata: info?.metadata,
    cause: ce,
  });
}
