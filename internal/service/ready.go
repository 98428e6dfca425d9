package service

// Ready is closed once the server can answer every call without waiting on
// its own start: its broadcast target index has loaded its first listing of
// etcd (until then Broadcast, Blast and ListRooms wait for it). A binary
// reports itself SERVING only after it closes.
func (s *Server) Ready() <-chan struct{} { return s.targets.Loaded() }
