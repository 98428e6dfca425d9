package store

import (
	"fmt"
	"testing"
)

// BenchmarkListRoomsPage reads one page of 100 rooms from an index of n rooms
// (the part of ListRooms after it has caught up with etcd): the cost should
// grow with log n, not n.
func BenchmarkListRoomsPage(b *testing.B) {
	for _, n := range []int{1_000, 100_000, 1_000_000} {
		b.Run(fmt.Sprintf("rooms=%d", n), func(b *testing.B) {
			x := &TargetIndex{rooms: map[string]*roomEntry{}, byName: newRoomTree()}
			for i := 0; i < n; i++ {
				add(x.rooms, x.byName, fmt.Sprintf("room %08d", i*7919%n), "gw", 1)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				j := i * 104729 % n
				rooms, _, _ := x.page(fmt.Sprintf("room %08d", j), 100)
				if len(rooms) != min(100, n-1-j) {
					b.Fatalf("page after room %d has %d rooms", j, len(rooms))
				}
			}
		})
	}
}
