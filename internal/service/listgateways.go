package service

// This file holds ListGateways.

import (
	"context"

	"google.golang.org/protobuf/types/known/timestamppb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

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
	resp := &membershipv1.ListGatewaysResponse{Revision: rev, NextPageToken: encodePageToken(next)}
	for _, g := range gws {
		ttl, granted, err := s.targets.LeaseTTL(etcdCtx(ctx), g.Record.Lease)
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
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
