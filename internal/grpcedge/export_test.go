package grpcedge

// PendingDecodeErrors is the number of decode errors kept for messages that no
// interceptor has taken yet, and the count kept beside them (the same once
// nothing is being stored or dropped).
func PendingDecodeErrors() (entries int, counted int64) {
	decodeErrors.Range(func(any, any) bool { entries++; return true })
	return entries, pendingDecodeErrors.Load()
}
