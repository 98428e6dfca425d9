package testutil

import (
	"context"
	"net"
	"testing"

	pb "go.etcd.io/etcd/api/v3/etcdserverpb"
	"google.golang.org/grpc"
)

// StartEtcdStatusOnly serves only etcd's Maintenance.Status on a loopback
// port, reporting version, and returns its address. It is a stand-in for an
// etcd release that cannot run here (an old one), and is fit for exactly one
// use: testing that a binary refuses such a server at start
// (app.CheckEtcdVersion). Everything else is answered UNIMPLEMENTED.
func StartEtcdStatusOnly(t testing.TB, version string) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	pb.RegisterMaintenanceServer(srv, statusOnly{version: version})
	done := make(chan struct{})
	go func() { _ = srv.Serve(l); close(done) }()
	t.Cleanup(func() { srv.Stop(); <-done })
	return l.Addr().String()
}

type statusOnly struct {
	pb.UnimplementedMaintenanceServer
	version string
}

func (s statusOnly) Status(context.Context, *pb.StatusRequest) (*pb.StatusResponse, error) {
	return &pb.StatusResponse{Header: &pb.ResponseHeader{ClusterId: 1, MemberId: 1, Revision: 1}, Version: s.version}, nil
}
