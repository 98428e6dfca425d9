package service

import "github.com/prometheus/client_golang/prometheus"

// metrics are the membership-server's own Prometheus metrics, beside the gRPC
// server's and the etcd client's (internal/app).
type metrics struct {
	delivered      prometheus.Counter
	failedGateways prometheus.Counter
}

func newMetrics(reg prometheus.Registerer, s *Server) *metrics {
	m := &metrics{
		delivered: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "membership_broadcast_deliveries_total", Help: "Messages gateways queued for sockets on this server's Broadcast and Blast calls."}),
		failedGateways: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "membership_broadcast_gateway_failures_total", Help: "Gateways a Broadcast or Blast could not deliver through."}),
	}
	size := func(pick func(rooms, memberships, gateways int) int) func() float64 {
		return func() float64 { return float64(pick(s.targets.Sizes())) }
	}
	reg.MustRegister(m.delivered, m.failedGateways,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "membership_rooms", Help: "Rooms with at least one member, cluster-wide."},
			size(func(r, _, _ int) int { return r })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "membership_memberships", Help: "Memberships, cluster-wide."},
			size(func(_, m, _ int) int { return m })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "membership_gateways", Help: "Registered gateways."},
			size(func(_, _, g int) int { return g })),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "membership_gateway_connections",
			Help: "gRPC connections from this server to gateways open now: one per registered gateway it has called, and one per call to a gateway not (or no longer) registered."},
			func() float64 { return float64(s.gateways.Open()) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "membership_coalesced_transactions_total",
			Help: "etcd transactions that carried coalesced Join/Leave calls."},
			func() float64 { t, _ := s.store.BatchStats(); return float64(t) }),
		prometheus.NewCounterFunc(prometheus.CounterOpts{Name: "membership_coalesced_calls_total",
			Help: "Join/Leave calls carried by coalesced transactions."},
			func() float64 { _, c := s.store.BatchStats(); return float64(c) }),
	)
	return m
}
