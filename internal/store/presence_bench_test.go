package store

import (
	"fmt"
	"io"
	"log/slog"
	"testing"

	"go.etcd.io/etcd/api/v3/mvccpb"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// BenchmarkTargetIndexJoinLeave is what the membership-server's index does
// for one Join and one Leave event (its share of a Join/Leave's cost), for
// sockets without a user and for sockets with one (the per-room user
// counts): 256 sockets, 64 users, 10 rooms, as in membership-bench's users
// scenario.
func BenchmarkTargetIndexJoinLeave(b *testing.B) {
	for _, withUsers := range []bool{false, true} {
		name := "no-user"
		if withUsers {
			name = "jwt-users"
		}
		b.Run(name, func(b *testing.B) {
			s := &Store{k: keys{prefix: DefaultPrefix}}
			x := &TargetIndex{s: s, log: slog.New(slog.NewTextHandler(io.Discard, nil)),
				rooms: map[string]*roomEntry{}, byName: newRoomTree(), records: map[string]GatewayRecord{},
				socketUsers: map[string]*userRef{}}
			socks := make([]string, 256)
			for i := range socks {
				socks[i] = NewSocketID("gw", clientv3.LeaseID(1)).String()
				if withUsers {
					x.applyLocked(&clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{
						Key: []byte(s.k.user(fmt.Sprintf("user-%d", i%64), socks[i])), CreateRevision: 1, ModRevision: 1}})
				}
			}
			keys := make([][]byte, len(socks))
			for i, id := range socks {
				keys[i] = []byte(s.k.room(fmt.Sprintf("tp-%d", i%10), id))
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := range b.N {
				k := keys[i%len(keys)]
				x.applyLocked(&clientv3.Event{Type: mvccpb.PUT, Kv: &mvccpb.KeyValue{Key: k, CreateRevision: 2, ModRevision: 2}})
				x.applyLocked(&clientv3.Event{Type: mvccpb.DELETE, Kv: &mvccpb.KeyValue{Key: k, ModRevision: 3}})
			}
		})
	}
}
