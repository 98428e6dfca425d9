package service

import (
	"context"
	"errors"
	"sync"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

// WatchMembership streams.
//
// Each stream has its own etcd watch (store.WatchMembership), read on a
// goroutine of its own into a buffer bounded in events; the handler's
// goroutine sends from the buffer. A consumer that reads slowly fills gRPC's
// flow-control window, then the buffer; the etcd watch is then paused
// (closed, and opened again from the next revision once half the buffer is
// sent), so catching up on history goes at the consumer's pace in bounded
// memory: BufferEvents plus the events of one revision. A buffer that stays
// full for StallTimeout ends the stream with RESOURCE_EXHAUSTED
// (SLOW_CONSUMER), naming the last revision sent in full. Streams
// are bounded per replica (MaxStreams), and EndWatches (at shutdown,
// before the gRPC server's GracefulStop, which would otherwise wait for
// them) ends every stream with UNAVAILABLE/SHUTTING_DOWN.

// WatchOptions bound WatchMembership streams; zero fields take the defaults.
type WatchOptions struct {
	// ProgressInterval is how often an idle stream gets a progress message;
	// 5s.
	ProgressInterval time.Duration
	// BufferEvents is how many events a stream may hold for a consumer that
	// has not read them; past it the stream's etcd watch pauses until half
	// of them are sent (StallTimeout bounds the pause). 10,000.
	BufferEvents int
	// MaxStreams is how many streams a replica serves at once; 256.
	MaxStreams int
	// StallTimeout is how long a stream's buffer may stay full before the
	// stream ends with RESOURCE_EXHAUSTED; 30s. While it is full the etcd
	// watch is paused, so a consumer catching up on history reads at its
	// own pace.
	StallTimeout time.Duration
}

// Defaults of WatchOptions.
const (
	DefaultWatchProgressInterval = 5 * time.Second
	DefaultWatchBufferEvents     = 10000
	DefaultMaxWatchStreams       = 256
	DefaultWatchStallTimeout     = 30 * time.Second
)

type watchStreams struct {
	st   *store.Store
	cli  *clientv3.Client
	opts WatchOptions

	mu     sync.Mutex
	n      int
	ended  bool
	cancel map[*int]context.CancelCauseFunc
}

func newWatchStreams(st *store.Store, cli *clientv3.Client, o WatchOptions) *watchStreams {
	if o.ProgressInterval <= 0 {
		o.ProgressInterval = DefaultWatchProgressInterval
	}
	if o.BufferEvents <= 0 {
		o.BufferEvents = DefaultWatchBufferEvents
	}
	if o.MaxStreams <= 0 {
		o.MaxStreams = DefaultMaxWatchStreams
	}
	if o.StallTimeout <= 0 {
		o.StallTimeout = DefaultWatchStallTimeout
	}
	return &watchStreams{st: st, cli: cli, opts: o, cancel: map[*int]context.CancelCauseFunc{}}
}

// watchLimitError is a stream refused or ended for a limit.
type watchLimitError struct {
	reason, msg string
	meta        map[string]string
}

func (e *watchLimitError) Error() string { return e.msg }

// EndWatches ends every WatchMembership stream (UNAVAILABLE, SHUTTING_DOWN)
// and refuses new ones. Call it before the gRPC server's GracefulStop.
func (s *Server) EndWatches() {
	w := s.watches
	w.mu.Lock()
	defer w.mu.Unlock()
	w.ended = true
	for _, c := range w.cancel {
		c(store.ErrShuttingDown)
	}
}

func (w *watchStreams) start(ctx context.Context) (context.Context, func(), error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.ended {
		return nil, nil, store.ErrShuttingDown
	}
	if w.n >= w.opts.MaxStreams {
		return nil, nil, &watchLimitError{reason: ReasonTooManyStreams,
			msg: "this membership-server serves " + itoa(int64(w.opts.MaxStreams)) + " watch streams already (--max-watch-streams); retry later or on another replica"}
	}
	w.n++
	ctx, cancel := context.WithCancelCause(ctx)
	key := new(int)
	w.cancel[key] = cancel
	return ctx, func() {
		cancel(nil)
		w.mu.Lock()
		delete(w.cancel, key)
		w.n--
		w.mu.Unlock()
	}, nil
}

// WatchMembership streams membership changes.
func (s *Server) WatchMembership(req *membershipv1.WatchMembershipRequest, stream membershipv1.MembershipService_WatchMembershipServer) error {
	ctx := stream.Context()
	f := store.WatchFilter{Room: req.GetRoom(), User: req.GetUser(), Socket: req.GetSocketId()}
	err := func() error {
		if f.Room != "" {
			if err := validateRoom("room", f.Room); err != nil {
				return err
			}
		}
		if f.User != "" {
			if err := validateUser("user", f.User); err != nil {
				return err
			}
		}
		if f.Socket != "" {
			if _, err := parseSocketID("socket_id", f.Socket); err != nil {
				return err
			}
		}
		if req.GetAfterRevision() < 0 {
			return invalid("after_revision", "must be 0 (from now) or a revision")
		}
		return nil
	}()
	if err != nil {
		return toStatus(ctx, s.log, err)
	}
	wctx, done, err := s.watches.start(ctx)
	if err != nil {
		return toStatus(ctx, s.log, err)
	}
	defer done()
	return toStatus(ctx, s.log, s.watches.serve(wctx, f, req.GetAfterRevision(), stream))
}

// serve runs the etcd watch on a goroutine of its own into a bounded buffer
// and sends from it until the stream ends.
func (w *watchStreams) serve(ctx context.Context, f store.WatchFilter, after int64, stream membershipv1.MembershipService_WatchMembershipServer) error {
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var (
		mu        sync.Mutex
		queue     []store.WatchBatch
		events    int   // in queue
		sentRev   int64 // the last revision sent in full
		wake      = make(chan struct{}, 1)
		drained   = make(chan struct{}, 1) // the sender took a batch
		ended     = make(chan error, 1)
		watchDone = make(chan struct{}) // closed when the etcd watch has ended
	)
	go func() {
		resume := func(ctx context.Context) error {
			t := time.NewTimer(w.opts.StallTimeout)
			defer t.Stop()
			for {
				mu.Lock()
				n, last := events, sentRev
				mu.Unlock()
				if n <= w.opts.BufferEvents/2 {
					return nil
				}
				select {
				case <-ctx.Done():
					return ctx.Err()
				case <-drained:
				case <-t.C:
					err := &watchLimitError{reason: ReasonSlowConsumer,
						msg: "the consumer left " + itoa(int64(n)) + " events unread for " + w.opts.StallTimeout.String() +
							" (--watch-buffer-events, --watch-stall-timeout); resume after revision " + itoa(last),
						meta: map[string]string{"revision": itoa(last)}}
					cancel(err)
					return err
				}
			}
		}
		err := w.st.WatchMembership(ctx, w.cli, f, store.WatchOptions{After: after, ProgressEvery: w.opts.ProgressInterval, Resume: resume}, func(b store.WatchBatch) error {
			mu.Lock()
			queue = append(queue, b)
			events += len(b.Events)
			full := events > w.opts.BufferEvents
			mu.Unlock()
			select {
			case wake <- struct{}{}:
			default:
			}
			if full {
				return store.ErrPause
			}
			return nil
		})
		ended <- err
		close(watchDone)
	}()
	// The sends run on a goroutine of their own: a consumer that reads
	// nothing blocks a send until the RPC ends, and a stall or shutdown must
	// end the RPC all the same (returning from the handler cancels the
	// stream, which unblocks the send), or the stream would keep its place
	// under --max-watch-streams for as long as the consumer lives.
	sent := make(chan error, 1)
	go func() {
		sent <- func() error {
			for {
				mu.Lock()
				batch := queue
				queue = nil
				mu.Unlock()
				for _, b := range batch {
					if ctx.Err() != nil {
						break // the stream is ending: nothing more goes out
					}
					if err := stream.Send(toWatchResponse(b)); err != nil {
						cancel(err)
						<-ended
						return err
					}
					mu.Lock()
					events -= len(b.Events)
					sentRev = b.Revision
					mu.Unlock()
					select {
					case drained <- struct{}{}:
					default:
					}
				}
				if len(batch) > 0 && ctx.Err() == nil {
					continue
				}
				select {
				case <-wake:
				case err := <-ended:
					if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
						return c
					}
					if errors.Is(err, store.ErrFutureRevision) {
						return invalid("after_revision", err.Error())
					}
					if err == nil {
						err = ctx.Err()
					}
					return err
				}
			}
		}()
	}()
	select {
	case err := <-sent:
		return err
	case <-ctx.Done():
		// A stall (SLOW_CONSUMER), EndWatches, a failed send or the
		// consumer gone: end now, without waiting for a send that may be
		// blocked; the etcd watch ends at once.
		<-watchDone
		if c := context.Cause(ctx); c != nil && !errors.Is(c, context.Canceled) {
			return c
		}
		return ctx.Err()
	}
}

func toWatchResponse(b store.WatchBatch) *membershipv1.WatchMembershipResponse {
	if len(b.Events) == 0 {
		return &membershipv1.WatchMembershipResponse{Kind: &membershipv1.WatchMembershipResponse_Progress{
			Progress: &membershipv1.WatchProgress{Revision: b.Revision}}}
	}
	evs := make([]*membershipv1.MembershipEvent, len(b.Events))
	for i, e := range b.Events {
		evs[i] = &membershipv1.MembershipEvent{Type: eventTypes[e.Type], SocketId: e.Socket, User: e.User,
			Gateway: e.Gateway, Room: e.Room, Revision: e.Revision}
	}
	return &membershipv1.WatchMembershipResponse{Kind: &membershipv1.WatchMembershipResponse_Events{
		Events: &membershipv1.MembershipEvents{Revision: b.Revision, Events: evs}}}
}

var eventTypes = map[store.WatchEventType]membershipv1.EventType{
	store.EventConnected:    membershipv1.EventType_EVENT_TYPE_CONNECTED,
	store.EventDisconnected: membershipv1.EventType_EVENT_TYPE_DISCONNECTED,
	store.EventJoined:       membershipv1.EventType_EVENT_TYPE_JOINED,
	store.EventLeft:         membershipv1.EventType_EVENT_TYPE_LEFT,
}
