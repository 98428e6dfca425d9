package app

import (
	"flag"
	"fmt"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"google.golang.org/grpc"

	"github.com/socketrooms/membership/internal/grpcedge"
)

// InflightPayloadFlag is --max-inflight-payload-bytes (grpcedge.Budget), on
// both binaries.
type InflightPayloadFlag struct{ v *inflightBytes }

// AddInflightPayloadFlag defines --max-inflight-payload-bytes; calls names the
// payload calls the binary serves and what else counts ("Broadcast and Blast
// calls (and the Deliver calls they send on)"), for the help.
func AddInflightPayloadFlag(fs *flag.FlagSet, calls string) InflightPayloadFlag {
	v := inflightBytes(grpcedge.DefaultMaxInflightPayloadBytes)
	fs.Var(&v, "max-inflight-payload-bytes",
		"request bytes of "+calls+" held at once; each call counts 4 MiB while its request is read, then its size until it returns; past it calls get RESOURCE_EXHAUSTED/OVERLOADED at once (0: no limit; else at least 4194304)")
	return InflightPayloadFlag{&v}
}

// ServerOptions install the budget (grpcedge.Budget.ServerOptions) and
// register its metrics in reg as {namespace}_inflight_payload_bytes (bytes
// reserved now) and {namespace}_inflight_payload_refused_total (calls refused
// with OVERLOADED). defaultTimeout and token are the server's, as given to
// ServerOptions: a payload call without a deadline gets defaultTimeout from
// its headers on, and with a token, one without it is refused UNAUTHENTICATED
// before it reserves anything, so that no call holds the budget for longer
// than that, nor without the token. Each call returns a new budget: call it
// once per server.
func (f InflightPayloadFlag) ServerOptions(reg prometheus.Registerer, namespace string, defaultTimeout time.Duration, token string) []grpc.ServerOption {
	opts, _ := f.ServerOptionsAndBudget(reg, namespace, defaultTimeout, token)
	return opts
}

// ServerOptionsAndBudget is ServerOptions that also returns the budget, for a
// server that takes calls over HTTP too (grpcedge.Budget.ReserveHTTP).
func (f InflightPayloadFlag) ServerOptionsAndBudget(reg prometheus.Registerer, namespace string, defaultTimeout time.Duration, token string) ([]grpc.ServerOption, *grpcedge.Budget) {
	b := grpcedge.NewBudget(int64(*f.v), grpcedge.MaxRecvMsgSize, grpcedge.PayloadMethods...).DefaultTimeout(defaultTimeout)
	if token != "" {
		b.Authenticate(headerTokenCheck(token))
	}
	reg.MustRegister(
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Namespace: namespace, Name: "inflight_payload_bytes",
			Help: "Request bytes reserved by Broadcast, Blast and Deliver calls in flight (4 MiB each while a request is read, then its size); at most --max-inflight-payload-bytes."},
			func() float64 { return float64(b.Reserved()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Namespace: namespace, Name: "inflight_payload_refused_total",
			Help: "Calls refused with RESOURCE_EXHAUSTED/OVERLOADED because --max-inflight-payload-bytes was reached."},
			func() float64 { return float64(b.Refused()) }))
	return b.ServerOptions(), b
}

// DialOptions count the requests a call sends on, to gateways, in the budget
// of the call they serve (grpcedge.CountOutgoing): the membership-server's
// gateway connections.
func (InflightPayloadFlag) DialOptions() []grpc.DialOption {
	return []grpc.DialOption{grpc.WithChainUnaryInterceptor(grpcedge.CountOutgoing)}
}

// inflightBytes refuses, when the flag is parsed, a limit that no call could
// fit: one call reserves grpcedge.MaxRecvMsgSize.
type inflightBytes int64

func (b *inflightBytes) String() string { return strconv.FormatInt(int64(*b), 10) }

func (b *inflightBytes) Set(s string) error {
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return fmt.Errorf("not a number of bytes")
	}
	if n != 0 && (n < grpcedge.MaxRecvMsgSize) {
		return fmt.Errorf("%d: must be 0 (no limit) or at least %d, the largest request one call may send", n, grpcedge.MaxRecvMsgSize)
	}
	*b = inflightBytes(n)
	return nil
}
