package testutil

import (
	"net"
	"strings"
	"sync"
	"testing"
)

// Proxy is a TCP forwarder on loopback that a test can cut: Pause drops every
// connection through it and refuses new ones until Resume, as a network
// partition between a process and etcd would. Stall black-holes the open
// connections instead, as a peer that vanished without a reset would.
type Proxy struct {
	l      net.Listener
	target string

	mu      sync.Mutex
	paused  bool
	conns   map[net.Conn]struct{}
	stalled map[net.Conn]bool // connections whose bytes are discarded
	held    chan struct{}     // non-nil while held: closed by Release
	wg      sync.WaitGroup
}

// StartProxy forwards a new loopback port to target ("host:port" or a URL);
// it stops when the test ends.
func StartProxy(t testing.TB, target string) *Proxy {
	t.Helper()
	if i := strings.Index(target, "://"); i >= 0 {
		target = target[i+3:]
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &Proxy{l: l, target: target, conns: map[net.Conn]struct{}{}, stalled: map[net.Conn]bool{}}
	p.wg.Add(1)
	go p.accept()
	t.Cleanup(p.close)
	return p
}

// Endpoint is the proxy's address as an etcd endpoint URL.
func (p *Proxy) Endpoint() string { return "http://" + p.l.Addr().String() }

// Pause cuts every connection and refuses new ones.
func (p *Proxy) Pause() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.paused = true
	for c := range p.conns {
		c.Close()
	}
}

// Stall black-holes every open connection without closing it: both ends stay
// connected, their writes succeed, and nothing they send arrives, for as long
// as the connection lasts. New connections are forwarded normally, so only a
// client that replaces its connection gets through again.
func (p *Proxy) Stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for c := range p.conns {
		p.stalled[c] = true
	}
}

// Hold delays every byte from now on, in both directions and on every
// connection, until Release: connections stay open and nothing is lost, as
// over a link that stalls for a while and then catches up.
func (p *Proxy) Hold() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held == nil {
		p.held = make(chan struct{})
	}
}

// Release forwards what Hold delayed, and all that follows.
func (p *Proxy) Release() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.held != nil {
		close(p.held)
		p.held = nil
	}
}

// Resume lets connections through again.
func (p *Proxy) Resume() {
	p.mu.Lock()
	p.paused = false
	p.mu.Unlock()
}

func (p *Proxy) close() {
	p.Release()
	p.l.Close()
	p.Pause()
	p.wg.Wait()
}

func (p *Proxy) accept() {
	defer p.wg.Done()
	for {
		in, err := p.l.Accept()
		if err != nil {
			return
		}
		p.mu.Lock()
		if p.paused {
			p.mu.Unlock()
			in.Close()
			continue
		}
		out, err := net.Dial("tcp", p.target)
		if err != nil {
			p.mu.Unlock()
			in.Close()
			continue
		}
		p.conns[in], p.conns[out] = struct{}{}, struct{}{}
		p.wg.Add(2)
		p.mu.Unlock()
		go p.pipe(in, out)
		go p.pipe(out, in)
	}
}

func (p *Proxy) pipe(dst, src net.Conn) {
	defer p.wg.Done()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		if n > 0 {
			p.mu.Lock()
			stalled, held := p.stalled[src], p.held
			p.mu.Unlock()
			if held != nil {
				<-held
			}
			if !stalled {
				if _, werr := dst.Write(buf[:n]); werr != nil {
					break
				}
			}
		}
		if err != nil {
			break
		}
	}
	dst.Close()
	src.Close()
	p.mu.Lock()
	delete(p.conns, dst)
	delete(p.conns, src)
	delete(p.stalled, dst)
	delete(p.stalled, src)
	p.mu.Unlock()
}
