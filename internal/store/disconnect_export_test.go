package store

import (
	"context"
	"encoding/json"
)

// DisconnectCommitOnly commits only the first step of Disconnect (records
// deleted, notices written) and stops, as a membership-server that dies
// right after that commit would.
func (s *Store) DisconnectCommitOnly(ctx context.Context, sockets []SocketID, n DisconnectNotice) error {
	val, err := json.Marshal(n)
	if err != nil {
		return err
	}
	states, err := s.socketStates(ctx, sockets)
	if err != nil {
		return err
	}
	_, _, err = s.disconnectRecords(ctx, sockets, val, states)
	return err
}
