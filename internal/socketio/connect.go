package socketio

import (
	"encoding/json"
)

// Messages of CONNECT_ERROR (ERROR) packets, as the reference server words
// them: socket.io answers a CONNECT to a namespace it does not serve with
// "Invalid namespace" in both protocols.
const (
	MessageInvalidNamespace = "Invalid namespace"
	MessageUnauthorized     = "Not authorized"
)

// AppendConnect appends the server's answer to an accepted namespace
// connection. Protocol 5: 0{"sid":"<sid>"}, the id the client shows as
// socket.id. Protocol 4: a bare 0 (the server sends it for the main namespace
// on its own, right after the Engine.IO handshake; the client's socket.id is
// then the Engine.IO session id, so sid is not sent). A namespace other than
// "/" is prefixed in both ("0/admin,…").
func AppendConnect(dst []byte, v Version, nsp, sid string) []byte {
	dst = appendHeader(dst, Connect, nsp)
	if v == V4 {
		return dst
	}
	dst = append(dst, `{"sid":`...)
	dst = appendJSONString(dst, sid)
	return append(dst, '}')
}

// EncodeConnect is AppendConnect into a new string.
func EncodeConnect(v Version, nsp, sid string) string {
	return string(AppendConnect(nil, v, nsp, sid))
}

// AppendConnectError appends the refusal of a namespace connection (an
// unknown namespace, refused credentials). Protocol 5: a CONNECT_ERROR whose
// payload is {"message":"<message>"}, with "data" added when data is not
// empty (valid JSON, copied as is): socket.io-client 4 emits connect_error
// with an Error of that message and err.data set to data. Protocol 4: an
// ERROR whose payload is the message as a JSON string (data is not sent):
// socket.io-client 2 emits "error" with that string.
//
//	v5: 4{"message":"Invalid namespace"}     v4: 4/admin,"Invalid namespace"
func AppendConnectError(dst []byte, v Version, nsp, message string, data json.RawMessage) []byte {
	dst = appendHeader(dst, ConnectError, nsp)
	if v == V4 {
		return appendJSONString(dst, message)
	}
	dst = append(dst, `{"message":`...)
	dst = appendJSONString(dst, message)
	if len(data) > 0 {
		dst = append(dst, `,"data":`...)
		dst = append(dst, data...)
	}
	return append(dst, '}')
}

// EncodeConnectError is AppendConnectError into a new string.
func EncodeConnectError(v Version, nsp, message string, data json.RawMessage) string {
	return string(AppendConnectError(nil, v, nsp, message, data))
}

// AppendDisconnect appends a DISCONNECT for nsp: the server ends the
// namespace connection (the client reports "io server disconnect" and does
// not reconnect on its own).
func AppendDisconnect(dst []byte, nsp string) []byte {
	return appendHeader(dst, Disconnect, nsp)
}

// Auth is what a protocol-5 CONNECT carries for authentication: the
// client's `auth` option (io(url, {auth: {token: "…"}})).
type Auth struct {
	// Token is auth.token, a JWT by this project's convention; "" when absent.
	Token string
	// Raw is the whole payload object, nil when the CONNECT had none.
	Raw json.RawMessage
}

// ConnectAuth reads the auth payload of a CONNECT packet. A CONNECT without
// a payload gives a zero Auth. auth.token must be a string when present
// (null counts as absent); otherwise the error is ErrInvalidPayload. In
// protocol 4 a CONNECT has no payload: credentials come from the Engine.IO
// handshake request instead (the "token" query parameter, as for native
// sockets; sails.io.js sends it with io.sails.query = "token=…").
func ConnectAuth(p Packet) (Auth, error) {
	if p.Type != Connect {
		return Auth{}, decodeErr(ErrInvalidPayload, -1, "not a CONNECT packet")
	}
	if len(p.Data) == 0 {
		return Auth{}, nil
	}
	var obj struct {
		Token json.RawMessage `json:"token"`
	}
	if p.Data[0] != '{' || json.Unmarshal(p.Data, &obj) != nil {
		return Auth{}, decodeErr(ErrInvalidPayload, -1, "CONNECT payload must be an object")
	}
	a := Auth{Raw: p.Data}
	if len(obj.Token) > 0 && string(obj.Token) != "null" {
		if obj.Token[0] != '"' || json.Unmarshal(obj.Token, &a.Token) != nil {
			return Auth{}, decodeErr(ErrInvalidPayload, -1, "auth.token must be a string")
		}
	}
	return a, nil
}
