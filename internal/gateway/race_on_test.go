//go:build race

package gateway

// raceEnabled: the race detector is on, and sync.Pool drops a share of
// what is put in it on purpose, so tests of pooled allocations skip.
const raceEnabled = true
