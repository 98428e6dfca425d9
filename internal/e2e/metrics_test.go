package e2e

import (
	"context"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"testing"
	"time"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/testutil"
)

// scrape returns the Prometheus text exposition at url.
func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s: %s", url, resp.Status)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// metricValue finds the first sample whose name and labels match pattern.
func metricValue(t *testing.T, text, pattern string) float64 {
	t.Helper()
	m := regexp.MustCompile(`(?m)^` + pattern + `\s+(\S+)$`).FindStringSubmatch(text)
	if m == nil {
		t.Fatalf("no sample matching %s", pattern)
	}
	v, err := strconv.ParseFloat(m[1], 64)
	if err != nil {
		t.Fatal(err)
	}
	return v
}

func TestBothBinariesExposeMetricsAfterTraffic(t *testing.T) {
	e := testutil.StartEtcd(t)
	metricsAddr := testutil.FreeAddr(t)
	api, _ := startServerProcess(t, e.Endpoint, "--metrics-addr", metricsAddr)
	g := startGatewayProcess(t, e, "gw1", 10*time.Second)
	s := dial(t, g.WSURL)
	ctx := context.Background()
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: "r", WaitFor: membershipv1.WaitFor_WAIT_FOR_APPLY}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Broadcast(ctx, &membershipv1.BroadcastRequest{Rooms: []string{"r"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: s.ID, Room: ""}); err == nil {
		t.Fatal("bad join accepted")
	}

	server := scrape(t, "http://"+metricsAddr+"/metrics")
	for pattern, atLeast := range map[string]float64{
		`grpc_server_handled_total\{grpc_code="OK",grpc_method="Join",grpc_service="membership.v1.MembershipService",grpc_type="unary"\}`:              1,
		`grpc_server_handled_total\{grpc_code="InvalidArgument",grpc_method="Join",grpc_service="membership.v1.MembershipService",grpc_type="unary"\}`: 1,
		`grpc_server_handling_seconds_count\{grpc_method="Broadcast",grpc_service="membership.v1.MembershipService",grpc_type="unary"\}`:               1,
		`membership_etcd_request_duration_seconds_count\{code="OK",method="/etcdserverpb.KV/Txn"\}`:                                                    1,
		`membership_broadcast_deliveries_total`:       1,
		`membership_memberships`:                      1,
		`membership_rooms`:                            1,
		`membership_gateways`:                         1,
		`membership_gateway_connections`:              1,
		`membership_coalesced_calls_total`:            1,
		`membership_broadcast_gateway_failures_total`: 0,
		`membership_inflight_payload_bytes`:           0,
		`membership_inflight_payload_refused_total`:   0,
	} {
		if v := metricValue(t, server, pattern); v < atLeast {
			t.Errorf("membership-server %s = %v, want at least %v", pattern, v, atLeast)
		}
	}
	if resp, err := http.Get("http://" + metricsAddr + "/healthz"); err != nil || resp.StatusCode != 200 {
		t.Fatalf("membership-server /healthz: %v %v", resp, err)
	}

	gateway := scrape(t, "http"+g.WSURL[2:len(g.WSURL)-3]+"/metrics")
	for pattern, atLeast := range map[string]float64{
		`gateway_sockets`:     1,
		`gateway_rooms`:       1,
		`gateway_memberships`: 1,
		`gateway_broadcast_deliveries_total\{protocol="native"\}`:      1,
		`gateway_broadcast_deliveries_total\{protocol="socketio"\}`:    0,
		`gateway_broadcast_dropped_total`:                              0,
		`gateway_slow_client_disconnects_total\{protocol="native"\}`:   0,
		`gateway_slow_client_disconnects_total\{protocol="socketio"\}`: 0,
		`gateway_lease_keepalive_failures_total`:                       0,
		`gateway_sessions_lost_total`:                                  0,
		`gateway_inflight_payload_bytes`:                               0,
		`gateway_inflight_payload_refused_total`:                       0,
		`gateway_apply_wait_seconds_count`:                             2,
		`gateway_apply_lag_revisions`:                                  0,
		`gateway_lease_proof_seconds`:                                  1,
		`gateway_applied_revision`:                                     1,
		`grpc_server_handled_total\{grpc_code="OK",grpc_method="Deliver",grpc_service="gateway.v1.GatewayService",grpc_type="unary"\}`: 1,
		`membership_etcd_request_duration_seconds_count\{code="OK",method="/etcdserverpb.Lease/LeaseGrant"\}`:                          1,
		`go_goroutines`: 1,
	} {
		if v := metricValue(t, gateway, pattern); v < atLeast {
			t.Errorf("gateway %s = %v, want at least %v", pattern, v, atLeast)
		}
	}
}

// A gateway given --metrics-addr serves /metrics there and no longer on its
// public --ws-addr.
func TestGatewayMetricsAddr(t *testing.T) {
	e := testutil.StartEtcd(t)
	metricsAddr := testutil.FreeAddr(t)
	g := startGatewayProcess(t, e, "gw1", 10*time.Second, "--metrics-addr", metricsAddr)
	dial(t, g.WSURL)
	if v := metricValue(t, scrape(t, "http://"+metricsAddr+"/metrics"), `gateway_sockets`); v != 1 {
		t.Fatalf("gateway_sockets = %v on --metrics-addr", v)
	}
	resp, err := http.Get("http" + g.WSURL[2:len(g.WSURL)-3] + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusNotFound {
		t.Fatalf("/metrics on --ws-addr: %d, want 404", resp.StatusCode)
	}
}
