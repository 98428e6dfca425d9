package engineio

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
)

// Error codes of the JSON body engine.io answers a refused request with
// (engine.io lib/server.ts, Server.errors).
const (
	CodeUnknownTransport           = 0
	CodeUnknownSID                 = 1
	CodeBadHandshakeMethod         = 2
	CodeBadRequest                 = 3
	CodeForbidden                  = 4
	CodeUnsupportedProtocolVersion = 5
)

var codeMessages = [...]string{
	CodeUnknownTransport:           "Transport unknown",
	CodeUnknownSID:                 "Session ID unknown",
	CodeBadHandshakeMethod:         "Bad handshake method",
	CodeBadRequest:                 "Bad request",
	CodeForbidden:                  "Forbidden",
	CodeUnsupportedProtocolVersion: "Unsupported protocol version",
}

// HandshakeError refuses a handshake or request with an HTTP status and the
// JSON body {"code":Code,"message":Message}. Server.NewID and
// Server.Authorize return one to choose the status; any other error refuses
// with the defaults documented there.
type HandshakeError struct {
	Status  int    // HTTP status, 400 if zero
	Code    int    // one of the Code constants
	Message string // defaults to engine.io's message for Code
}

func (e *HandshakeError) Error() string {
	return "engineio: handshake refused: " + strconv.Itoa(e.status()) + " " + e.message()
}

func (e *HandshakeError) status() int {
	if e.Status == 0 {
		return http.StatusBadRequest
	}
	return e.Status
}

func (e *HandshakeError) message() string {
	if e.Message != "" {
		return e.Message
	}
	if e.Code >= 0 && e.Code < len(codeMessages) {
		return codeMessages[e.Code]
	}
	return "Bad request"
}

// writeError answers a refused request the way engine.io's abortRequest does.
func writeError(w http.ResponseWriter, e *HandshakeError) {
	body, _ := json.Marshal(struct {
		Code    int    `json:"code"`
		Message string `json:"message"`
	}{e.Code, e.message()})
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	w.WriteHeader(e.status())
	_, _ = w.Write(body)
}

// asHandshakeError returns err as a *HandshakeError, or the given default
// when err is some other error: its text stays with the server, not the
// client.
func asHandshakeError(err error, status, code int) *HandshakeError {
	if he, ok := errors.AsType[*HandshakeError](err); ok {
		return he
	}
	return &HandshakeError{Status: status, Code: code}
}

// Reasons a session ends, as Session.Err reports them. Close takes any
// other error as the reason, too.
var (
	ErrPingTimeout     = errors.New("engineio: ping timeout")
	ErrTransportClosed = errors.New("engineio: transport closed")
	ErrClientClosed    = errors.New("engineio: closed by the client")
	ErrServerClosed    = errors.New("engineio: server closed")
	ErrQueueFull       = errors.New("engineio: send queue full")
	ErrPayloadTooLarge = errors.New("engineio: payload too large")
	ErrOverlap         = errors.New("engineio: overlapping polling requests")
	ErrHeartbeat       = errors.New("engineio: invalid heartbeat direction")
	ErrClosed          = errors.New("engineio: session closed")
	ErrNotText         = errors.New("engineio: message is not UTF-8 text")
)
