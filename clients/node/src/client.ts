import { createClient as createConnectClient } from "@connectrpc/connect";
import type { Client, Interceptor, Transport } from "@connectrpc/connect";
import {
  createConnectTransport,
  createGrpcTransport,
  createGrpcWebTransport,
} from "@connectrpc/connect-node";
import { MembershipService, WaitFor } from "./gen/membership/v1/membership_pb.js";

/** The typed MembershipService client: one async method per RPC. */
export type MembershipClient = Client<typeof MembershipService>;

/** The wire protocol: "grpc" against --grpc-addr, the others against --http-addr. */
export type Protocol = "grpc" | "connect" | "grpc-web";

/** Options of createTransport and createSockets. */
export interface ClientOptions {
  /**
   * Base URL of the membership-server: "http://127.0.0.1:50051" (its
   * --grpc-addr) for protocol "grpc", "http://127.0.0.1:8090" (its
   * --http-addr) for "connect" and "grpc-web"; "https://…" when the server
   * has TLS.
   */
  address: string;
  /** Default "grpc". Every protocol speaks HTTP/2 (over TLS, or h2c without it). */
  protocol?: Protocol;
  /** The server's --auth-token-file token, sent as `authorization: Bearer <token>`. */
  token?: string;
  /** TLS for https addresses. Certificates are verified unless insecureSkipVerify. */
  tls?: {
    /** PEM CA certificate(s) to trust instead of the system roots. */
    ca?: string | Buffer;
    /** Accept any certificate. Off by default; for tests only. */
    insecureSkipVerify?: boolean;
  };
  /**
   * Connect protocol only: the binary protobuf encoding instead of JSON
   * (default false: JSON).
   */
  useBinaryFormat?: boolean;
  /**
   * What join and leave of the facade wait for: "commit" (the change is in
   * etcd; the server's default) or "apply" (also applied by the socket's
   * gateway). Default: the server's default.
   */
  waitFor?: "commit" | "apply";
  /** Deadline of each call in milliseconds (default: none). */
  timeoutMs?: number;
}

/** The WaitFor value of an option, WAIT_FOR_UNSPECIFIED when none. */
export function waitForValue(w: ClientOptions["waitFor"]): WaitFor {
  switch (w) {
    case undefined:
      return WaitFor.UNSPECIFIED;
    case "commit":
      return WaitFor.COMMIT;
    case "apply":
      return WaitFor.APPLY;
    default:
      throw new Error(`waitFor: want "commit" or "apply", got ${JSON.stringify(w)}`);
  }
}

/**
 * createTransport returns a connect-node transport to the membership-server
 * described by options. Throws an Error on an address that is not an
 * http(s) URL or an unknown protocol.
 */
export function createTransport(options: ClientOptions): Transport {
  let url: URL;
  try {
    url = new URL(options.address);
  } catch {
    throw new Error(`address: want a URL such as http://127.0.0.1:50051, got ${JSON.stringify(options.address)}`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new Error(`address: want an http or https URL, got ${JSON.stringify(options.address)}`);
  }
  const interceptors: Interceptor[] = [];
  if (options.token !== undefined) {
    const bearer = `Bearer ${options.token}`;
    interceptors.push((next) => (req) => {
      req.header.set("authorization", bearer);
      return next(req);
    });
  }
  const nodeOptions =
    url.protocol === "https:"
      ? { ca: options.tls?.ca, rejectUnauthorized: options.tls?.insecureSkipVerify !== true }
      : {};
  const baseUrl = url.toString().replace(/\/$/, "");
  const common = { baseUrl, interceptors, defaultTimeoutMs: options.timeoutMs };
  switch (options.protocol ?? "grpc") {
    case "grpc":
      return createGrpcTransport({ ...common, nodeOptions });
    case "connect":
      return createConnectTransport({
        ...common,
        httpVersion: "2",
        nodeOptions,
        useBinaryFormat: options.useBinaryFormat ?? false,
      });
    case "grpc-web":
      return createGrpcWebTransport({ ...common, httpVersion: "2", nodeOptions });
    default:
      throw new Error(`protocol: want "grpc", "connect" or "grpc-web", got ${JSON.stringify(options.protocol)}`);
  }
}

/**
 * createClient returns the typed MembershipService client over transport
 * (see createTransport). Its methods reject with ConnectError; wrap them
 * with toMembershipError for the code, reason and field.
 */
export function createClient(transport: Transport): MembershipClient {
  return createConnectClient(MembershipService, transport);
}
