package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Lifecycle is how both binaries run once their parts are built and their
// listeners open: it starts the parts, waits for SIGINT or SIGTERM (or for a
// part to fail), and stops them, all in one order with one set of timeouts.
//
// Parts start in the order they were added (by GRPC, HTTP and Go). Stop
// order:
//
//  1. gRPC health turns NOT_SERVING and Serving reports false, so load
//     balancers and probes stop sending before anything else stops; then,
//     in a stop asked for by a signal, Drain runs, every part still up;
//  2. the parts stop in the reverse of their start order, each given
//     StopTimeout: a Go part's context is canceled and it is waited for
//     (no longer: past it, the stop goes on and Run returns without it); an
//     HTTP server is Shutdown (idle connections closed, requests in flight
//     finished), then Closed when the timeout passes; a gRPC server is
//     GracefulStopped (calls in flight finished), then Stopped when the
//     timeout passes (a client that never finishes its request would
//     otherwise hold GracefulStop forever).
//
// A binary therefore adds what serves its own metrics first (it is scraped
// until the end) and what must go first last (the gateway's sessions: they
// close sockets and revoke its lease while the servers still answer).
type Lifecycle struct {
	// Log receives the stop's progress.
	Log *slog.Logger
	// Health is the gRPC health service of the binary's gRPC servers; nil:
	// none.
	Health *health.Server
	// Ready, when not nil, holds Health NOT_SERVING (and Serving false)
	// until it closes: a process whose parts are listening may not be able
	// to answer yet.
	Ready <-chan struct{}
	// StopTimeout bounds each part's graceful stop; 10s when zero.
	StopTimeout time.Duration
	// Drain, when not nil, runs in a stop begun by SIGINT or SIGTERM (not
	// by a part's failure) after step 1 and before any part stops, for as
	// long as it takes: it bounds itself (the gateway's --drain-timeout).
	// Its context ends at a second SIGINT or SIGTERM, which cuts it short.
	Drain func(ctx context.Context)

	parts []*part

	mu       sync.Mutex
	serving  bool
	stopping bool
}

// part is one thing a Lifecycle runs: run until stop is called.
type part struct {
	name string
	run  func() error
	// stop ends run, gracefully within ctx, forcibly once ctx is done.
	stop func(ctx context.Context) error
}

// GRPC serves srv on lis.
func (l *Lifecycle) GRPC(name string, srv *grpc.Server, lis net.Listener) {
	l.parts = append(l.parts, &part{name: name, run: func() error { return srv.Serve(lis) },
		stop: func(ctx context.Context) error {
			done := make(chan struct{})
			go func() { srv.GracefulStop(); close(done) }()
			select {
			case <-done:
				return nil
			case <-ctx.Done():
				srv.Stop()
				<-done
				return errors.New("calls in flight did not finish in time; stopped")
			}
		}})
}

// HTTP serves srv on lis.
func (l *Lifecycle) HTTP(name string, srv *http.Server, lis net.Listener) {
	l.parts = append(l.parts, &part{name: name, run: func() error { return srv.Serve(lis) },
		stop: func(ctx context.Context) error {
			if err := srv.Shutdown(ctx); err != nil {
				srv.Close()
				return fmt.Errorf("requests in flight did not finish in time; closed: %w", err)
			}
			return nil
		}})
}

// Go runs run until its context is canceled at stop. run returning before
// that, with an error or not, stops the binary.
func (l *Lifecycle) Go(name string, run func(ctx context.Context) error) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	l.parts = append(l.parts, &part{name: name,
		run: func() error { defer close(done); return run(ctx) },
		stop: func(stopCtx context.Context) error {
			cancel()
			select {
			case <-done:
				return nil
			case <-stopCtx.Done():
				return errors.New("did not end in time")
			}
		}})
}

// Serving reports whether the process is ready and not stopping: what a
// /healthz handler answers.
func (l *Lifecycle) Serving() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.serving
}

// Run starts every part and stops them all when ctx ends, SIGINT or SIGTERM
// arrives, or a part fails; it returns once the stop order has run, so
// within StopTimeout per part. The error is the first part's failure (nil
// after a signal or the end of ctx). Call it once.
//
// A Go part still running when its StopTimeout passes is not waited for:
// Run returns without it, and it ends with the process when the binary
// returns from main.
func (l *Lifecycle) Run(ctx context.Context) error {
	ctx, stopSignals := signal.NotifyContext(ctx, syscall.SIGINT, syscall.SIGTERM)
	defer stopSignals()
	if l.Health != nil && l.Ready != nil {
		l.Health.SetServingStatus("", healthpb.HealthCheckResponse_NOT_SERVING)
	}
	// Not an errgroup: its Wait joins every goroutine, and a part that
	// ignores its stop would hold Run forever.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var failOnce sync.Once
	var failed error
	fail := func(err error) { failOnce.Do(func() { failed = err; cancel() }) }
	for _, p := range l.parts {
		go func() {
			err := p.run()
			if l.isStopping() {
				return
			}
			if err == nil {
				err = errors.New("ended")
			}
			fail(fmt.Errorf("%s: %w", p.name, err))
		}()
	}
	if l.Ready == nil {
		l.markServing()
	} else {
		go func() {
			select {
			case <-l.Ready:
				l.markServing()
			case <-runCtx.Done():
			}
		}()
	}
	<-runCtx.Done()
	fail(nil) // a failure from now on is not the first
	l.stop(failed == nil)
	return failed
}

// markServing turns health SERVING unless the stop has begun.
func (l *Lifecycle) markServing() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.stopping || l.serving {
		return
	}
	l.serving = true
	if l.Health != nil {
		l.Health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	}
}

func (l *Lifecycle) isStopping() bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.stopping
}

// stop runs the stop order of the type's comment; signaled: the stop was
// asked for (a signal or the end of Run's context), so Drain runs.
func (l *Lifecycle) stop(signaled bool) {
	l.mu.Lock()
	l.stopping, l.serving = true, false
	l.mu.Unlock()
	log := l.Log
	if log == nil {
		log = slog.Default()
	}
	log.Info("shutting down")
	if l.Health != nil {
		l.Health.Shutdown() // NOT_SERVING, and later updates ignored
	}
	if l.Drain != nil && signaled {
		// Registered before the drain starts: a second signal from now on
		// ends it. (The first one's registration in Run also still holds,
		// so no signal kills the process meanwhile.)
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan struct{})
		go func() {
			select {
			case sig := <-sigs:
				log.Warn("second signal: ending the drain now", "signal", sig.String())
				cancel()
			case <-done:
			}
		}()
		l.Drain(ctx)
		close(done)
		signal.Stop(sigs)
		cancel()
	}
	timeout := l.StopTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	for i := len(l.parts) - 1; i >= 0; i-- {
		p := l.parts[i]
		ctx, cancel := context.WithTimeout(context.Background(), timeout)
		if err := p.stop(ctx); err != nil {
			log.Warn("stopping "+p.name, "err", err, "timeout", timeout)
		}
		cancel()
	}
}

// Listen listens on addr (TCP), the value of the flag named flagName of a
// binary whose flags are read from environment variables prefixed envPrefix
// (see ParseFlags). An address already in use is reported with the flag and
// the variable to change, since the operator's next step is to pick another
// address (where it was set) or stop the process holding it.
func Listen(addr, envPrefix, flagName string) (net.Listener, error) {
	lis, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, ListenError(err, addr, envPrefix, flagName)
	}
	return lis, nil
}

// ListenError explains err, a failure to listen on addr as set by the flag
// named flagName (or its environment variable, EnvName(envPrefix,
// flagName)): "ADDR is in use: set --FLAG (ENV) to a free address (…)" for
// an address in use, "--FLAG ADDR: …" otherwise. The result wraps err.
func ListenError(err error, addr, envPrefix, flagName string) error {
	if errors.Is(err, syscall.EADDRINUSE) {
		return fmt.Errorf("%s is in use: set --%s (%s) to a free address (%w)", addr, flagName, EnvName(envPrefix, flagName), err)
	}
	return fmt.Errorf("--%s %s: %w", flagName, addr, err)
}

// ListenErrorOf is ListenError for a component that opens listeners itself
// (the embedded etcd): flags maps each flag name to its address. An address
// in use is matched to its flag by the failed listener's address (or, for a
// flag naming a host that resolved differently, by port); other errors are
// returned as they are.
func ListenErrorOf(err error, envPrefix string, flags map[string]string) error {
	var op *net.OpError
	if !errors.Is(err, syscall.EADDRINUSE) || !errors.As(err, &op) || op.Addr == nil {
		return err
	}
	failed := op.Addr.String()
	_, failedPort, _ := net.SplitHostPort(failed)
	for name, addr := range flags {
		if addr == failed {
			return ListenError(err, addr, envPrefix, name)
		}
	}
	for name, addr := range flags {
		if _, port, e := net.SplitHostPort(addr); e == nil && port == failedPort {
			return ListenError(err, addr, envPrefix, name)
		}
	}
	return err
}
