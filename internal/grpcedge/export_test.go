package grpcedge

// PendingDecodeErrors is the number of decode errors kept for messages that no
// interceptor has taken yet.
func PendingDecodeErrors() int {
	n := 0
	decodeErrors.Range(func(any, any) bool { n++; return true })
	return n
}
