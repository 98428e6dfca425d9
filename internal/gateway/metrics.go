package gateway

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Values of the protocol label.
const (
	protocolNative   = "native"
	protocolSocketIO = "socketio"
)

// metrics are the gateway's own Prometheus metrics; sizes are read from the
// hub when scraped, counters are bumped where things happen.
type metrics struct {
	// delivered and slowClients are by protocol: native or socketio.
	delivered     *prometheus.CounterVec
	dropped       prometheus.Counter
	slowClients   *prometheus.CounterVec
	renewFailures prometheus.Counter
	waitApplied   prometheus.Histogram
	lagRevisions  prometheus.Gauge
	sessionsLost  prometheus.Counter
	authFailures  prometheus.Counter
	// removalsAbandoned counts sockets whose keys stay in etcd until the
	// lease ends, by reason: not_retryable.
	removalsAbandoned *prometheus.CounterVec
	// recordsReconciled counts socket records found in etcd without a socket.
	recordsReconciled prometheus.Counter
	// resumes counts resume attempts by outcome (resume.go).
	resumes *prometheus.CounterVec
	// drainDetached counts sockets a drain closed and kept resumable (drain.go).
	drainDetached prometheus.Counter
	// handoffs counts resumes across gateways by side and outcome, and
	// forwarded the late messages forwarded after one (handoff.go).
	handoffs  *prometheus.CounterVec
	forwarded *prometheus.CounterVec
}

func newMetrics(reg prometheus.Registerer, g *Gateway) *metrics {
	m := &metrics{
		delivered: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_broadcast_deliveries_total", Help: "Messages queued for local sockets by Deliver (broadcasts and blasts), by the socket's protocol: native (/ws) or socketio (/socket.io/)."},
			[]string{"protocol"}),
		dropped: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_broadcast_dropped_total", Help: "Messages not queued because the socket's queue was full or it was closing."}),
		slowClients: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_slow_client_disconnects_total", Help: "Sockets disconnected (native: close 1013; socketio: the Engine.IO session closed) because their send queue was full: --send-queue frames or --max-socket-queue-bytes bytes not yet written; by protocol: native or socketio."},
			[]string{"protocol"}),
		renewFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_lease_keepalive_failures_total", Help: "Lease renewals that failed (the lease is still proven alive until its deadline)."}),
		sessionsLost: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_sessions_lost_total", Help: "Times the gateway could not prove its lease alive and closed every socket (1012)."}),
		authFailures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_auth_failures_total", Help: "WebSocket handshakes refused with 401 for a missing or invalid token."}),
		removalsAbandoned: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_socket_removals_abandoned_total",
			Help: "Closed sockets whose etcd keys could not be removed and stay until the gateway's lease ends, by reason: not_retryable (an error retrying cannot cure, e.g. a transaction past etcd's limits)."},
			[]string{"reason"}),
		recordsReconciled: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_socket_records_reconciled_total",
			Help: "Socket records of the gateway's lease found in etcd without an open or closing socket, and removed."}),
		resumes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_resumes_total",
			Help: "Native sockets' resume attempts (/ws?resume_token=…) by outcome: resumed, or the resume_error: expired, unknown, too_far_behind, gateway_lost."},
			[]string{"outcome"}),
		drainDetached: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "gateway_drain_detached_sockets_total",
			Help: "Native sockets a drain (SIGTERM with --drain-timeout) closed with 1012 and kept detached and resumable on another gateway."}),
		handoffs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_handoffs_total",
			Help: "Resumes of a socket held by another gateway, by side (to: the gateway the client reconnected to; from: the one that held the socket) and outcome: handed_off, aborted (undone, the socket stays on its gateway), failed, or the resume_error (expired, unknown, too_far_behind, gateway_lost)."},
			[]string{"side", "outcome"}),
		forwarded: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "gateway_handoff_forwarded_messages_total",
			Help: "Messages for a socket handed off to another gateway that reached this one after the handoff (a Broadcast of a revision below the move's), by result: forwarded, or lost (the new gateway could not be reached or no longer holds the socket)."},
			[]string{"result"}),
		waitApplied: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "gateway_apply_wait_seconds",
			Help:    "Time Deliver and WaitApplied waited for the membership index to reach the caller's revision.",
			Buckets: []float64{.0001, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
		}),
		lagRevisions: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "gateway_apply_lag_revisions", Help: "etcd's revision in the latest watch response minus the revision the membership index has applied."}),
	}
	for _, p := range []string{protocolNative, protocolSocketIO} {
		m.delivered.WithLabelValues(p) // exported as 0 from the start
		m.slowClients.WithLabelValues(p)
	}
	for _, o := range []string{resumeOK, resumeExpired, resumeUnknown, resumeTooFarBehind, resumeGatewayLost} {
		m.resumes.WithLabelValues(outcomeLabel(o)) // exported as 0 from the start
	}
	for _, side := range []string{"from", "to"} {
		for _, o := range []string{handoffDone, handoffAborted, handoffFailed, resumeExpired, resumeUnknown, resumeTooFarBehind, resumeGatewayLost} {
			m.handoffs.WithLabelValues(side, outcomeLabel(o)) // exported as 0 from the start
		}
	}
	m.forwarded.WithLabelValues("forwarded")
	m.forwarded.WithLabelValues("lost")
	for _, reason := range []string{"not_retryable"} {
		m.removalsAbandoned.WithLabelValues(reason) // exported as 0 from the start
	}
	reg.MustRegister(m.delivered, m.dropped, m.slowClients, m.renewFailures, m.sessionsLost, m.authFailures, m.removalsAbandoned, m.recordsReconciled, m.resumes, m.drainDetached, m.handoffs, m.forwarded, m.waitApplied, m.lagRevisions,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_draining",
			Help: "1 while the gateway drains (SIGTERM with --drain-timeout): it takes no new sockets and waits for its detached ones to resume elsewhere; 0 otherwise."},
			func() float64 {
				if g.Draining() {
					return 1
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_drain_duration_seconds",
			Help: "How long the drain took, or has taken so far (at most --drain-timeout); 0 before a drain."},
			g.drainSeconds),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_sockets", Help: "Open sockets."},
			func() float64 { return float64(g.hub.count()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_protocol_sockets", Help: "Open sockets by client protocol: native (/ws) or socketio (/socket.io/).",
			ConstLabels: prometheus.Labels{"protocol": "native"}},
			func() float64 { return float64(g.hub.count() - g.hub.countSIO()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_protocol_sockets", Help: "Open sockets by client protocol: native (/ws) or socketio (/socket.io/).",
			ConstLabels: prometheus.Labels{"protocol": "socketio"}},
			func() float64 { return float64(g.hub.countSIO()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_socket_removals_pending",
			Help: "Closed sockets whose keys the gateway has yet to delete from etcd."},
			func() float64 {
				if s := g.currentSession(); s != nil {
					return float64(s.removals.len())
				}
				return 0
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_detached_sockets",
			Help: "Native sockets whose connection failed and that stay resumable (--resume-window), still members of their rooms."},
			func() float64 { return float64(g.resumes.detached.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_resume_buffered_bytes",
			Help: "Bytes of message frames resumable sockets keep for a resume, written ones included, each frame counted with 32 bytes of bookkeeping (per socket bounded by --resume-buffer-bytes; a room's sockets share its frames, so the memory held is at most this)."},
			func() float64 { return float64(g.resumes.bytes.Load()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_rooms", Help: "Rooms with at least one local member."},
			func() float64 { r, _ := g.hub.sizes(); return float64(r) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_memberships", Help: "Memberships of local sockets."},
			func() float64 { _, m := g.hub.sizes(); return float64(m) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_lease_proof_seconds",
			Help: "How long the lease is still proven alive without another renewal (0: no live lease)."},
			func() float64 {
				s := g.currentSession()
				if s == nil {
					return 0
				}
				return max(0, time.Duration(s.aliveUntil.Load()-monoNow()).Seconds())
			}),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "gateway_applied_revision", Help: "etcd revision the membership index has applied."},
			func() float64 { rev, _ := g.applied.Get(); return float64(rev) }),
	)
	return m
}
