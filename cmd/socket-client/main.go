// Command socket-client connects one WebSocket to a gateway and prints every
// frame it receives, one per line; each line typed on stdin is sent as one
// text frame. It is a debugging aid for trying the service by hand.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"sync/atomic"

	"github.com/gorilla/websocket"
)

const usage = `Usage: socket-client [flags] [URL]

Connects one WebSocket to a gateway (URL, default ws://127.0.0.1:8080/ws) and
prints every frame it receives, one per line, starting with the "connected"
frame that carries the socket id. Each line typed on stdin is sent as one
text frame, e.g. a socket request:

  {"type":"request","id":1,"method":"POST","path":"/leaveFunRoom","body":{"roomName":"fun"}}

It exits when the gateway closes the connection, printing the close code and
reason, or at the end of stdin.

Flags:
`

func main() { os.Exit(run(os.Args[1:], os.Stdin, os.Stdout, os.Stderr)) }

// maxLineBytes bounds a line of stdin, as the gateway bounds a frame (1 MiB).
const maxLineBytes = 1 << 20

// run is the command: args without the program name; it returns the exit
// status (0 after a normal close or the end of stdin, 1 on a failure, 2 on
// bad usage).
func run(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("socket-client", flag.ContinueOnError)
	fs.SetOutput(stderr)
	token := fs.String("token", "", "JSON Web Token, sent as an Authorization: Bearer header (for gateways started with --jwt-*)")
	origin := fs.String("origin", "", "Origin header to send, as a browser would (checked against the gateway's --allowed-origins)")
	fs.Usage = func() {
		fmt.Fprint(stderr, usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	url := "ws://127.0.0.1:8080/ws"
	switch fs.NArg() {
	case 0:
	case 1:
		url = fs.Arg(0)
	default:
		fs.Usage()
		return 2
	}
	header := http.Header{}
	if *token != "" {
		header.Set("Authorization", "Bearer "+*token)
	}
	if *origin != "" {
		header.Set("Origin", *origin)
	}
	conn, resp, err := websocket.DefaultDialer.Dial(url, header)
	if err != nil {
		if resp != nil {
			err = fmt.Errorf("%w (HTTP %s)", err, resp.Status)
		}
		fmt.Fprintf(stderr, "socket-client: %s: %v\n", url, err)
		return 1
	}
	defer conn.Close()
	var stdinErr atomic.Pointer[error]
	go func() {
		in := bufio.NewScanner(stdin)
		in.Buffer(make([]byte, 64*1024), maxLineBytes)
		for in.Scan() {
			if err := conn.WriteMessage(websocket.TextMessage, in.Bytes()); err != nil {
				return
			}
		}
		if err := in.Err(); err != nil {
			if errors.Is(err, bufio.ErrTooLong) {
				err = fmt.Errorf("a line over %d bytes", maxLineBytes)
			}
			err = fmt.Errorf("stdin: %w", err)
			stdinErr.Store(&err)
		}
		// End of stdin: close the connection cleanly, then wait for the
		// gateway's close frame in the read loop.
		_ = conn.WriteMessage(websocket.CloseMessage, websocket.FormatCloseMessage(websocket.CloseNormalClosure, ""))
	}()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			var ce *websocket.CloseError
			if errors.As(err, &ce) {
				fmt.Fprintf(stderr, "socket-client: closed with %d %s\n", ce.Code, ce.Text)
				if err := stdinErr.Load(); err != nil {
					fmt.Fprintln(stderr, "socket-client:", *err)
					return 1
				}
				if ce.Code == websocket.CloseNormalClosure {
					return 0
				}
				return 1
			}
			fmt.Fprintln(stderr, "socket-client:", err)
			return 1
		}
		fmt.Fprintln(stdout, string(data))
	}
}
