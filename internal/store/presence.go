package store

import "context"

// Presence counts in the TargetIndex.
//
// Besides each room's member count, the index keeps each room's distinct
// users, incrementally, from the same watch: per room a map user → how many
// of the room's member sockets belong to that user (user_count is the map's
// size), and per socket with a user (learnt from its users/{user}/{socket}
// key) the user and a reference count: one for the user key, one per
// membership. A socket's user key is created in the transaction that
// creates its record, before any membership (a Join is guarded by the
// record), so every membership event finds its socket's user; keys deleted
// at one revision (a lease's expiry, a removal) may come in any order, and
// the reference count keeps the socket's user until its last key is gone.
// Each Join or Leave event costs two map lookups and an increment more than
// the member count alone; the memory is one entry per socket with a user and
// one per (room, user).

// userRef is a socket's user and how many of its keys the index holds.
type userRef struct {
	user string
	refs int
}

// RoomPresence is a room's member sockets and distinct users.
type RoomPresence struct {
	Room    string
	Members int64
	// Users counts the distinct users among Members; sockets without a user
	// are not counted.
	Users int64
}

// userKeyLocked applies a user index key appearing (d = 1) or going (d = -1).
func (x *TargetIndex) userKeyLocked(socket, user string, d int) {
	x.refSocketLocked(socket, user, d)
}

// refSocketLocked adds d to socket's references, creating the entry with
// user (when d > 0) and dropping it at zero.
func (x *TargetIndex) refSocketLocked(socket, user string, d int) {
	r := x.socketUsers[socket]
	if r == nil {
		if d <= 0 || user == "" {
			return
		}
		r = &userRef{user: user}
		x.socketUsers[socket] = r
	}
	r.refs += d
	if r.refs <= 0 {
		delete(x.socketUsers, socket)
	}
}

// membershipUserLocked counts socket's user in room's users by d (1: the
// socket joined, -1: it left), after the room's entry was updated.
func (x *TargetIndex) membershipUserLocked(room, socket string, d int) {
	r := x.socketUsers[socket]
	if r == nil {
		return // a socket without a user
	}
	if e := x.rooms[room]; e != nil {
		if e.users == nil {
			e.users = map[string]int{}
		}
		if n := e.users[r.user] + d; n > 0 {
			e.users[r.user] = n
		} else {
			delete(e.users, r.user)
		}
	}
	x.refSocketLocked(socket, "", d)
}

// Room returns room's member and user counts as of a revision at least
// etcd's current one when the call began, and that revision (the index's).
// A room without members has zero counts.
func (x *TargetIndex) Room(ctx context.Context, room string) (RoomPresence, int64, error) {
	if _, err := x.catchUp(ctx); err != nil {
		return RoomPresence{}, 0, err
	}
	x.mu.RLock()
	defer x.mu.RUnlock()
	p := RoomPresence{Room: room}
	if e := x.rooms[room]; e != nil {
		p.Members, p.Users = int64(e.members), int64(len(e.users))
	}
	return p, x.rev, nil
}
