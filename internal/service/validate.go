package service

import (
	"context"
	"encoding/base64"

	"google.golang.org/grpc/metadata"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/store"
)

func validateRoom(field, room string) error {
	if err := store.ValidateRoom(room); err != nil {
		return invalid(field, err.Error())
	}
	return nil
}

// validateRooms checks a broadcast's target rooms and drops repeats, keeping order.
func validateRooms(rooms []string) ([]string, error) {
	if len(rooms) == 0 {
		return nil, invalid("rooms", "at least one room is required")
	}
	if len(rooms) > maxBroadcastRoom {
		return nil, invalid("rooms", "at most 100 rooms per call")
	}
	seen := make(map[string]struct{}, len(rooms))
	out := make([]string, 0, len(rooms))
	for i, r := range rooms {
		if err := validateRoom("rooms["+itoa(int64(i))+"]", r); err != nil {
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

// socketFromRequest takes the socket from the request field or, when that is
// empty, from the x-socket-id metadata (the socket-request form).
func socketFromRequest(ctx context.Context, field string) (store.SocketID, error) {
	if field != "" {
		return parseSocketID("socket_id", field)
	}
	if md := metadataSocket(ctx); md != "" {
		return parseSocketID(SocketIDMetadata, md)
	}
	return store.SocketID{}, invalid("socket_id", "required (or x-socket-id metadata)")
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
