package service

import (
	"context"
	"encoding/base64"
	"errors"

	"google.golang.org/grpc/metadata"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

// validateRoom checks a room name taken from field (store.ValidateRoom); a
// name shaped like a socket id gets its own reason, ROOM_NAME_RESERVED.
func validateRoom(field, room string) error {
	switch err := store.ValidateRoom(room); {
	case errors.Is(err, store.ErrRoomLikeSocketID):
		return &fieldError{field: field, msg: err.Error(), reason: ReasonRoomNameReserved}
	case err != nil:
		return invalid(field, err.Error())
	}
	return nil
}

// validateRooms checks a list of rooms and drops repeats, keeping order.
func validateRooms(field string, rooms []string) ([]string, error) {
	if len(rooms) == 0 {
		return nil, invalid(field, "at least one room is required")
	}
	if len(rooms) > maxRoomsPerCall {
		return nil, invalid(field, "at most 100 rooms per call")
	}
	seen := make(map[string]struct{}, len(rooms))
	out := make([]string, 0, len(rooms))
	for i, r := range rooms {
		if err := validateRoom(field+"["+itoa(int64(i))+"]", r); err != nil {
			return nil, err
		}
		if _, dup := seen[r]; !dup {
			seen[r] = struct{}{}
			out = append(out, r)
		}
	}
	return out, nil
}

func validateWaitFor(w membershipv1.WaitFor) error {
	if _, ok := membershipv1.WaitFor_name[int32(w)]; !ok {
		return invalid("wait_for", "unknown value")
	}
	return nil
}

func parseSocketID(field, id string) (store.SocketID, error) {
	if id == "" {
		return store.SocketID{}, invalid(field, "required")
	}
	sid, err := store.ParseSocketID(id)
	if err != nil {
		return store.SocketID{}, invalid(field, "not a socket id issued by a gateway")
	}
	return sid, nil
}

// metadataSocket is the socket named by the call's x-socket-id metadata.
func metadataSocket(ctx context.Context) string {
	if v := metadata.ValueFromIncomingContext(ctx, SocketIDMetadata); len(v) > 0 {
		return v[0]
	}
	return ""
}

// socketsFromRequest takes the sockets of a Join or Leave from socket_id and
// socket_ids or, when both are empty, from the x-socket-id metadata (the
// socket-request form). Repeats are dropped, keeping order; at most max
// sockets remain (the store's SocketsPerChange).
func socketsFromRequest(ctx context.Context, one string, many []string, max int) ([]store.SocketID, error) {
	if one == "" && len(many) == 0 {
		md := metadataSocket(ctx)
		if md == "" {
			return nil, invalid("socket_id", "required (or socket_ids, or x-socket-id metadata)")
		}
		sid, err := parseSocketID(SocketIDMetadata, md)
		return []store.SocketID{sid}, err
	}
	// Errors and field names are built only when needed: this runs for
	// every Join and Leave, and each allocation is work for the collector.
	tooMany := func() error { return invalid("socket_ids", "at most "+itoa(int64(max))+" sockets per call") }
	if len(many) > max {
		return nil, tooMany()
	}
	if len(many) == 0 { // one socket: nothing to drop
		sid, err := parseSocketID("socket_id", one)
		if err != nil {
			return nil, err
		}
		return []store.SocketID{sid}, nil
	}
	seen := make(map[string]bool, len(many)+1)
	out := make([]store.SocketID, 0, len(many)+1)
	add := func(i int, id string) error {
		if seen[id] {
			return nil
		}
		seen[id] = true
		sid, err := store.ParseSocketID(id)
		if id == "" || err != nil {
			field := "socket_id"
			if i >= 0 {
				field = "socket_ids[" + itoa(int64(i)) + "]"
			}
			_, err = parseSocketID(field, id)
			return err
		}
		out = append(out, sid)
		return nil
	}
	if one != "" {
		if err := add(-1, one); err != nil {
			return nil, err
		}
	}
	for i, id := range many {
		if err := add(i, id); err != nil {
			return nil, err
		}
	}
	if len(out) > max {
		return nil, tooMany()
	}
	return out, nil
}

func pageSize(n int32) (int, error) {
	switch {
	case n == 0:
		return defaultPageSize, nil
	case n < 0 || n > maxPageSize:
		return 0, invalid("page_size", "must be between 0 and 1000")
	}
	return int(n), nil
}

func encodePageToken(cursor string) string {
	if cursor == "" {
		return ""
	}
	return base64.RawURLEncoding.EncodeToString([]byte(cursor))
}

func decodePageToken(tok string) (string, error) {
	if tok == "" {
		return "", nil
	}
	b, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || len(b) == 0 {
		return "", invalid("page_token", "not a token from a previous page")
	}
	return string(b), nil
}
