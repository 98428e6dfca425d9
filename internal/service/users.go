package service

// This file holds the user selector of Join and Leave, and ListSockets: the
// calls that act on all of a user's sockets (store/users.go).

import (
	"context"
	"strings"
	"time"

	"google.golang.org/protobuf/types/known/timestamppb"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

// validateUser checks a user name taken from field: what a gateway accepts
// as a token's subject (store.ValidateUser).
func validateUser(field, user string) error {
	if err := store.ValidateUser(user); err != nil {
		return invalid(field, err.Error())
	}
	return nil
}

// selectsUser tells whether a Join or Leave selects by user, and checks that
// user is its only selector.
func selectsUser(user, one string, many []string) (bool, error) {
	if user == "" {
		return false, nil
	}
	if one != "" || len(many) > 0 {
		return true, invalid("user", "set only one of socket_id (with socket_ids) and user")
	}
	return true, validateUser("user", user)
}

// changeUser commits a Join or Leave of every socket of user (see
// ListSocketsRequest in the proto for the contract), then waits for the
// sockets' gateways when asked to.
func (s *Server) changeUser(ctx context.Context, user, room string, wait membershipv1.WaitFor, join bool) (store.UserChangeResult, error) {
	err := validateRoom("room", room)
	if err == nil {
		err = validateWaitFor(wait)
	}
	if err != nil {
		return store.UserChangeResult{}, err
	}
	perTxn := s.store.SocketsPerChange()
	if join && s.store.MaxRoomsPerSocket() > 0 {
		perTxn = min(perTxn, s.store.SocketsPerLimitedJoin())
	}
	res, err := s.store.ChangeUser(etcdCtx(ctx), user, room, join, perTxn)
	err = tooLarge("room", err)
	if err == nil && wait == membershipv1.WaitFor_WAIT_FOR_APPLY && len(res.Sockets) > 0 {
		err = s.waitApplied(ctx, res.Homes, res.Revision)
	}
	return res, err
}

// joinUser is Join with the user selector.
func (s *Server) joinUser(ctx context.Context, req *membershipv1.JoinRequest) (*membershipv1.JoinResponse, error) {
	res, err := s.changeUser(ctx, req.GetUser(), req.GetRoom(), req.GetWaitFor(), true)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &membershipv1.JoinResponse{AlreadyMember: true, Revision: res.Revision, Results: userResults(res)}
	for _, was := range res.WasMember {
		resp.AlreadyMember = resp.AlreadyMember && was
	}
	return resp, nil
}

// leaveUser is Leave with the user selector.
func (s *Server) leaveUser(ctx context.Context, req *membershipv1.LeaveRequest) (*membershipv1.LeaveResponse, error) {
	res, err := s.changeUser(ctx, req.GetUser(), req.GetRoom(), req.GetWaitFor(), false)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &membershipv1.LeaveResponse{Revision: res.Revision, Results: userResults(res)}
	for _, was := range res.WasMember {
		resp.WasMember = resp.WasMember || was
	}
	return resp, nil
}

func userResults(res store.UserChangeResult) []*membershipv1.SocketResult {
	out := make([]*membershipv1.SocketResult, len(res.Sockets))
	for i, sock := range res.Sockets {
		out[i] = &membershipv1.SocketResult{SocketId: sock.String(), WasMember: res.WasMember[i]}
	}
	return out
}

// ListSockets lists a user's sockets.
func (s *Server) ListSockets(ctx context.Context, req *membershipv1.ListSocketsRequest) (*membershipv1.ListSocketsResponse, error) {
	err := validateUser("user", req.GetUser())
	size, after, perr := socketPage(req.GetPageSize(), req.GetPageToken())
	if err == nil {
		err = perr
	}
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	socks, next, rev, err := s.store.ListUserSockets(etcdCtx(ctx), req.GetUser(), after, size)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	resp := &membershipv1.ListSocketsResponse{Revision: rev, NextPageToken: encodePageToken(next)}
	for _, info := range socks {
		resp.Sockets = append(resp.Sockets, socketMessage(info))
	}
	return resp, nil
}

// socketMessage is a socket as the API describes it.
func socketMessage(info store.SocketInfo) *membershipv1.Socket {
	return &membershipv1.Socket{
		SocketId:    info.ID,
		Gateway:     info.Gateway,
		ConnectedAt: timestamppb.New(info.ConnectedAt),
		Rooms:       info.Rooms,
		User:        info.User,
		// The detached mark of a resumable socket (the gateway's resume.go).
		DetachedSince: detachedSince(info.DetachedSince),
	}
}

// detachedSince is a socket record's detached_since, nil when attached.
func detachedSince(t *time.Time) *timestamppb.Timestamp {
	if t == nil {
		return nil
	}
	return timestamppb.New(*t)
}

// socketPage checks the paging of a listing ordered by socket id: the page
// size, and a page token holding the socket id the previous page ended at.
func socketPage(size int32, token string) (int, string, error) {
	n, err := pageSize(size)
	if err != nil {
		return 0, "", err
	}
	after, err := decodePageToken(token)
	if err != nil {
		return 0, "", err
	}
	if strings.Contains(after, "/") || len(after) > store.MaxSocketIDBytes {
		return 0, "", invalid("page_token", "not a token from a previous page")
	}
	return n, after, nil
}
