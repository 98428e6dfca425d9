package gateway

import (
	"encoding/binary"
	"net"
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
	c.mu.Lock()
	if c.closing {
		c.mu.Unlock()
		return false
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
		return false
	}
	c.queue = append(c.queue, f)
	c.queuedBytes += size
	start := c.startWriterLocked()
	c.mu.Unlock()
	if start {
		go c.writeLoop()
	}
	return true
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
// on each.
func (c *client) writeLoop() {
	var heads []byte
	var bufs net.Buffers
	var written int64 // bytes of the last batch, counted in queuedBytes until now
	for {
		c.mu.Lock()
		c.queuedBytes -= written
		written = 0
		if c.closing {
			c.queue, c.queuedBytes = nil, 0
			c.mu.Unlock()
			c.writeClose()
			return
		}
		batch, ctrl := c.queue, c.ctrl
		c.queue, c.ctrl = nil, 0
		for _, f := range batch {
			written += int64(f.size())
		}
		if len(batch) == 0 && ctrl == 0 {
			c.writing = false
			c.mu.Unlock()
			return
		}
		c.mu.Unlock()
		deadline := time.Now().Add(c.writeTimeout)
		if ctrl&ctrlPong != 0 {
			if err := c.writeControl(websocket.PongMessage, nil, deadline); err != nil {
				c.shutdown(closeAbnormal, "pong failed")
				continue
			}
		}
		if ctrl&ctrlPing != 0 {
			if err := c.writeControl(websocket.PingMessage, nil, deadline); err != nil {
				c.shutdown(closeAbnormal, "ping failed")
				continue
			}
		}
		if len(batch) == 0 {
			continue
		}
		// Nothing is written once the lease the socket's memberships live on
		// may have expired: a frozen gateway that resumes must not deliver a
		// single frame it queued before.
		if !c.alive() {
			c.shutdown(closeServiceRestart, "gateway lost its registration; reconnect")
			continue
		}
		heads, bufs = appendFrames(heads[:0], bufs[:0], batch)
		if err := c.write(&bufs, deadline); err != nil {
			c.shutdown(closeAbnormal, "write failed")
		}
	}
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
	for _, f := range frames {
		heads = appendFrameHeader(heads, websocket.TextMessage, f.size())
		if f.seq != 0 {
			heads = appendSeqHead(heads, f.seq)
		}
	}
	off := 0
	for _, f := range frames {
		n, rest := frameHeaderLen(f.size()), f.b
		if f.seq != 0 {
			n += len(messageHead) + seqFieldLen(f.seq)
			rest = f.b[len(messageHead):]
		}
		bufs = append(bufs, heads[off:off+n], rest)
		off += n
	}
	return heads, bufs
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
