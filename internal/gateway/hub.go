package gateway

import (
	"encoding/json"
	"sync"
	"sync/atomic"

	"github.com/socketrooms/membership/internal/socketio"
)

// member is a socket the hub holds: a native WebSocket client (client) or
// a Socket.IO session (sioSocket). Its methods never block: a member whose
// queue is full disconnects itself.
type member interface {
	// core is the socket's id and rooms, which hub.mu guards.
	core() *memberCore
	// deliver queues a room message or blast, encoding it for the member's
	// protocol through m (once per protocol per room); false when it was
	// not queued (the socket is closing or its queue overflowed).
	deliver(m *outbound) bool
	// notice queues the joined or left notice for room.
	notice(joined bool, room string)
	// shutdown closes the socket with a native close code and reason (a
	// Socket.IO session maps them to its own close).
	shutdown(code int, reason string)
}

// memberCore is what the hub keeps on every member.
type memberCore struct {
	id    string
	rooms map[string]struct{} // guarded by hub.mu; nil until the first join
}

func (m *memberCore) core() *memberCore { return m }

// outbound is one message being fanned out by hub.deliver, on its goroutine
// only: each protocol's encoding is made when the first socket of that
// protocol needs it and then shared, so a room of native sockets costs one
// native frame and no Socket.IO packet, and the reverse.
type outbound struct {
	rev    int64  // the Broadcast's revision (0: none given)
	room   string // "" for a blast
	event  string
	data   json.RawMessage
	native []byte // the native frame for room; reset per room
	sio    []byte // the Socket.IO EVENT packet: the same for every room

	// logged is the net change of resumable sockets' logged bytes over
	// this message, added to count (the gateway's resumes.bytes) once when
	// it is fanned out (flushLogged) rather than per socket: an atomic
	// shared by every Deliver in flight, per socket per message, while logs
	// grow to their bound.
	logged int64
	count  *atomic.Int64

	// later are the resumable sockets another Deliver held when this one
	// came to them (deliverResumable's try), each with the frame it is
	// owed: delivered, waiting for them, once every other socket has been.
	later []laterDelivery

	// starts are the connections whose writers this fan-out is to start
	// (startWriters) once it has queued the message to every socket. Until
	// then each counts as writing, so the frames other Deliveries queue to
	// it meanwhile wait in its queue and go out with this one in one
	// writev: under concurrent Broadcasts to a room a socket's writer wakes
	// once for several messages, where starting it at once woke it (a
	// goroutine, a lease check, a system call) for nearly every message.
	starts []*client
}

// startWriters starts the writers the fan-out put off (starts), and pools
// the array that held them: a room's worth of pointers, every Broadcast.
func (o *outbound) startWriters() {
	for _, c := range o.starts {
		go c.writeLoop()
	}
	if cap(o.starts) > 0 {
		clear(o.starts)
		// A header of its own: the address of o.starts would keep o (and its
		// message) alive in the pool, and be emptied below.
		starts := o.starts[:0]
		startsPool.Put(&starts)
	}
	o.starts = nil
}

var startsPool = sync.Pool{New: func() any { return new([]*client) }}

type laterDelivery struct {
	c        *client
	frame    []byte
	blastRev int64
}

// deliverLater delivers o.later, waiting for each socket's state; it
// returns how many of them were not queued after all (counted as queued
// when they were put off).
func (o *outbound) deliverLater() (dropped int64) {
	for _, l := range o.later {
		if queued, _ := l.c.rs.g.deliverResumable(l.c.rs, l.frame, l.blastRev, o, false); !queued {
			dropped++
		}
	}
	o.later = nil
	return dropped
}

// addLogged counts d more logged bytes toward count, flushed by flushLogged.
func (o *outbound) addLogged(count *atomic.Int64, d int64) {
	o.count = count
	o.logged += d
}

func (o *outbound) flushLogged() {
	if o.logged != 0 {
		o.count.Add(o.logged)
		o.logged = 0
	}
}

func (o *outbound) nativeFrame() []byte {
	if o.native == nil {
		o.native = messageFrame(o.room, o.event, o.data)
	}
	return o.native
}

func (o *outbound) sioPacket() []byte {
	if o.sio == nil {
		data := o.data
		if string(data) == "null" {
			data = nil // a message without data: the handler gets no argument
		}
		o.sio = socketio.AppendEvent(nil, socketio.DefaultNamespace, o.event, data)
	}
	return o.sio
}

// hub is the gateway's local view: its open sockets and, for each room, which
// of them are members. The watch loop is its only writer of memberships;
// connection handlers add and remove sockets; Deliver reads it. One RWMutex
// guards all of it; a broadcast only read-locks.
type hub struct {
	mu      sync.RWMutex
	open    bool // false between sessions: no socket may be added
	sockets map[string]member
	rooms   map[string]map[string]member
	members int // memberships of local sockets
	sio     int // sockets that are Socket.IO sessions
	// gone holds, per room, the sockets being or already handed off to
	// another gateway that were members of it until a revision (handoff.go):
	// Deliver still gives them a message of a lower revision.
	gone map[string]map[string]goneMember
	// goneAll holds the sockets handed off to another gateway with the
	// revision from which blasts are that gateway's to give.
	goneAll map[string]goneMember
}

func newHub() *hub {
	return &hub{sockets: map[string]member{}, rooms: map[string]map[string]member{}}
}

// setOpen allows or refuses new sockets.
func (h *hub) setOpen(open bool) {
	h.mu.Lock()
	h.open = open
	h.mu.Unlock()
}

// isSIO tells a Socket.IO session from a native socket.
func isSIO(c member) bool {
	_, ok := c.(*sioSocket)
	return ok
}

// add registers c; it fails while no session is live.
func (h *hub) add(c member) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.open {
		return false
	}
	h.sockets[c.core().id] = c
	if _, ok := c.(*sioSocket); ok {
		h.sio++
	}
	return true
}

// remove forgets c and its memberships.
func (h *hub) remove(c member) {
	h.mu.Lock()
	defer h.mu.Unlock()
	m := c.core()
	if h.sockets[m.id] != c {
		return
	}
	delete(h.sockets, m.id)
	if _, ok := c.(*sioSocket); ok {
		h.sio--
	}
	for room := range m.rooms {
		h.leaveLocked(c, room)
	}
}

// closeAll refuses new sockets, forgets every open one with its memberships,
// and tells each to close with code. Their handlers finish the rest.
func (h *hub) closeAll(code int, reason string) {
	h.mu.Lock()
	h.open = false
	all := make([]member, 0, len(h.sockets))
	for _, c := range h.sockets {
		all = append(all, c)
		for room := range c.core().rooms {
			h.leaveLocked(c, room)
		}
	}
	clear(h.sockets)
	h.sio = 0
	h.mu.Unlock()
	for _, c := range all {
		c.shutdown(code, reason)
	}
}

// all returns the open sockets.
func (h *hub) all() []member {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]member, 0, len(h.sockets))
	for _, c := range h.sockets {
		out = append(out, c)
	}
	return out
}

// sizes returns the number of rooms and of memberships.
func (h *hub) sizes() (rooms, memberships int) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.rooms), h.members
}

// countSIO is how many open sockets are Socket.IO sessions.
func (h *hub) countSIO() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return h.sio
}

func (h *hub) count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.sockets)
}

// apply records one membership change of a local socket, made at etcd
// revision rev, and tells the socket. Changes for sockets this gateway does
// not hold (already gone) are ignored. A socket being handed off to another
// gateway, or handed off to this one, keeps the revision (handoff.go).
func (h *hub) apply(socket, room string, joined bool, rev int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.sockets[socket]
	if c == nil {
		return
	}
	if cl, ok := c.(*client); ok {
		cl.handoffApplyLocked(h, room, joined, rev)
	}
	_, isMember := c.core().rooms[room]
	switch {
	case joined && !isMember:
		h.joinLocked(c, room)
	case !joined && isMember:
		h.leaveLocked(c, room)
		c.notice(false, room)
	}
}

// reconcile makes the index equal want (socket → rooms), as listed from etcd
// after the watch history was lost, telling sockets what changed.
func (h *hub) reconcile(want map[string]map[string]struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, c := range h.sockets {
		for room := range c.core().rooms {
			if _, ok := want[id][room]; !ok {
				h.leaveLocked(c, room)
				c.notice(false, room)
			}
		}
		for room := range want[id] {
			if _, ok := c.core().rooms[room]; !ok {
				h.joinLocked(c, room)
			}
		}
	}
}

func (h *hub) joinLocked(c member, room string) {
	ms := c.core()
	if ms.rooms == nil {
		ms.rooms = map[string]struct{}{}
	}
	ms.rooms[room] = struct{}{}
	h.members++
	m := h.rooms[room]
	if m == nil {
		m = map[string]member{}
		h.rooms[room] = m
	}
	m[ms.id] = c
	c.notice(true, room)
}

func (h *hub) leaveLocked(c member, room string) {
	ms := c.core()
	if _, ok := ms.rooms[room]; ok {
		h.members--
	}
	delete(ms.rooms, room)
	if m := h.rooms[room]; m != nil {
		delete(m, ms.id)
		if len(m) == 0 {
			delete(h.rooms, room)
		}
	}
}

// delivery is one message for local sockets.
type delivery struct {
	rev    int64    // the Broadcast's revision (0: none given)
	rooms  []string // in order; a socket in several gets the first room's frame
	all    bool
	except map[string]struct{}
	event  string
	data   json.RawMessage
	// forwards collects the messages for sockets handed off to another
	// gateway, which the caller forwards once the hub is unlocked (nil:
	// none are collected).
	forwards *[]forward
}

// deliver queues the message for every target socket, encoding it once per
// protocol per room (outbound). It never blocks: a socket whose queue is full
// is disconnected.
func (h *hub) deliver(d delivery) (delivered, dropped int64) {
	native, sio, dropped := h.deliverByProtocol(d)
	return native + sio, dropped
}

// deliverByProtocol is deliver, with the messages queued counted apart for
// native sockets and Socket.IO sessions (gateway_broadcast_deliveries_total's
// protocol label).
func (h *hub) deliverByProtocol(d delivery) (native, sio, dropped int64) {
	o := &outbound{rev: d.rev, event: d.event, data: d.data, starts: (*startsPool.Get().(*[]*client))[:0]}
	// Run last, with the hub unlocked: the writers need none of its locks.
	defer o.startWriters()
	h.mu.RLock()
	defer h.mu.RUnlock()
	defer o.flushLogged()
	send := func(id string, c member) {
		if _, skip := d.except[id]; skip {
			return
		}
		switch {
		case !c.deliver(o):
			dropped++
		case isSIO(c):
			sio++
		default:
			native++
		}
	}
	defer func() {
		n := o.deliverLater()
		native, dropped = native-n, dropped+n
	}()
	if d.all {
		for id, c := range h.sockets {
			send(id, c)
		}
		for id, gm := range h.goneAll {
			if _, skip := d.except[id]; !skip && d.rev != 0 && d.rev < gm.rev {
				gm.r.g.deliverGone(gm.r, o.nativeFrame(), d.forwards)
			}
		}
		return native, sio, dropped
	}
	var seen map[string]struct{}
	if len(d.rooms) > 1 {
		seen = map[string]struct{}{}
	}
	for _, room := range d.rooms {
		members := h.rooms[room]
		if len(members) == 0 && len(h.gone[room]) == 0 {
			continue
		}
		o.room, o.native = room, nil
		h.deliverGoneLocked(d, o, seen)
		for id, c := range members {
			if seen != nil {
				if _, dup := seen[id]; dup {
					continue
				}
				seen[id] = struct{}{}
			}
			send(id, c)
		}
	}
	return native, sio, dropped
}
