package service

// This file holds the delivery calls, Broadcast and Blast: validate and
// encode the message once, find the target gateways in the broadcast target
// index, and hand it to them through the gateway connections
// (internal/gatewayconn).

import (
	"context"
	"strconv"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/structpb"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
	"github.com/socketrooms/membership/internal/socketio"
	"github.com/socketrooms/membership/internal/store"
)

// Broadcast delivers an event to the members of some rooms.
func (s *Server) Broadcast(ctx context.Context, req *membershipv1.BroadcastRequest) (*membershipv1.BroadcastResponse, error) {
	rooms, err := validateRooms("rooms", req.GetRooms())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	msg, err := s.message(ctx, req.GetEvent(), req.GetData(), req.GetExceptSocketIds())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	msg.Rooms = rooms
	targets, err := s.targets.Targets(ctx, rooms)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	delivered, failed := s.deliver(ctx, targets, msg)
	return &membershipv1.BroadcastResponse{Delivered: delivered, Revision: targets.Revision, FailedGateways: failed}, nil
}

// Blast delivers an event to every connected socket.
func (s *Server) Blast(ctx context.Context, req *membershipv1.BlastRequest) (*membershipv1.BlastResponse, error) {
	msg, err := s.message(ctx, req.GetEvent(), req.GetData(), req.GetExceptSocketIds())
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	msg.AllSockets = true
	targets, err := s.targets.Targets(ctx, nil)
	if err != nil {
		return nil, toStatus(ctx, s.log, err)
	}
	delivered, failed := s.deliver(ctx, targets, msg)
	return &membershipv1.BlastResponse{Delivered: delivered, Revision: targets.Revision, FailedGateways: failed}, nil
}

// message validates and encodes the common part of a delivery, once.
func (s *Server) message(ctx context.Context, event string, data *structpb.Value, except []string) (*gatewayv1.DeliverRequest, error) {
	if event == "" {
		event = "message"
	}
	if len(event) > maxEventBytes || !utf8.ValidString(event) {
		return nil, invalid("event", "must be at most 256 bytes of UTF-8")
	}
	if socketio.IsReservedEvent(event) {
		// Socket.IO clients would take it for their own lifecycle event
		// or for a gateway notice (internal/socketio, reserved.go).
		return nil, invalid("event", strconv.Quote(event)+" is reserved: Socket.IO clients keep it for their own events, or it names a gateway notice (membership:…)")
	}
	if len(except) > maxExceptSockets {
		return nil, invalid("except_socket_ids", "at most 1000 sockets")
	}
	if caller := metadataSocket(ctx); caller != "" {
		except = append(append([]string(nil), except...), caller)
	}
	msg := &gatewayv1.DeliverRequest{Event: event, ExceptSocketIds: except, DataJson: []byte("null")}
	if data != nil {
		b, err := protojson.Marshal(data)
		if err != nil {
			return nil, invalid("data", err.Error())
		}
		if len(b) > s.maxPayload {
			return nil, &fieldError{field: "data", reason: ReasonPayloadTooLarge,
				msg: "is " + itoa(int64(len(b))) + " bytes of JSON; at most " + itoa(int64(s.maxPayload)) + " allowed"}
		}
		msg.DataJson = b
	}
	return msg, nil
}

// deliver hands msg to every target gateway (gatewayconn.Pool.Deliver) and
// counts the outcome in the service's metrics.
func (s *Server) deliver(ctx context.Context, t store.Targets, msg *gatewayv1.DeliverRequest) (delivered int64, failed int32) {
	res := s.gateways.Deliver(ctx, t, msg)
	s.metrics.delivered.Add(float64(res.Delivered))
	s.metrics.failedGateways.Add(float64(res.Failed))
	return res.Delivered, res.Failed
}
