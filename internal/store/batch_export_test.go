package store

// ExtraCommitterBatch is how many waiting calls start another committer
// while a transaction is in flight.
func (s *Store) ExtraCommitterBatch() int { return s.batch.extraCommitterBatch() }

// PendingCalls is how many Join/Leave calls wait for a committer.
func (s *Store) PendingCalls() int {
	s.batch.mu.Lock()
	defer s.batch.mu.Unlock()
	return len(s.batch.pending)
}

// PausedCommitters is how many committers pause before a retry.
func (s *Store) PausedCommitters() int {
	s.batch.mu.Lock()
	defer s.batch.mu.Unlock()
	return s.batch.paused
}
