//go:build !linux

package gateway

// readPoller parks idle sockets on Linux (readpoll_linux.go); elsewhere each
// socket keeps a reader goroutine blocked in its read.
type readPoller struct{}

func newReadPoller(*Gateway) *readPoller { return &readPoller{} }
func (p *readPoller) park(*client) bool  { return false }
func (p *readPoller) wake(*client)       {}
func (p *readPoller) stop()              {}
