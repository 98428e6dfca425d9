package socketio

import "strconv"

// Encode writes a packet in the text form Decode reads; see AppendPacket.
func Encode(v Version, p Packet) string {
	return string(AppendPacket(nil, v, p))
}

// AppendPacket appends the encoded packet to dst and returns the extended
// slice: the type digit, the namespace and "," unless it is the main
// namespace, the ack id when HasID, then Data verbatim. The encoding is the
// same in protocols 4 and 5; v is taken so that callers name the revision
// they speak. AppendPacket does not validate: the namespace must start with
// "/" and hold no ",", and Data must be valid JSON of the shape the type
// takes. For any packet that Decode returned, Decode(v, Encode(v, p))
// returns p again. Binary types are not written with an attachment count
// (this layer sends no attachments).
func AppendPacket(dst []byte, v Version, p Packet) []byte {
	_ = v
	dst = append(dst, '0'+byte(p.Type))
	if nsp := p.nsp(); nsp != DefaultNamespace {
		dst = append(dst, nsp...)
		dst = append(dst, ',')
	}
	if p.HasID {
		dst = strconv.AppendUint(dst, p.ID, 10)
	}
	return append(dst, p.Data...)
}
