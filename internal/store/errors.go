package store

import (
	"errors"
	"fmt"
)

// ErrCorruptRecord reports a key or value in the keyspace that does not
// decode as this package writes it: a socket or gateway record that is not
// its JSON, a room key segment with a bad escape. Something other than this
// service wrote there; retrying reads the same bytes. The error's text names
// the key, for logs; it is not meant for callers.
var ErrCorruptRecord = errors.New("corrupt record")

// ErrShuttingDown reports a call made while the Store is stopping (after
// StartBatching's stop), or carried by a transaction that stop cancelled
// (its outcome unknown): another replica can serve it.
var ErrShuttingDown = errors.New("membership store is shutting down")

// corrupt wraps a decoding failure of the value at key.
func corrupt(what string, key []byte, err error) error {
	return fmt.Errorf("%w: %s at key %q: %v", ErrCorruptRecord, what, key, err)
}
