package store

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
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
	var out []SocketID
	rev, err := s.scanValues(ctx, s.k.socketsPrefix(), 0, func(key string, value []byte, _ int64) error {
		sid, err := ParseSocketID(strings.TrimPrefix(key, s.k.socketsPrefix()))
		if err != nil {
			return nil
		}
		var rec SocketRecord
		if err := json.Unmarshal(value, &rec); err != nil {
			return corrupt("socket record", []byte(key), err)
		}
		if rec.User == user {
			out = append(out, sid)
		}
		return nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("list sockets of user: %w", err)
	}
	return out, rev, nil
}
