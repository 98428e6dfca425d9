package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/gorilla/websocket"
)

// socket is one bench client.
type socket struct {
	id   string
	conn *websocket.Conn
}

// clientProtocol is --protocol: "native" sockets at /ws, or "socketio":
// Socket.IO protocol 5 over an Engine.IO 4 WebSocket at /socket.io/, as
// socket.io-client 4 with transports ["websocket"] connects. Socket.IO
// sockets do not answer Engine.IO pings: runs longer than PingInterval +
// PingTimeout (45 s) lose them.
var clientProtocol = "native"

// dialSocket connects from source address local (nil: any) and reads the
// connected frame (for Socket.IO, the CONNECT answer).
func dialSocket(ctx context.Context, url string, local net.IP) (*socket, error) {
	d := websocket.Dialer{HandshakeTimeout: 30 * time.Second, ReadBufferSize: 4096, WriteBufferSize: 512}
	if local != nil {
		nd := &net.Dialer{LocalAddr: &net.TCPAddr{IP: local}, Timeout: 30 * time.Second}
		d.NetDialContext = nd.DialContext
	}
	if clientProtocol == "socketio" {
		url = strings.TrimSuffix(url, "/ws") + "/socket.io/?EIO=4&transport=websocket"
	}
	conn, _, err := d.DialContext(ctx, url, nil)
	if err != nil {
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	if clientProtocol == "socketio" {
		return connectSocketIO(conn)
	}
	_, data, err := conn.ReadMessage()
	if err != nil {
		conn.Close()
		return nil, err
	}
	_ = conn.SetReadDeadline(time.Time{})
	var f struct {
		Type     string `json:"type"`
		SocketID string `json:"socket_id"`
	}
	if err := json.Unmarshal(data, &f); err != nil || f.Type != "connected" {
		conn.Close()
		return nil, fmt.Errorf("first frame %q", data)
	}
	return &socket{id: f.SocketID, conn: conn}, nil
}

// connectSocketIO reads the Engine.IO open packet, sends the Socket.IO
// CONNECT and reads its answer, 40{"sid":"<socket id>"}.
func connectSocketIO(conn *websocket.Conn) (*socket, error) {
	if _, data, err := conn.ReadMessage(); err != nil || len(data) == 0 || data[0] != '0' {
		conn.Close()
		return nil, fmt.Errorf("open packet %q: %v", data, err)
	}
	if err := conn.WriteMessage(websocket.TextMessage, []byte("40")); err != nil {
		conn.Close()
		return nil, err
	}
	_, data, err := conn.ReadMessage()
	var f struct {
		Sid string `json:"sid"`
	}
	if err != nil || !strings.HasPrefix(string(data), "40") || json.Unmarshal(data[2:], &f) != nil {
		conn.Close()
		return nil, fmt.Errorf("CONNECT answer %q: %v", data, err)
	}
	_ = conn.SetReadDeadline(time.Time{})
	return &socket{id: f.Sid, conn: conn}, nil
}

// dialMany opens n sockets to url with some in parallel; source addresses
// rotate over 127.0.0.1… every perSource sockets, since one source address
// has only ~28k ports towards one destination.
func dialMany(ctx context.Context, url string, n, parallel, perSource int) ([]*socket, error) {
	out := make([]*socket, n)
	errs := make(chan error, parallel)
	var wg sync.WaitGroup
	next := make(chan int)
	for w := 0; w < parallel; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range next {
				var local net.IP
				if perSource > 0 {
					k := i / perSource
					local = net.IPv4(127, 0, byte(1+k/250), byte(1+k%250))
				}
				s, err := dialSocket(ctx, url, local)
				if err != nil {
					select {
					case errs <- fmt.Errorf("socket %d: %w", i, err):
					default:
					}
					continue
				}
				out[i] = s
			}
		}()
	}
	for i := 0; i < n; i++ {
		next <- i
	}
	close(next)
	wg.Wait()
	select {
	case err := <-errs:
		closeAll(out)
		return nil, err
	default:
	}
	return out, nil
}

// drain discards everything a socket receives, until it closes.
func drain(s *socket) {
	go func() {
		for {
			if _, _, err := s.conn.NextReader(); err != nil {
				return
			}
		}
	}()
}

func closeAll(socks []*socket) {
	for _, s := range socks {
		if s != nil {
			s.conn.Close()
		}
	}
}

// latencies collects durations from many goroutines.
type latencies struct {
	mu sync.Mutex
	d  []time.Duration
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d)
	l.mu.Unlock()
}

func (l *latencies) merge(d []time.Duration) {
	l.mu.Lock()
	l.d = append(l.d, d...)
	l.mu.Unlock()
}

// pct returns the p-th percentile (0–100).
func (l *latencies) pct(p float64) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.d) == 0 {
		return 0
	}
	sort.Slice(l.d, func(i, j int) bool { return l.d[i] < l.d[j] })
	i := int(float64(len(l.d)-1) * p / 100)
	return l.d[i]
}

func (l *latencies) n() int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return len(l.d)
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }
