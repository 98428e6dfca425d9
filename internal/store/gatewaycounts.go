package store

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"

	"go.etcd.io/etcd/api/v3/mvccpb"
	"go.etcd.io/etcd/api/v3/v3rpc/rpctypes"
	clientv3 "go.etcd.io/etcd/client/v3"
)

// Socket counts per gateway in the TargetIndex (ListGateways).
//
// The index's one watch covers sockets/ too. Each socket record counts
// under its home gateway (SocketRecord.Home): a record created adds one
// there, a record deleted takes one away, a record put again over itself
// (a detach, a move's last step) moves the count when its home changed. A
// delete event carries no value, so the home of a deleted record is the one
// its id names (its origin) unless the index remembers otherwise: only
// sockets whose home differs from their origin (moved ones, move.go) get
// an entry, so the memory is one counter per gateway plus one entry per
// moved socket, and each connect or disconnect costs one map update. The
// listing reads every socket record once (values, to learn homes), at the
// index's start and after a compaction that outran its watch.

// GatewayInfo is a registered gateway as the index holds it.
type GatewayInfo struct {
	Record GatewayRecord
	// Sockets counts the socket records whose home is this gateway.
	Sockets int64
}

// socketCounts is the index's per-gateway count of sockets.
type socketCounts struct {
	byGateway map[string]int64  // home gateway → socket records
	moved     map[string]string // socket id → home, where it is not the id's origin
}

func newSocketCounts() socketCounts {
	return socketCounts{byGateway: map[string]int64{}, moved: map[string]string{}}
}

// decodeSocketKey returns the socket id of a sockets/{socket} record key,
// as written and parsed; ok is false for any other key (a move marker
// sockets/{socket}/move included).
func (s *Store) decodeSocketKey(key string) (id string, sid SocketID, ok bool) {
	id, ok = strings.CutPrefix(key, s.k.socketsPrefix())
	if !ok || strings.Contains(id, "/") {
		return "", SocketID{}, false
	}
	sid, err := ParseSocketID(id)
	return id, sid, err == nil
}

// homeOf is the gateway a socket record's value names as its home; a value
// that does not decode counts at the id's origin (the record exists).
func homeOf(sid SocketID, value []byte) string {
	// Only the home's fields: decoding connected_at and the rest would cost
	// each connect a time parse and more allocations for nothing.
	var home struct {
		Gateway string           `json:"gateway"`
		Lease   clientv3.LeaseID `json:"lease"`
	}
	if json.Unmarshal(value, &home) != nil {
		return sid.Gateway
	}
	return SocketRecord{Gateway: home.Gateway, Lease: home.Lease}.Home(sid).Gateway
}

// put counts the record of socket id (sid parsed) written with value
// (create: new).
func (c *socketCounts) put(id string, sid SocketID, value []byte, create bool) {
	home := homeOf(sid, value)
	if !create {
		old := sid.Gateway
		if h, ok := c.moved[id]; ok {
			old = h
		}
		if old == home {
			return
		}
		c.add(old, -1)
	}
	c.add(home, 1)
	if home != sid.Gateway {
		c.moved[id] = home
	} else {
		delete(c.moved, id)
	}
}

// remove uncounts the deleted record of socket id (sid parsed).
func (c *socketCounts) remove(id string, sid SocketID) {
	home := sid.Gateway
	if h, ok := c.moved[id]; ok {
		home = h
		delete(c.moved, id)
	}
	c.add(home, -1)
}

func (c *socketCounts) add(gw string, d int64) {
	if n := c.byGateway[gw] + d; n > 0 {
		c.byGateway[gw] = n
	} else {
		delete(c.byGateway, gw)
	}
}

// applySocketLocked applies a watch event of key when it is a socket
// record's; it reports whether it was.
func (x *TargetIndex) applySocketLocked(key string, ev *clientv3.Event) bool {
	id, sid, ok := x.s.decodeSocketKey(key)
	if !ok {
		return false
	}
	if ev.Type == mvccpb.DELETE {
		x.sockets.remove(id, sid)
	} else {
		x.sockets.put(id, sid, ev.Kv.Value, ev.IsCreate())
	}
	return true
}

// listSockets counts the socket records at rev.
func (x *TargetIndex) listSockets(ctx context.Context, rev int64) (socketCounts, error) {
	c := newSocketCounts()
	prefix := x.s.k.socketsPrefix()
	_, err := x.s.scan(ctx, prefix, prefix, rev, false, func(kv *mvccpb.KeyValue) bool {
		if id, sid, ok := x.s.decodeSocketKey(string(kv.Key)); ok {
			c.put(id, sid, kv.Value, true)
		}
		return true
	})
	if err != nil {
		return socketCounts{}, fmt.Errorf("list sockets: %w", err)
	}
	return c, nil
}

// ListGateways returns up to limit (≥ 1) registered gateways with their
// socket counts, in byte-wise order of their ids, starting after the
// gateway named after ("" for the first page); next is the last id of the
// page when more follow. Like ListRooms, the page is one snapshot of the
// index at rev, at least etcd's current revision when the call began. A page
// costs a sort of the gateways' ids (there are few) and the page.
func (x *TargetIndex) ListGateways(ctx context.Context, after string, limit int) (gws []GatewayInfo, next string, rev int64, err error) {
	if _, err := x.catchUp(ctx); err != nil {
		return nil, "", 0, err
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	ids := make([]string, 0, len(x.records))
	for id := range x.records {
		if id > after {
			ids = append(ids, id)
		}
	}
	slices.Sort(ids)
	if len(ids) > limit {
		ids = ids[:limit]
		next = ids[limit-1]
	}
	for _, id := range ids {
		gws = append(gws, GatewayInfo{Record: x.records[id], Sockets: x.sockets.byGateway[id]})
	}
	return gws, next, x.rev, nil
}

// LeaseTTL reads a lease's remaining and granted TTL in seconds from etcd;
// remaining is -1 for a lease that has expired or been revoked.
func (x *TargetIndex) LeaseTTL(ctx context.Context, lease clientv3.LeaseID) (remaining, granted int64, err error) {
	resp, err := x.cli.TimeToLive(ctx, lease)
	if err != nil {
		if errors.Is(err, rpctypes.ErrLeaseNotFound) {
			return -1, 0, nil
		}
		return 0, 0, fmt.Errorf("lease time to live: %w", err)
	}
	return resp.TTL, resp.GrantedTTL, nil
}
