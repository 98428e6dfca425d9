package store

import (
	"encoding/json"
	"io"
	"log/slog"
	"testing"
	"time"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkTargetIndexSocketConnectDisconnect is what the membership-server's
// index does to keep ListGateways' socket counts for one socket connecting
// and disconnecting: its record's create event (the value decoded for the
// socket's home) and delete event, 256 sockets on 4 gateways.
func BenchmarkTargetIndexSocketConnectDisconnect(b *testing.B) {
	s := &Store{k: keys{prefix: DefaultPrefix}}
	x := &TargetIndex{s: s, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
		rooms: map[string]*roomEntry{}, byName: newRoomTree(), records: map[string]GatewayRecord{},
		socketUsers: map[string]*userRef{}, sockets: newSocketCounts()}
	type sock struct{ key, value []byte }
	socks := make([]sock, 256)
	for i := range socks {
		gw := []string{"gw-a", "gw-b", "gw-c", "gw-d"}[i%4]
		id := NewSocketID(gw, clientv3.LeaseID(i%4+1))
		v, err := json.Marshal(SocketRecord{Gateway: gw, Lease: id.Lease, ConnectedAt: time.Now(), User: "user"})
		if err != nil {
			b.Fatal(err)
		}
		socks[i] = sock{[]byte(s.k.socket(id.String())), v}
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		k := socks[i%len(socks)]
		x.applyLocked(&clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: k.key, Value: k.value, CreateRevision: 2, ModRevision: 2}})
		x.applyLocked(&clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: k.key, ModRevision: 3}})
	}
	if len(x.sockets.byGateway) != 0 {
		b.Fatalf("counts left: %v", x.sockets.byGateway)
	}
}
