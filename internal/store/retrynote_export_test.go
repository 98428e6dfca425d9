package store

import "go.etcd.io/etcd/api/v3/etcdserverpb"

// WrapKV puts wrap around the etcd KV client every transaction of s is sent
// through (call it before StartBatching), so that a test can lose an
// attempt's answer the way a dying etcd leader does.
func (s *Store) WrapKV(wrap func(etcdserverpb.KVClient) etcdserverpb.KVClient) {
	s.pb = wrap(s.pb)
	s.tw = newTermWatch(s.pb, s.k.prefix)
}
