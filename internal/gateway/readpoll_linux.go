package gateway

import (
	"errors"
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

	once  sync.Once
	epfd  int // -1: parking is off (epoll unavailable); readers block instead
	wakeF int // eventfd that stops run
	// sweep is how often run checks the parked sockets' read deadlines: a
	// socket silent past its deadline is dropped at most this late.
	sweep time.Duration
	done  chan struct{} // closed when run returns

	mu      sync.Mutex
	parked  map[uint64]*client // by netConn.key
	nextKey uint64
	stopped bool
}

// stopKey is the eventfd's epoll key; sockets' keys start at 1.
const stopKey = 0

func newReadPoller(g *Gateway) *readPoller {
	sweep := min(max(g.cfg.PingInterval/4, 10*time.Millisecond), time.Second)
	return &readPoller{g: g, epfd: -1, wakeF: -1, sweep: sweep, parked: map[uint64]*client{}}
}

// start makes the epoll instance and starts run, on the first park.
func (p *readPoller) start() {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		p.g.log.Warn("epoll unavailable; each idle socket keeps a reader goroutine", "err", err)
		return
	}
	efd, err := unix.Eventfd(0, unix.EFD_CLOEXEC|unix.EFD_NONBLOCK)
	if err == nil {
		ev := unix.EpollEvent{Events: unix.EPOLLIN}
		setEventKey(&ev, stopKey)
		err = unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, efd, &ev)
	}
	if err != nil {
		p.g.log.Warn("eventfd unavailable; each idle socket keeps a reader goroutine", "err", err)
		unix.Close(epfd)
		if efd >= 0 {
			unix.Close(efd)
		}
		return
	}
	p.epfd, p.wakeF, p.done = epfd, efd, make(chan struct{})
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
	raw, err := n.Conn.(syscall.Conn).SyscallConn()
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
	p.mu.Unlock()
	// The registration is made while the descriptor is held (Control), so
	// that a close under way cannot let its number go to another connection
	// first. Level-triggered and one-shot: bytes already there wake it at
	// once, and it fires once per park.
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
	events := make([]unix.EpollEvent, 256)
	lastSweep := time.Now()
	for {
		n, err := unix.EpollWait(p.epfd, events, int(p.sweep/time.Millisecond))
		if err != nil && !errors.Is(err, unix.EINTR) {
			p.g.log.Error("epoll wait failed; every idle socket keeps a reader goroutine from now on", "err", err)
			p.wakeAll()
			unix.Close(p.epfd)
			unix.Close(p.wakeF)
			return
		}
		for i := range n {
			key := eventKey(&events[i])
			if key == stopKey {
				p.wakeAll()
				unix.Close(p.epfd)
				unix.Close(p.wakeF)
				return
			}
			p.mu.Lock()
			c := p.parked[key]
			p.mu.Unlock()
			if c != nil {
				p.wake(c)
			}
		}
		if now := time.Now(); now.Sub(lastSweep) >= p.sweep {
			lastSweep = now
			p.wakeExpired(now.UnixNano())
		}
	}
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
	p.mu.Lock()
	p.stopped = true
	p.mu.Unlock()
	if p.wakeF < 0 {
		return
	}
	var one = [8]byte{1}
	_, _ = unix.Write(p.wakeF, one[:])
	<-p.done
}
