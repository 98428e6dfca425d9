package gateway

import (
	"encoding/json"
	"sync"
)

// hub is the gateway's local view: its open sockets and, for each room, which
// of them are members. The watch loop is its only writer of memberships;
// connection handlers add and remove sockets; Deliver reads it. One RWMutex
// guards all of it; a broadcast only read-locks.
type hub struct {
	mu      sync.RWMutex
	open    bool // false between sessions: no socket may be added
	sockets map[string]*client
	rooms   map[string]map[string]*client
	members int // memberships of local sockets
}

func newHub() *hub {
	return &hub{sockets: map[string]*client{}, rooms: map[string]map[string]*client{}}
}

// setOpen allows or refuses new sockets.
func (h *hub) setOpen(open bool) {
	h.mu.Lock()
	h.open = open
	h.mu.Unlock()
}

// add registers c; it fails while no session is live.
func (h *hub) add(c *client) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	if !h.open {
		return false
	}
	h.sockets[c.id] = c
	return true
}

// remove forgets c and its memberships.
func (h *hub) remove(c *client) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.sockets[c.id] != c {
		return
	}
	delete(h.sockets, c.id)
	for room := range c.rooms {
		h.leaveLocked(c, room)
	}
}

// closeAll refuses new sockets, forgets every open one with its memberships,
// and tells each to close with code. Their handlers finish the rest.
func (h *hub) closeAll(code int, reason string) {
	h.mu.Lock()
	h.open = false
	all := make([]*client, 0, len(h.sockets))
	for _, c := range h.sockets {
		all = append(all, c)
		for room := range c.rooms {
			h.leaveLocked(c, room)
		}
	}
	clear(h.sockets)
	h.mu.Unlock()
	for _, c := range all {
		c.shutdown(code, reason)
	}
}

// all returns the open sockets.
func (h *hub) all() []*client {
	h.mu.RLock()
	defer h.mu.RUnlock()
	out := make([]*client, 0, len(h.sockets))
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

func (h *hub) count() int {
	h.mu.RLock()
	defer h.mu.RUnlock()
	return len(h.sockets)
}

// apply records one membership change of a local socket and tells the socket.
// Changes for sockets this gateway does not hold (already gone) are ignored.
func (h *hub) apply(socket, room string, joined bool) {
	h.mu.Lock()
	defer h.mu.Unlock()
	c := h.sockets[socket]
	if c == nil {
		return
	}
	_, member := c.rooms[room]
	switch {
	case joined && !member:
		h.joinLocked(c, room)
	case !joined && member:
		h.leaveLocked(c, room)
		c.enqueue(controlFrame(frameLeft, room))
	}
}

// reconcile makes the index equal want (socket → rooms), as listed from etcd
// after the watch history was lost, telling sockets what changed.
func (h *hub) reconcile(want map[string]map[string]struct{}) {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, c := range h.sockets {
		for room := range c.rooms {
			if _, ok := want[id][room]; !ok {
				h.leaveLocked(c, room)
				c.enqueue(controlFrame(frameLeft, room))
			}
		}
		for room := range want[id] {
			if _, ok := c.rooms[room]; !ok {
				h.joinLocked(c, room)
			}
		}
	}
}

func (h *hub) joinLocked(c *client, room string) {
	if c.rooms == nil {
		c.rooms = map[string]struct{}{}
	}
	c.rooms[room] = struct{}{}
	h.members++
	m := h.rooms[room]
	if m == nil {
		m = map[string]*client{}
		h.rooms[room] = m
	}
	m[c.id] = c
	c.enqueue(controlFrame(frameJoined, room))
}

func (h *hub) leaveLocked(c *client, room string) {
	if _, ok := c.rooms[room]; ok {
		h.members--
	}
	delete(c.rooms, room)
	if m := h.rooms[room]; m != nil {
		delete(m, c.id)
		if len(m) == 0 {
			delete(h.rooms, room)
		}
	}
}

// delivery is one message for local sockets.
type delivery struct {
	rooms  []string // in order; a socket in several gets the first room's frame
	all    bool
	except map[string]struct{}
	event  string
	data   json.RawMessage
}

// deliver queues the message for every target socket, encoding it once per
// room. It never blocks: a socket whose queue is full is disconnected.
func (h *hub) deliver(d delivery) (delivered, dropped int64) {
	h.mu.RLock()
	defer h.mu.RUnlock()
	send := func(c *client, frame []byte) {
		if _, skip := d.except[c.id]; skip {
			return
		}
		if c.enqueue(frame) {
			delivered++
		} else {
			dropped++
		}
	}
	if d.all {
		frame := messageFrame("", d.event, d.data)
		for _, c := range h.sockets {
			send(c, frame)
		}
		return delivered, dropped
	}
	var seen map[string]struct{}
	if len(d.rooms) > 1 {
		seen = map[string]struct{}{}
	}
	for _, room := range d.rooms {
		members := h.rooms[room]
		if len(members) == 0 {
			continue
		}
		frame := messageFrame(room, d.event, d.data)
		for id, c := range members {
			if seen != nil {
				if _, dup := seen[id]; dup {
					continue
				}
				seen[id] = struct{}{}
			}
			send(c, frame)
		}
	}
	return delivered, dropped
}
