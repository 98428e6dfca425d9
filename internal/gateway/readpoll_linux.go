package gateway

import (
	"errors"
	"os"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// readPoller lets an idle native socket wait for its client's next frame
// without a goroutine: a reader whose read buffer is drained parks the
// socket here (an epoll registration, one-shot) and exits, and the poller
// starts a reader again when the connection is readable, or fails (hang-up,
// error), or its read deadline passed, or the gateway closed it. A blocked
// reader cost every idle socket a goroutine and its stack (4 KiB: the
// blocking read through the WebSocket library needs more than the 2 KiB a
// goroutine starts with, and a stack never shrinks back below a quarter in
// use); a parked socket costs an entry in parked.
//
// Locks: readPoller.mu alone; it guards parked and every netConn's parked
// flag, so a socket is claimed (unparked) exactly once per park.
type readPoller struct {
	g *Gateway

	once sync.Once
	epfd int      // -1: parking is off (epoll unavailable); readers block instead
	ep   *os.File // epfd, non-blocking, itself waited on in the runtime's network poller
	// sweep is how often run checks the parked sockets' read deadlines: a
	// socket silent past its deadline is dropped at most this late.
	sweep time.Duration
	done  chan struct{} // closed when run returns

	mu      sync.Mutex
	parked  map[uint64]*client // by netConn.key
	nextKey uint64
	stopped bool
}

func newReadPoller(g *Gateway) *readPoller {
	sweep := min(max(g.cfg.PingInterval/4, 10*time.Millisecond), time.Second)
	return &readPoller{g: g, epfd: -1, sweep: sweep, parked: map[uint64]*client{}}
}

// start makes the epoll instance and starts run, on the first park. The
// epoll descriptor is non-blocking and run waits for it to be readable (some
// socket ready) in the runtime's network poller, as for any connection,
// rather than in a blocking epoll_wait, which would cost a thread switch per
// wake-up.
func (p *readPoller) start() {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err == nil {
		if err = unix.SetNonblock(epfd, true); err != nil {
			unix.Close(epfd)
		}
	}
	if err != nil {
		p.g.log.Warn("epoll unavailable; each idle socket keeps a reader goroutine", "err", err)
		return
	}
	p.epfd, p.ep, p.done = epfd, os.NewFile(uintptr(epfd), "epoll"), make(chan struct{})
	go p.run()
}

func setEventKey(ev *unix.EpollEvent, key uint64) {
	ev.Fd, ev.Pad = int32(uint32(key)), int32(uint32(key>>32))
}

func eventKey(ev *unix.EpollEvent) uint64 {
	return uint64(uint32(ev.Fd)) | uint64(uint32(ev.Pad))<<32
}

// park hands c's idle connection to the poller; false when it cannot be
// parked (the caller keeps reading, with a read buffer). Only c's reader
// calls it, with nothing buffered; on true the reader must exit at once
// without touching c's read side, which another reader may own already.
func (p *readPoller) park(c *client) bool {
	p.once.Do(p.start)
	if p.epfd < 0 {
		return false
	}
	n := c.rd
	// Only a bare descriptor parks: a TLS connection (or any wrapper without
	// one) may hold decrypted bytes that epoll cannot see, so its reader
	// blocks in its read as before.
	sc, ok := n.Conn.(syscall.Conn)
	if !ok {
		return false
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return false
	}
	n.detachReadBuf()
	p.mu.Lock()
	if p.stopped {
		p.mu.Unlock()
		return false
	}
	if n.key == 0 {
		p.nextKey++
		n.key = p.nextKey
	}
	p.parked[n.key] = c
	n.parked = true
	// The registration is made while the descriptor is held (Control), so
	// that a close under way cannot let its number go to another connection
	// first, and under p.mu, so that it is made before fail or stop (which
	// set stopped under p.mu) close the epoll instance and free its number.
	// Level-triggered and one-shot: bytes already there wake it at once, and
	// it fires once per park.
	ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLONESHOT}
	setEventKey(&ev, n.key)
	// Re-armed (MOD) but the first time (ADD): nothing is written here once
	// armed, as another reader may run from then on.
	cerr := raw.Control(func(fd uintptr) {
		err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_MOD, int(fd), &ev)
		if errors.Is(err, unix.ENOENT) {
			err = unix.EpollCtl(p.epfd, unix.EPOLL_CTL_ADD, int(fd), &ev)
		}
	})
	p.mu.Unlock()
	if cerr == nil && err == nil {
		return true
	}
	// Not parked (the connection is closing, most likely): the reader
	// carries on unless a wake-up already claimed the socket.
	return !p.claim(c)
}

// claim unparks c, reporting whether c was parked: the caller then starts
// its reader.
func (p *readPoller) claim(c *client) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	if !c.rd.parked {
		return false
	}
	c.rd.parked = false
	delete(p.parked, c.rd.key)
	return true
}

// claimKey unparks the socket parked under key, if one is, and returns it:
// claim, for the key an epoll event carries.
func (p *readPoller) claimKey(key uint64) *client {
	p.mu.Lock()
	defer p.mu.Unlock()
	c := p.parked[key]
	if c != nil {
		c.rd.parked = false
		delete(p.parked, key)
	}
	return c
}

// wake starts c's reader if c is parked: the gateway closed its connection
// (an epoll registration goes with the descriptor, with no event).
func (p *readPoller) wake(c *client) {
	if p.claim(c) {
		go p.g.readSocket(c)
	}
}

// run waits for parked connections to become readable and starts their
// readers, and starts those of sockets past their read deadline, whose
// reads then fail as a blocked read would have.
func (p *readPoller) run() {
	defer close(p.done)
	raw, err := p.ep.SyscallConn()
	if err != nil {
		p.fail(err)
		return
	}
	events := make([]unix.EpollEvent, 256)
	lastSweep := time.Now()
	for {
		_ = p.ep.SetReadDeadline(time.Now().Add(p.sweep))
		n := 0
		var werr error
		err := raw.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)
			return n > 0 || (werr != nil && !errors.Is(werr, unix.EINTR))
		})
		if err == nil {
			err = werr
		}
		if err != nil && !errors.Is(err, os.ErrDeadlineExceeded) {
			p.mu.Lock()
			stopped := p.stopped
			p.mu.Unlock()
			if !stopped {
				p.fail(err)
			}
			return
		}
		for i := range n {
			if c := p.claimKey(eventKey(&events[i])); c != nil {
				go p.g.readSocket(c)
			}
		}
		if now := time.Now(); now.Sub(lastSweep) >= p.sweep {
			lastSweep = now
			p.wakeExpired(readClock(now))
		}
	}
}

// fail gives up parking: every parked socket's reader starts, and blocks in
// its read from then on.
func (p *readPoller) fail(err error) {
	p.g.log.Error("epoll wait failed; every idle socket keeps a reader goroutine from now on", "err", err)
	p.wakeAll()
	p.ep.Close()
}

// wakeExpired starts the readers of the parked sockets whose read deadline
// passed.
func (p *readPoller) wakeExpired(now int64) {
	var expired []*client
	p.mu.Lock()
	for _, c := range p.parked {
		if d := c.rd.deadline.Load(); d != 0 && d <= now {
			expired = append(expired, c)
		}
	}
	p.mu.Unlock()
	for _, c := range expired {
		p.wake(c)
	}
}

// wakeAll starts every parked socket's reader and refuses parks from now
// on (each reader then blocks in its read).
func (p *readPoller) wakeAll() {
	p.mu.Lock()
	p.stopped = true
	var all []*client
	for _, c := range p.parked {
		all = append(all, c)
	}
	p.mu.Unlock()
	for _, c := range all {
		p.wake(c)
	}
}

// stop ends run, every socket still parked being woken; for the gateway's
// end, when none should be.
func (p *readPoller) stop() {
	p.once.Do(func() {}) // no start after this
	p.wakeAll()
	if p.ep == nil {
		return
	}
	p.ep.Close()
	<-p.done
}
