package socketio

import (
	"encoding/json"
	"testing"
)

var benchData = json.RawMessage(`{"text":"hello, room","from":"user-42","at":1764489600}`)

// BenchmarkAppendEvent: the per-message cost of building a room message's
// EVENT from already-encoded data (done once per Broadcast).
func BenchmarkAppendEvent(b *testing.B) {
	buf := make([]byte, 0, 256)
	b.ReportAllocs()
	for b.Loop() {
		buf = AppendEvent(buf[:0], "/", "chat", benchData)
	}
}

// BenchmarkDecodeEvent: reading a client's EVENT (a Sails virtual request).
func BenchmarkDecodeEvent(b *testing.B) {
	s := `212["post",{"method":"post","headers":{},"data":{"roomName":"fun"},"url":"/leaveFunRoom"}]`
	b.ReportAllocs()
	for b.Loop() {
		if _, err := Decode(V4, s); err != nil {
			b.Fatal(err)
		}
	}
}
