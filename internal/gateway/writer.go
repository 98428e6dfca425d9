package gateway

import (
	"encoding/binary"
	"net"
	"slices"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/gorilla/websocket"
)

// enqueue queues a frame without blocking. A frame past the queue's bound in
// frames or in bytes disconnects the client instead.
func (c *client) enqueue(b []byte) bool { return c.enqueueFrame(outFrame{b: b}) }

// enqueueSeq queues a message frame made by messageFrame, possibly shared
// with other sockets, to be written with "seq":seq spliced in (resume.go);
// as enqueue otherwise.
func (c *client) enqueueSeq(frame []byte, seq uint64) bool {
	return c.enqueueFrame(outFrame{b: frame, seq: seq})
}

func (c *client) enqueueFrame(f outFrame) bool {
	queued, start := c.queueFrame(f)
	if start {
		go c.writeLoop()
	}
	return queued
}

// queueFrame is enqueueFrame but for starting the writer: when start, the
// caller runs go c.writeLoop(), after letting go of the locks it holds
// (deliverResumable's), so that a concurrent Deliver waiting for them does
// not wait for a goroutine to be made.
func (c *client) queueFrame(f outFrame) (queued, start bool) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false, false
	}
	size := int64(f.size())
	if len(c.queue) >= c.maxQueue || (c.maxBytes > 0 && c.queuedBytes+size > c.maxBytes) {
		c.mu.Unlock()
		if c.onSlow != nil {
			c.onSlow()
		}
		// A writer stuck on this client's full buffers gives up now (before
		// shutdown, so that the deadline cannot cut short the close frame).
		_ = c.nc.SetWriteDeadline(time.Now())
		c.shutdown(closeTryAgainLater, "send queue full")
		return false, false
	}
	if c.queue == nil {
		c.qbuf = frameQueuePool.Get().(*frameQueue)
		c.queue = c.qbuf.frames
	}
	c.queue = append(c.queue, f)
	c.queuedBytes += size
	start = c.startWriterLocked()
	c.mu.Unlock()
	return true, start
}

// control asks the writer for a ping or a pong.
func (c *client) control(bit uint8) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.ctrl |= bit
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// release lets queued frames go out: the socket is registered.
func (c *client) release() {
	c.mu.Lock()
	c.held = false
	start := len(c.queue) > 0 && c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

func (c *client) startWriterLocked() bool {
	if c.writing || (c.held && !c.closing) {
		return false
	}
	c.writing = true
	return true
}

// shutdown makes the writer send a close frame and drop the connection;
// queued frames are not sent. The first call's code wins.
func (c *client) shutdown(code int, reason string) {
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return
	}
	c.closing = true
	c.closeCode, c.closeReason = code, reason
	close(c.done)
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
}

// writeLoop writes what is queued, then exits; at most one runs at a time.
// Frames queued together go out in one writev: a gateway that falls behind a
// burst of broadcasts spends one system call on many frames rather than one
// on each. Its scratch (writeScratch) comes from a pool and goes back when
// it exits, so a socket holds none while idle and a batch allocates nothing.
func (c *client) writeLoop() {
	s := writeScratchPool.Get().(*writeScratch)
	defer s.release()
	var written int64 // bytes of the last batch, counted in queuedBytes until now
	for {
		c.mu.Lock()
		c.queuedBytes -= written
		written = 0
		if c.closing {
			c.queue, c.qbuf, c.queuedBytes = nil, nil, 0
			c.mu.Unlock()
			c.writeClose()
			return
		}
		batch, qbuf, ctrl := c.queue, c.qbuf, c.ctrl
		c.queue, c.qbuf, c.ctrl = nil, nil, 0
		for _, f := range batch {
			written += int64(f.size())
		}
		if len(batch) == 0 && ctrl == 0 {
			c.writing = false
			c.mu.Unlock()
			qbuf.put(batch)
			return
		}
		c.mu.Unlock()
		c.writeBatch(s, batch, ctrl)
		qbuf.put(batch)
	}
}

// writeBatch writes the control frames asked for, then batch, in one
// writev.
func (c *client) writeBatch(s *writeScratch, batch []outFrame, ctrl uint8) {
	deadline := time.Now().Add(c.writeTimeout)
	if ctrl&ctrlPong != 0 {
		if err := c.writeControl(websocket.PongMessage, nil, deadline); err != nil {
			c.shutdown(closeAbnormal, "pong failed")
			return
		}
	}
	if ctrl&ctrlPing != 0 {
		if err := c.writeControl(websocket.PingMessage, nil, deadline); err != nil {
			c.shutdown(closeAbnormal, "ping failed")
			return
		}
	}
	if len(batch) == 0 {
		return
	}
	// Nothing is written once the lease the socket's memberships live on
	// may have expired: a frozen gateway that resumes must not deliver a
	// single frame it queued before.
	if !c.alive() {
		c.shutdown(closeServiceRestart, "gateway lost its registration; reconnect")
		return
	}
	s.heads, s.bufs = appendFrames(s.heads[:0], s.bufs[:0], batch)
	// WriteTo consumes the slice it is given: a copy of it, so that the
	// array is kept for the next batch.
	bufs := s.bufs
	if err := c.write(&bufs, deadline); err != nil {
		c.shutdown(closeAbnormal, "write failed")
	}
	clear(s.bufs) // the frames are not held past their write
}

// writeScratch is a running writer's memory: the headers of a batch's
// frames (with each seq spliced in) and the writev's buffers. Pooled across
// sockets' writers: growing them afresh for every batch was an allocation
// every few frames, most of them for the seq heads (about 30 bytes a frame,
// against a header's 2).
type writeScratch struct {
	heads []byte
	bufs  net.Buffers
}

var writeScratchPool = sync.Pool{New: func() any { return new(writeScratch) }}

// frameQueue holds the array of a client's send queue (client.qbuf), pooled
// across clients: a queue emptied by its writer lets its array go, so an
// idle socket holds none, and the next frame queued takes one from the
// pool rather than growing a new one frame by frame.
type frameQueue struct {
	frames []outFrame // empty while pooled
}

var frameQueuePool = sync.Pool{New: func() any { return new(frameQueue) }}

// maxPooledQueue bounds the queue arrays pooled, in frames (32 bytes each);
// the default queue bound (256 frames) is below it.
const maxPooledQueue = 1024

// put returns q, written, to the pool in b, its frames let go.
func (b *frameQueue) put(q []outFrame) {
	if b == nil || cap(q) > maxPooledQueue {
		return
	}
	clear(q)
	b.frames = q[:0]
	frameQueuePool.Put(b)
}

// release returns s to the pool (writeLoop's exit).
func (s *writeScratch) release() {
	if cap(s.heads) > 64*maxPooledQueue {
		s.heads, s.bufs = nil, nil
	}
	writeScratchPool.Put(s)
}

// write writes bufs to the connection, noting a write that failed inside a
// frame: the stream is then broken and no close frame may follow. Only the
// writer calls it.
func (c *client) write(bufs *net.Buffers, deadline time.Time) error {
	total := 0
	for _, b := range *bufs {
		total += len(b)
	}
	_ = c.nc.SetWriteDeadline(deadline)
	n, err := bufs.WriteTo(c.nc)
	if err != nil && n > 0 && n < int64(total) {
		c.midFrame = true
	}
	return err
}

// writeControl writes one control frame (RFC 6455 §5.5); payload is at most
// 125 bytes.
func (c *client) writeControl(opcode int, payload []byte, deadline time.Time) error {
	hdr := appendFrameHeader(make([]byte, 0, 2), opcode, len(payload))
	bufs := net.Buffers{hdr, payload}
	return c.write(&bufs, deadline)
}

// writeClose sends the close frame, unless a failed write left the stream
// inside a frame (a close frame would be read as part of it) or the
// connection failed, and closes the connection.
func (c *client) writeClose() {
	if !c.midFrame && c.closeCode != closeAbnormal {
		msg := websocket.FormatCloseMessage(c.closeCode, closeReasonText(c.closeReason))
		// A close frame is a courtesy: a peer that cannot take it within a
		// second is not waited for.
		_ = c.writeControl(websocket.CloseMessage, msg, time.Now().Add(min(c.writeTimeout, time.Second)))
	}
	c.conn.Close()
	close(c.connClosed)
	if c.reads != nil {
		// A parked socket's epoll registration went with the descriptor:
		// its reader starts to see the read fail.
		c.reads.wake(c)
	}
}

// closeReasonText cuts reason to what a close frame holds (123 bytes after
// the code, RFC 6455 §5.5), at a UTF-8 boundary.
func closeReasonText(reason string) string {
	const maxReason = 123
	if len(reason) <= maxReason {
		return reason
	}
	reason = reason[:maxReason]
	for !utf8.ValidString(reason) {
		reason = reason[:len(reason)-1]
	}
	return reason
}

// appendFrames lays out unmasked, final text frames (RFC 6455 §5.2) for
// frames, their payloads not copied: the headers go in heads, each followed
// there, for a frame with a seq, by the message frame's head with the seq
// (appendSeqHead), its shared rest following in a buffer of its own. So a
// frame costs two buffers of the writev, with or without a seq.
func appendFrames(heads []byte, bufs net.Buffers, frames []outFrame) ([]byte, net.Buffers) {
	n := 0
	for _, f := range frames {
		n += headLen(f)
	}
	heads = slices.Grow(heads, n)
	bufs = slices.Grow(bufs, 2*len(frames))
	for _, f := range frames {
		heads = appendFrameHeader(heads, websocket.TextMessage, f.size())
		if f.seq != 0 {
			heads = appendSeqHead(heads, f.seq)
		}
	}
	off := 0
	for _, f := range frames {
		n, rest := headLen(f), f.b
		if f.seq != 0 {
			rest = f.b[len(messageHead):]
		}
		bufs = append(bufs, heads[off:off+n], rest)
		off += n
	}
	return heads, bufs
}

// headLen is the length of what appendFrames puts in heads for f: its
// header and, with a seq, the message frame's head with the seq.
func headLen(f outFrame) int {
	n := frameHeaderLen(f.size())
	if f.seq != 0 {
		n += len(messageHead) + seqFieldLen(f.seq)
	}
	return n
}

func frameHeaderLen(n int) int {
	switch {
	case n < 126:
		return 2
	case n < 1<<16:
		return 4
	default:
		return 10
	}
}

// appendFrameHeader appends the header of an unmasked, final frame of
// opcode with n bytes of payload.
func appendFrameHeader(b []byte, opcode, n int) []byte {
	fin := byte(0x80 | opcode)
	switch {
	case n < 126:
		return append(b, fin, byte(n))
	case n < 1<<16:
		return append(b, fin, 126, byte(n>>8), byte(n))
	default:
		return binary.BigEndian.AppendUint64(append(b, fin, 127), uint64(n))
	}
}

// pendingBytes is what the socket holds: the bytes of frames queued to it and
// not yet written.
func (c *client) pendingBytes() int64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.queuedBytes
}
