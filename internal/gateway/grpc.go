package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	gatewayv1 "github.com/socketrooms/membership/gen/gateway/v1"
	"github.com/socketrooms/membership/internal/grpcedge"
)

// RegisterGRPC serves the internal delivery API on s.
func (g *Gateway) RegisterGRPC(s grpc.ServiceRegistrar) {
	gatewayv1.RegisterGatewayServiceServer(s, &grpcService{g: g})
}

type grpcService struct {
	gatewayv1.UnimplementedGatewayServiceServer
	g *Gateway
}

// Deliver waits until membership is applied up to the request's revision and
// queues the message for the local target sockets.
func (s *grpcService) Deliver(ctx context.Context, req *gatewayv1.DeliverRequest) (*gatewayv1.DeliverResponse, error) {
	if len(req.DataJson) > 0 && !json.Valid(req.DataJson) {
		return nil, status.Error(codes.InvalidArgument, "data_json is not valid JSON")
	}
	sess, err := s.live(req.GatewayId, req.Lease)
	if err != nil {
		return nil, err
	}
	if _, err := s.g.timedWait(ctx, sess, req.Revision); err != nil {
		return nil, waitError(err)
	}
	// Re-check after waiting: a lease that expired meanwhile must not deliver.
	if !sess.alive() || s.g.currentSession() != sess {
		return nil, status.Error(codes.Unavailable, "gateway lost its lease")
	}
	var forwards []forward
	d := delivery{
		rev:      req.Revision,
		forwards: &forwards,
		rooms:    req.Rooms,
		all:      req.AllSockets,
		event:    req.Event,
		data:     req.DataJson,
	}
	if len(req.ExceptSocketIds) > 0 {
		d.except = make(map[string]struct{}, len(req.ExceptSocketIds))
		for _, id := range req.ExceptSocketIds {
			d.except[id] = struct{}{}
		}
	}
	native, sio, dropped := s.g.hub.deliverByProtocol(d)
	// Messages for sockets handed off to another gateway go there before
	// this call returns, so that a Broadcast that returned reached them
	// before any later one.
	s.g.forwardMessages(ctx, forwards)
	s.g.metrics.delivered.WithLabelValues(protocolNative).Add(float64(native))
	s.g.metrics.delivered.WithLabelValues(protocolSocketIO).Add(float64(sio))
	s.g.metrics.dropped.Add(float64(dropped))
	return &gatewayv1.DeliverResponse{Delivered: native + sio, Dropped: dropped}, nil
}

// WaitApplied returns once membership is applied up to the revision.
func (s *grpcService) WaitApplied(ctx context.Context, req *gatewayv1.WaitAppliedRequest) (*gatewayv1.WaitAppliedResponse, error) {
	sess, err := s.live(req.GatewayId, req.Lease)
	if err != nil {
		return nil, err
	}
	rev, err := s.g.timedWait(ctx, sess, req.Revision)
	if err != nil {
		return nil, waitError(err)
	}
	return &gatewayv1.WaitAppliedResponse{AppliedRevision: rev}, nil
}

// Handoff hands a detached socket of this gateway to the calling gateway
// (handoff.go).
func (s *grpcService) Handoff(stream gatewayv1.GatewayService_HandoffServer) error {
	req, err := stream.Recv()
	if err != nil {
		return err
	}
	b := req.GetBegin()
	if b == nil {
		return status.Error(codes.InvalidArgument, "the first message of a handoff must be begin")
	}
	if _, err := s.live(b.GatewayId, b.Lease); err != nil {
		return err
	}
	return s.g.serveHandoff(stream, b)
}

// ForwardMessage gives a socket handed off to this gateway a message its
// old gateway received after the handoff.
func (s *grpcService) ForwardMessage(_ context.Context, req *gatewayv1.ForwardMessageRequest) (*gatewayv1.ForwardMessageResponse, error) {
	if !isMessageFrame(req.Frame) {
		return nil, status.Error(codes.InvalidArgument, "frame: not a JSON message frame (one that begins "+messageHead+")")
	}
	if _, err := s.live(req.GatewayId, req.Lease); err != nil {
		return nil, err
	}
	return &gatewayv1.ForwardMessageResponse{Delivered: s.g.acceptForward(req.SocketId, req.Frame)}, nil
}

// timedWait is waitApplied, observed.
func (g *Gateway) timedWait(ctx context.Context, sess *session, rev int64) (int64, error) {
	start := time.Now()
	applied, err := g.waitApplied(ctx, sess, rev)
	g.metrics.waitApplied.Observe(time.Since(start).Seconds())
	return applied, err
}

// live returns the current session if the caller means this gateway and
// this lease (0: any).
func (s *grpcService) live(gatewayID string, lease int64) (*session, error) {
	if gatewayID != "" && gatewayID != s.g.cfg.ID {
		return nil, status.Errorf(codes.FailedPrecondition, "this is gateway %q, not %q", s.g.cfg.ID, gatewayID)
	}
	sess := s.g.currentSession()
	if sess == nil || !sess.alive() {
		return nil, status.Error(codes.Unavailable, "gateway holds no live lease")
	}
	if lease != 0 && !sess.holds(clientv3.LeaseID(lease)) {
		return nil, status.Error(codes.FailedPrecondition, "that registration of this gateway has ended; its sockets are gone")
	}
	return sess, nil
}

func waitError(err error) error {
	if errors.Is(err, errSessionEnded) {
		return status.Error(codes.Unavailable, err.Error())
	}
	if errors.Is(err, context.DeadlineExceeded) {
		return status.Error(codes.DeadlineExceeded, "membership not applied up to the revision before the deadline")
	}
	return status.FromContextError(err).Err()
}

// ErrorInfo reasons of GatewayService errors answered before a handler runs
// (internal/grpcedge), in domain "gateway.v1".
const (
	// ReasonOverloaded: the gateway's --max-inflight-payload-bytes is spent
	// by Delivers in flight (RESOURCE_EXHAUSTED); the membership-server
	// counts the gateway as failed for that message.
	ReasonOverloaded = grpcedge.ReasonOverloaded
	// ReasonMalformedRequest: the request's bytes do not decode
	// (INVALID_ARGUMENT, metadata field where one can be named).
	ReasonMalformedRequest = grpcedge.ReasonMalformedRequest
)
