package engineio

import (
	"bytes"
	"testing"
)

// FuzzDecodePacket: decoding any frame never panics, and a decoded packet
// encodes back to a frame that decodes to the same packet, in both
// protocols, as a WebSocket frame and in base64 form.
func FuzzDecodePacket(f *testing.F) {
	for _, seed := range []string{"4hello", "2probe", "3", "6", "0{\"sid\":\"x\"}", "bAQID", "b4AQID", "", "9", "4ü😀", "\x04\x01\x02"} {
		f.Add([]byte(seed), false, byte(4))
		f.Add([]byte(seed), true, byte(3))
	}
	f.Fuzz(func(t *testing.T, data []byte, binary bool, protoByte byte) {
		proto := Protocol3 + int(protoByte%2)
		p, err := DecodePacket(proto, data, binary)
		if err != nil {
			return
		}
		for _, b64 := range []bool{false, true} {
			enc, bin := AppendPacket(nil, proto, p, b64)
			q, err := DecodePacket(proto, enc, bin)
			if err != nil {
				t.Fatalf("proto %d: %+v encodes to %q (binary %v), which does not decode: %v", proto, p, enc, bin, err)
			}
			if !samePacket(p, q) {
				t.Fatalf("proto %d: %+v round-trips to %+v", proto, p, q)
			}
		}
	})
}

// FuzzDecodePayload: decoding any polling body never panics, and decoded
// packets encode to a body that decodes to the same packets.
func FuzzDecodePayload(f *testing.F) {
	for _, seed := range []string{
		"4hello\x1e2probe\x1ebAQID", "4a\x1e", "\x1e", "6",
		"6:4hello2:2p", "0:", "3:4ü", "3:4😀", "2:4😀", "1:", "bad", "10:4abc",
	} {
		f.Add([]byte(seed), byte(3))
		f.Add([]byte(seed), byte(4))
	}
	f.Fuzz(func(t *testing.T, body []byte, protoByte byte) {
		proto := Protocol3 + int(protoByte%2)
		packets, err := DecodePayload(proto, body)
		if err != nil {
			return
		}
		if len(packets) == 0 {
			t.Fatalf("proto %d: %q decodes to no packet and no error", proto, body)
		}
		enc := AppendPayload(nil, proto, packets)
		again, err := DecodePayload(proto, enc)
		if err != nil {
			t.Fatalf("proto %d: %q re-encodes to %q, which does not decode: %v", proto, body, enc, err)
		}
		if len(again) != len(packets) {
			t.Fatalf("proto %d: %d packets round-trip to %d", proto, len(packets), len(again))
		}
		for i := range packets {
			if !samePacket(packets[i], again[i]) {
				t.Fatalf("proto %d: packet %d %+v round-trips to %+v", proto, i, packets[i], again[i])
			}
		}
	})
}

func samePacket(a, b Packet) bool {
	return a.Type == b.Type && a.Binary == b.Binary && bytes.Equal(a.Data, b.Data)
}
