package service

// This file holds the read calls: ListRooms, ListMembers and GetSocket.

import (
	"context"
	"errors"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

// ListRooms lists all rooms with their sizes, or one socket's rooms.
func (s *Server) ListRooms(ctx context.Context, req *membershipv1.ListRoomsRequest) (*membershipv1.ListRoomsResponse, error) {
	size, err := pageSize(req.GetPageSize())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	after, err := decodePageToken(req.GetPageToken())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	if req.GetSocketId() != "" {
		sid, err := parseSocketID("socket_id", req.GetSocketId())
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
		info, rev, err := s.store.GetSocket(etcdCtx(ctx), sid)
		if err != nil {
			return nil, toStatus(ctx, s.log, err)
		}
		resp := &membershipv1.ListRoomsResponse{Revision: rev}
		for _, room := range info.Rooms {
			if after != "" && room <= after {
				continue
			}
			if len(resp.Rooms) == size {
				resp.NextPageToken = encodePageToken(resp.Rooms[size-1].Name)
				break
			}
			resp.Rooms = append(resp.Rooms, &membershipv1.Room{Name: room})
		}
		return resp, nil
	}
	// A room shaped like a socket id may still be listed (written before such
	// names were refused): its name must page on like any other.
	if verr := store.ValidateRoom(after); after != "" && verr != nil && !errors.Is(verr, store.ErrRoomLikeSocketID) {
		return nil, toStatus(ctx, s.log, invalid("page_token", "not a token from a previous page"))
	}
	// Served from the broadcast target index, which keeps every room's count
	// in name order: after catching up with etcd's current revision, a page
	// costs a B-tree descent and the page itself.
	rooms, next, rev, err := s.targets.ListRooms(ctx, after, size)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &membershipv1.ListRoomsResponse{Revision: rev, NextPageToken: encodePageToken(next)}
	for _, r := range rooms {
		resp.Rooms = append(resp.Rooms, &membershipv1.Room{Name: r.Room, MemberCount: r.Members, UserCount: r.Users})
	}
	return resp, nil
}

// ListMembers lists a room's sockets.
func (s *Server) ListMembers(ctx context.Context, req *membershipv1.ListMembersRequest) (*membershipv1.ListMembersResponse, error) {
	err := validateRoom("room", req.GetRoom())
	size, after, perr := socketPage(req.GetPageSize(), req.GetPageToken())
	if err == nil {
		err = perr
	}
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	members, next, rev, err := s.store.ListMembers(etcdCtx(ctx), req.GetRoom(), after, size)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &membershipv1.ListMembersResponse{Revision: rev, NextPageToken: encodePageToken(next)}
	for _, m := range members {
		resp.Members = append(resp.Members, &membershipv1.Member{SocketId: m.SocketID, Gateway: m.Gateway, User: m.User, DetachedSince: detachedSince(m.DetachedSince)})
	}
	return resp, nil
}

// GetSocket describes one socket.
func (s *Server) GetSocket(ctx context.Context, req *membershipv1.GetSocketRequest) (*membershipv1.GetSocketResponse, error) {
	sid, err := parseSocketID("socket_id", req.GetSocketId())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	info, rev, err := s.store.GetSocket(etcdCtx(ctx), sid)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return &membershipv1.GetSocketResponse{Revision: rev, Socket: socketMessage(info)}, nil
}
