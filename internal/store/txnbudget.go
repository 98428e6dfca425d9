package store

import (
	"fmt"
	"math/bits"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/protobuf/proto"
)

// Transaction budget.
//
// etcd refuses a transaction past either of two limits, and every write
// transaction this package builds (coalesced Join/Leave, room-wide changes,
// the rooms-per-socket limit, socket removal) is sized against both here:
//
//   - Operations (--max-txn-ops, 128 by default). A level of a transaction
//     counts the longest of its compares, success and failure lists; a
//     nested transaction is checked against only what its parent level left
//     unused (checkTxnRequest in etcd's server/etcdserver/api/v3rpc/key.go).
//     So a transaction needs, recursively, its own count plus the most any
//     of its nested transactions needs (txnNeed), and that must stay within
//     the limit.
//   - Request bytes. The etcd server wraps a write in a raft request (an
//     InternalRaftRequest with a header carrying a request id and the etcd
//     user name) and refuses it with ErrRequestTooLarge when that encoding
//     passes --max-request-bytes (1.5 MiB by default); before that, the
//     client refuses to send a message past its MaxCallSendMsgSize (2 MiB by
//     default) and the server's gRPC refuses one past --max-request-bytes
//     plus 512 KiB with ResourceExhausted. The budget is the smaller of the
//     client's limit and --max-request-bytes less raftEnvelopeBytes, and a
//     transaction's bytes are proto.Size of its etcdserverpb message (as
//     etcd itself measures), which is exactly its encoding.
//
// Neither limit can be read from an etcd server by a client, so both are
// configured (TxnLimits) to match the server's flags.

// TxnLimits are the etcd limits every transaction is sized against. The zero
// value of a field means etcd's (or clientv3's) default.
type TxnLimits struct {
	// MaxTxnOps is the etcd server's --max-txn-ops.
	MaxTxnOps int
	// MaxRequestBytes is the etcd server's --max-request-bytes.
	MaxRequestBytes int
	// MaxCallSendMsgSize is the etcd client's clientv3.Config.MaxCallSendMsgSize.
	MaxCallSendMsgSize int
}

// Defaults and lower bounds of TxnLimits.
const (
	// DefaultMaxTxnOps is etcd's default --max-txn-ops.
	DefaultMaxTxnOps = 128
	// DefaultMaxRequestBytes is etcd's default --max-request-bytes (1.5 MiB).
	DefaultMaxRequestBytes = 1536 * 1024
	// DefaultMaxCallSendMsgSize is clientv3's default MaxCallSendMsgSize (2 MiB).
	DefaultMaxCallSendMsgSize = 2 << 20
	// MinMaxTxnOps is the least MaxTxnOps accepted: a limited Join of a few
	// sockets must still fit.
	MinMaxTxnOps = 16
	// MinMaxRequestBytes is the least MaxRequestBytes accepted: a Join of one
	// socket to a room of MaxRoomBytes must fit with room to spare.
	MinMaxRequestBytes = 16 << 10
)

// raftEnvelopeBytes is what etcd adds to a transaction's encoding when it
// wraps it in a raft request: the field's tag and length (at most 7 bytes),
// a request id (11) and a header of a request id, an auth revision and the
// etcd user name (under 40 bytes plus the name). 512 bytes leave room for a
// user name of over 400 bytes.
const raftEnvelopeBytes = 512

func (l TxnLimits) withDefaults() TxnLimits {
	if l.MaxTxnOps == 0 {
		l.MaxTxnOps = DefaultMaxTxnOps
	}
	if l.MaxRequestBytes == 0 {
		l.MaxRequestBytes = DefaultMaxRequestBytes
	}
	if l.MaxCallSendMsgSize == 0 {
		l.MaxCallSendMsgSize = DefaultMaxCallSendMsgSize
	}
	return l
}

// Validate checks l against the lower bounds (after defaults).
func (l TxnLimits) Validate() error {
	l = l.withDefaults()
	switch {
	case l.MaxTxnOps < MinMaxTxnOps:
		return fmt.Errorf("max txn ops %d: at least %d needed", l.MaxTxnOps, MinMaxTxnOps)
	case l.MaxRequestBytes < MinMaxRequestBytes:
		return fmt.Errorf("max request bytes %d: at least %d needed", l.MaxRequestBytes, MinMaxRequestBytes)
	case l.MaxCallSendMsgSize < MinMaxRequestBytes:
		return fmt.Errorf("max call send message size %d: at least %d needed", l.MaxCallSendMsgSize, MinMaxRequestBytes)
	}
	return nil
}

// SetTxnLimits sizes every transaction against l; etcd's and clientv3's
// defaults apply until it is called. Call it before the Store is used (and
// before StartBatching).
func (s *Store) SetTxnLimits(l TxnLimits) error {
	if err := l.Validate(); err != nil {
		return err
	}
	s.budget = newTxnBudget(l)
	return nil
}

// txnBudget is what one transaction may hold.
type txnBudget struct {
	maxOps   int // per level, as etcd counts (txnNeed)
	maxBytes int // of the TxnRequest's own encoding
}

func newTxnBudget(l TxnLimits) txnBudget {
	l = l.withDefaults()
	return txnBudget{maxOps: l.MaxTxnOps, maxBytes: min(l.MaxRequestBytes-raftEnvelopeBytes, l.MaxCallSendMsgSize)}
}

// socketsPerChange is how many sockets one Join or Leave may name. A call on
// k sockets is a nested transaction of k compares and k membership
// transactions of two operations (txnNeed k+2), coalesced under a parent of
// one operation per call: alone it needs k+3. The share 100/128 keeps room
// for a widest call to share a transaction with 25 others. A larger limit
// does not raise it past MaxSocketsPerChange, the API's documented maximum.
func (b txnBudget) socketsPerChange() int {
	return min(MaxSocketsPerChange, b.maxOps*MaxSocketsPerChange/DefaultMaxTxnOps, b.maxOps-3)
}

// socketsPerLimitedJoin is socketsPerChange for a Join under the
// rooms-per-socket limit, which adds a compare per socket (txnNeed 2k+2).
func (b txnBudget) socketsPerLimitedJoin() int {
	return min(MaxSocketsPerLimitedJoin, b.maxOps*MaxSocketsPerLimitedJoin/DefaultMaxTxnOps, (b.maxOps-3)/2)
}

// txnShape is what one transaction being built counts against the budget.
type txnShape struct {
	compares int // compares of the top level
	failure  int // failure operations of the top level
	ops      int // success operations of the top level
	below    int // the most any nested transaction needs (txnNeed)
	bytes    int // the TxnRequest's encoded size
}

// withOp is s with one more success operation that needs need operations
// below the top level and whose RequestOp encodes in size bytes.
func (s txnShape) withOp(need, size int) txnShape {
	s.ops++
	s.below = max(s.below, need)
	s.bytes += fieldBytes(size)
	return s
}

// need is what etcd checks against --max-txn-ops for the whole transaction.
func (s txnShape) need() int { return max(s.compares, s.failure, s.ops) + s.below }

func (b txnBudget) fits(s txnShape) bool {
	return s.need() <= b.maxOps && s.bytes <= b.maxBytes
}

// guardShape is the shape of a transaction holding only compares cmps and
// failure operations failure.
func guardShape(cmps []*etcdserverpb.Compare, failure []*etcdserverpb.RequestOp) txnShape {
	s := txnShape{compares: len(cmps), failure: len(failure)}
	for _, c := range cmps {
		s.bytes += fieldBytes(proto.Size(c))
	}
	for _, op := range failure {
		s.below = max(s.below, opNeed(op))
		s.bytes += fieldBytes(proto.Size(op))
	}
	return s
}

// txnNeed is the operation limit a transaction needs: its longest list plus
// the most any of its nested transactions needs.
func txnNeed(t *etcdserverpb.TxnRequest) int {
	below := 0
	for _, op := range t.Success {
		below = max(below, opNeed(op))
	}
	for _, op := range t.Failure {
		below = max(below, opNeed(op))
	}
	return max(len(t.Compare), len(t.Success), len(t.Failure)) + below
}

// opNeed is txnNeed of a nested transaction, 0 for other operations.
func opNeed(op *etcdserverpb.RequestOp) int {
	if t := op.GetRequestTxn(); t != nil {
		return txnNeed(t)
	}
	return 0
}

// fieldBytes is the encoded size of a message of size bytes as a field with
// a one-byte tag (every field of RequestOp and TxnRequest has one).
func fieldBytes(size int) int { return 1 + (bits.Len64(uint64(size)|1)+6)/7 + size }

// nestedCost is what call adds to a coalesced transaction as one nested
// transaction, or a *TxnTooLargeError when it cannot fit one on its own.
func (b txnBudget) nestedCost(call *etcdserverpb.TxnRequest) (need, size int, err error) {
	need, size = txnNeed(call), fieldBytes(proto.Size(call)) // a RequestOp holding call
	if s := (txnShape{}).withOp(need, size); !b.fits(s) {
		return 0, 0, b.tooLarge(s)
	}
	return need, size, nil
}

func (b txnBudget) tooLarge(s txnShape) error {
	return &TxnTooLargeError{Bytes: s.bytes, MaxBytes: b.maxBytes, Ops: s.need(), MaxOps: b.maxOps}
}

// TxnTooLargeError reports a single change that cannot fit one etcd
// transaction under the configured limits (TxnLimits): retrying cannot help;
// a smaller call (fewer sockets, a shorter room name) or larger limits can.
type TxnTooLargeError struct {
	Bytes, MaxBytes int // request bytes needed, and the budget
	Ops, MaxOps     int // operations per level needed, and --max-txn-ops
}

func (e *TxnTooLargeError) Error() string {
	return fmt.Sprintf("the change needs one etcd transaction of %d bytes and %d operations; the limits allow %d bytes and %d operations",
		e.Bytes, e.Ops, e.MaxBytes, e.MaxOps)
}

// txnChunks sends operations in as few transactions as the budget allows,
// each sharing the same top-level guard (base), in order. Memory stays that
// of one transaction however many operations pass through.
type txnChunks struct {
	budget txnBudget
	base   txnShape // compares and failure operations of every chunk
	shape  txnShape
	ops    []*etcdserverpb.RequestOp
	// send commits one chunk's success operations.
	send func(ops []*etcdserverpb.RequestOp) error
}

func (b txnBudget) chunks(base txnShape, send func([]*etcdserverpb.RequestOp) error) *txnChunks {
	return &txnChunks{budget: b, base: base, shape: base, send: send}
}

// add queues op, first sending what is queued when op would not fit with it.
// An operation that cannot fit even alone is a *TxnTooLargeError.
func (c *txnChunks) add(op *etcdserverpb.RequestOp) error {
	need, size := opNeed(op), proto.Size(op)
	next := c.shape.withOp(need, size)
	if !c.budget.fits(next) {
		if len(c.ops) == 0 {
			return c.budget.tooLarge(next)
		}
		if err := c.flush(); err != nil {
			return err
		}
		if next = c.shape.withOp(need, size); !c.budget.fits(next) {
			return c.budget.tooLarge(next)
		}
	}
	c.shape = next
	c.ops = append(c.ops, op)
	return nil
}

// flush sends what is queued, if anything.
func (c *txnChunks) flush() error {
	if len(c.ops) == 0 {
		return nil
	}
	ops := c.ops
	c.ops, c.shape = nil, c.base
	return c.send(ops)
}
