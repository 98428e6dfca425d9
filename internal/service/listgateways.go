package service

// This file holds ListGateways.

import (
	"context"
	"sync"

	"google.golang.org/protobuf/types/known/timestamppb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

// leaseReadsInFlight bounds the LeaseTimeToLive calls one ListGateways
// has in flight.
const leaseReadsInFlight = 8

// ListGateways lists the registered gateways with their socket counts and
// leases.
func (s *Server) ListGateways(ctx context.Context, req *membershipv1.ListGatewaysRequest) (*membershipv1.ListGatewaysResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	after, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	// Records and socket counts come from the broadcast target index, which
	// keeps both from its watch; only the leases' TTLs are read from etcd.
	gws, next, rev, err := s.targets.ListGateways(ctx, after, size)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	// One LeaseTimeToLive per gateway, a few at a time: a page of many
	// gateways costs round trips in parallel, not in a row.
	ttls := make([][2]int64, len(gws))
	errs := make([]error, len(gws))
	sem := make(chan struct{}, leaseReadsInFlight)
	var wg sync.WaitGroup
	for i, g := range gws {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			ttls[i][0], ttls[i][1], errs[i] = s.targets.LeaseTTL(etcdCtx(ctx), g.Record.Lease)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
	}
	resp := &membershipv1.ListGatewaysResponse{Revision: rev, NextPageToken: encodePageToken(next)}
	for i, g := range gws {
		ttl, granted := ttls[i][0], ttls[i][1]
		gw := &membershipv1.Gateway{
			Id:                     g.Record.ID,
			GrpcAddr:               g.Record.GRPCAddr,
			SocketCount:            g.Sockets,
			LeaseId:                int64(g.Record.Lease),
			LeaseTtlSeconds:        ttl,
			LeaseGrantedTtlSeconds: granted,
			Version:                g.Record.Version,
		}
		if !g.Record.StartedAt.IsZero() {
			gw.StartedAt = timestamppb.New(g.Record.StartedAt)
		}
		resp.Gateways = append(resp.Gateways, gw)
	}
	return resp, nil
}
