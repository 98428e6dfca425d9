package store

// SetMoveHook makes hook run after each step a move commits (move.go): its
// error ends the move right there, as a membership-server that dies after
// that commit would.
func (s *Store) SetMoveHook(hook func(step string) error) { s.moveHook = hook }
