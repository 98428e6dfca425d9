// Package e2e tests the whole system end to end: a real etcd, the
// membership-server's gRPC API on a real listener, gateways (in-process, or as
// separate processes where a crash is the point) and real WebSocket clients.
package e2e
