package service

import (
	"context"
	"unicode/utf8"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

// Close codes and reasons of Disconnect.
const (
	minDisconnectCode     = 4000
	maxDisconnectCode     = 4999
	defaultDisconnectCode = 4000
	// maxCloseReasonBytes is what a WebSocket close frame holds after its
	// code: a control frame's payload is at most 125 bytes (RFC 6455 5.5).
	maxCloseReasonBytes = 123
)

// Disconnect closes sockets selected by ids, user or room.
func (s *Server) Disconnect(ctx context.Context, req *membershipv1.DisconnectRequest) (*membershipv1.DisconnectResponse, error) {
	resp, err := s.disconnect(ctx, req)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	return resp, nil
}

func (s *Server) disconnect(ctx context.Context, req *membershipv1.DisconnectRequest) (*membershipv1.DisconnectResponse, error) {
	selectors := 0
	for _, set := range []bool{len(req.GetSocketIds()) > 0, req.GetUser() != "", req.GetRoom() != ""} {
		if set {
			selectors++
		}
	}
	switch {
	case selectors == 0:
		return nil, invalid("socket_ids", "one of socket_ids, user or room is required")
	case selectors > 1:
		field := "user"
		if req.GetRoom() != "" {
			field = "room"
		}
		return nil, invalid(field, "exactly one of socket_ids, user or room may be set")
	}
	code := int(req.GetCode())
	if code == 0 {
		code = defaultDisconnectCode
	}
	if code < minDisconnectCode || code > maxDisconnectCode {
		return nil, invalid("code", "must be 4000 to 4999 (0 means 4000)")
	}
	if r := req.GetReason(); len(r) > maxCloseReasonBytes || !utf8.ValidString(r) {
		return nil, invalid("reason", "at most 123 bytes of UTF-8 (what a WebSocket close frame holds)")
	}
	if err := validateWaitFor(req.GetWaitFor()); err != nil {
		return nil, err
	}
	notice := store.DisconnectNotice{Code: code, Reason: req.GetReason()}
	var socks []store.SocketID
	var res store.DisconnectResult
	var err error
	switch {
	case len(req.GetSocketIds()) > 0:
		socks, err = socketsFromRequest(ctx, "", req.GetSocketIds(), store.MaxSocketsPerChange)
		if err != nil {
			return nil, err
		}
		res, err = s.store.Disconnect(etcdCtx(ctx), socks, notice)
		err = tooLarge("socket_ids", err)
	case req.GetUser() != "":
		if err := validateUser("user", req.GetUser()); err != nil {
			return nil, err
		}
		var ids []store.SocketID
		ids, _, err = s.store.UserSockets(etcdCtx(ctx), req.GetUser(), 0)
		if err == nil {
			res, err = s.store.Disconnect(etcdCtx(ctx), ids, notice)
		}
	default:
		if err := validateRoom("room", req.GetRoom()); err != nil {
			return nil, err
		}
		res, err = s.store.DisconnectRoom(etcdCtx(ctx), req.GetRoom(), notice)
	}
	if err != nil {
		return nil, err
	}
	if res.Revision == 0 { // nobody to close: say as of when
		if res.Revision, err = s.store.CurrentRevision(etcdCtx(ctx)); err != nil {
			return nil, err
		}
	}
	if req.GetWaitFor() == membershipv1.WaitFor_WAIT_FOR_APPLY && len(res.Holders) > 0 {
		if err := s.waitApplied(ctx, res.Holders, res.Revision); err != nil {
			return nil, err
		}
	}
	resp := &membershipv1.DisconnectResponse{Disconnected: res.Disconnected, Revision: res.Revision}
	for i, sock := range socks {
		resp.Results = append(resp.Results, &membershipv1.DisconnectResult{SocketId: sock.String(), Disconnected: res.Closed[i]})
	}
	return resp, nil
}
