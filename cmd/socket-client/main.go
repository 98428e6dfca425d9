// Command socket-client connects one WebSocket to a gateway and prints every
// frame it receives, one per line; lines typed on stdin are sent as frames.
// It is a debugging aid for trying the service by hand.
package main

import (
	"bufio"
	"fmt"
	"os"

	"github.com/gorilla/websocket"
)

func main() {
	url := "ws://127.0.0.1:8080/ws"
	if len(os.Args) > 1 {
		url = os.Args[1]
	}
	conn, _, err := websocket.DefaultDialer.Dial(url, nil)
	if err != nil {
		fmt.Fprintln(os.Stderr, "socket-client:", err)
		os.Exit(1)
	}
	defer conn.Close()
	go func() {
		in := bufio.NewScanner(os.Stdin)
		for in.Scan() {
			if err := conn.WriteMessage(websocket.TextMessage, in.Bytes()); err != nil {
				return
			}
		}
	}()
	for {
		_, data, err := conn.ReadMessage()
		if err != nil {
			fmt.Fprintln(os.Stderr, "socket-client:", err)
			os.Exit(1)
		}
		fmt.Println(string(data))
	}
}
