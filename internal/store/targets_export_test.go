package store

// TargetsAt is Targets as of revision rev, without reading etcd's current
// revision: what a Broadcast that read rev sees once the index has applied
// later changes.
func (x *TargetIndex) TargetsAt(rooms []string, rev int64) Targets { return x.targetsAt(rooms, rev) }
