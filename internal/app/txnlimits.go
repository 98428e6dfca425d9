package app

import (
	"flag"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/socketrooms/membership/internal/store"
)

// EtcdTxnLimitFlags are etcd's transaction limits, the same flags on both
// binaries: every transaction either builds (Join/Leave, room-wide calls,
// the gateway's socket removal) is sized against them (store.TxnLimits).
type EtcdTxnLimitFlags struct{ maxRequestBytes, maxTxnOps *int }

// AddEtcdTxnLimitFlags defines --etcd-max-request-bytes and --etcd-max-txn-ops.
// A client cannot read either limit from etcd, so both must be set to the
// etcd server's --max-request-bytes and --max-txn-ops.
func AddEtcdTxnLimitFlags(fs *flag.FlagSet) EtcdTxnLimitFlags {
	return EtcdTxnLimitFlags{
		maxRequestBytes: fs.Int("etcd-max-request-bytes", store.DefaultMaxRequestBytes,
			"must match etcd's --max-request-bytes (a client cannot read it from etcd): every transaction is sized to fit it (membership-server: its embedded etcd is started with it)"),
		maxTxnOps: fs.Int("etcd-max-txn-ops", store.DefaultMaxTxnOps,
			"must match etcd's --max-txn-ops (a client cannot read it from etcd): every transaction is sized to fit it (membership-server: a Join or Leave may name at most 100 sockets at 128, proportionally fewer below, and its embedded etcd is started with it)"),
	}
}

// Limits returns the flags as store.TxnLimits, with the etcd client's send
// limit raised to --etcd-max-request-bytes when that is larger (the client
// must be able to send what etcd accepts), or an error naming both flags when
// they are below store's lower bounds.
func (f EtcdTxnLimitFlags) Limits() (store.TxnLimits, error) {
	l := store.TxnLimits{MaxTxnOps: *f.maxTxnOps, MaxRequestBytes: *f.maxRequestBytes,
		MaxCallSendMsgSize: max(store.DefaultMaxCallSendMsgSize, *f.maxRequestBytes)}
	if err := l.Validate(); err != nil {
		return store.TxnLimits{}, fmt.Errorf("--etcd-max-txn-ops %d, --etcd-max-request-bytes %d: %w", *f.maxTxnOps, *f.maxRequestBytes, err)
	}
	return l, nil
}

// ApplyTxnLimits sets cfg's send limit to l's, so that the etcd client sends
// every transaction l allows.
func ApplyTxnLimits(cfg *clientv3.Config, l store.TxnLimits) {
	cfg.MaxCallSendMsgSize = l.MaxCallSendMsgSize
}
