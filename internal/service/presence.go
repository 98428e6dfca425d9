package service

// This file holds GetRoom: a room's presence counts from the broadcast target
// index (store/presence.go), which keeps them incrementally.

import (
	"context"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

// GetRoom gives a room's member and user counts.
func (s *Server) GetRoom(ctx context.Context, req *membershipv1.GetRoomRequest) (*membershipv1.GetRoomResponse, error) {
	if err := validateRoom("room", req.GetRoom()); err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	p, rev, err := s.targets.Room(ctx, req.GetRoom())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &membershipv1.GetRoomResponse{Revision: rev, Room: &membershipv1.Room{
		Name: p.Room, MemberCount: p.Members, UserCount: p.Users,
	}}, nil
}
