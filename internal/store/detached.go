package store

import (
	"context"
	"encoding/json"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// SetSocketRecord rewrites the record of a socket that exists, keeping the
// lease it is on (clientv3.WithIgnoreLease): the gateway marks a socket whose
// connection dropped as detached (rec.DetachedSince set) and clears the mark
// when it resumes. The record's create revision does not change, so Join's
// guard and the membership stream (which emits connected only when a record
// is created) see the same socket. It fails with ErrSocketNotFound when the
// record is gone (the socket was removed or disconnected): a removed socket
// is never written back. It is guarded too by the record being on the
// lease of rec's home (rec.Home): a gateway that handed the socket off to
// another (move.go) can no longer write it, and gets ErrSocketNotFound.
func (s *Store) SetSocketRecord(ctx context.Context, socket SocketID, rec SocketRecord) (int64, error) {
	b, err := json.Marshal(rec)
	if err != nil {
		return 0, err
	}
	key := s.k.socket(socket.String())
	resp, err := s.kv.Txn(ctx).
		If(socketExists(key), clientv3.Compare(clientv3.LeaseValue(key), "=", int64(rec.Home(socket).Lease))).
		Then(clientv3.OpPut(key, string(b), clientv3.WithIgnoreLease())).
		Commit()
	if err != nil {
		return 0, fmt.Errorf("set socket record: %w", err)
	}
	if !resp.Succeeded {
		return 0, ErrSocketNotFound
	}
	return resp.Header.Revision, nil
}
