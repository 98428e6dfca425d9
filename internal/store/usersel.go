package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SocketsOfUser lists the sockets whose records name user, all read at one
// revision, which it returns. A user with no sockets has none; that is not
// an error.
//
// It scans every socket record (1,000 at a time, with values) and filters by
// the record's user: its cost is that of all connected sockets, whoever the
// user. It is the one place that answers "which sockets has this user", so
// an index of users can replace its body alone.
func (s *Store) SocketsOfUser(ctx context.Context, user string) ([]SocketID, int64, error) {
	prefix := s.k.socketsPrefix()
	end := clientv3.GetPrefixRangeEnd(prefix)
	start := prefix
	var rev int64
	var out []SocketID
	for {
		opts := []clientv3.OpOption{clientv3.WithRange(end), clientv3.WithLimit(1000)}
		if rev != 0 {
			opts = append(opts, clientv3.WithRev(rev))
		}
		resp, err := s.kv.Get(ctx, start, opts...)
		if err != nil {
			return nil, 0, fmt.Errorf("list sockets of user: %w", err)
		}
		if rev == 0 {
			rev = resp.Header.Revision
		}
		for _, kv := range resp.Kvs {
			sid, err := ParseSocketID(strings.TrimPrefix(string(kv.Key), prefix))
			if err != nil {
				continue
			}
			var rec SocketRecord
			if err := json.Unmarshal(kv.Value, &rec); err != nil {
				return nil, 0, corrupt("socket record", kv.Key, err)
			}
			if rec.User == user {
				out = append(out, sid)
			}
		}
		if !resp.More || len(resp.Kvs) == 0 {
			return out, rev, nil
		}
		start = string(resp.Kvs[len(resp.Kvs)-1].Key) + "\x00"
	}
}
