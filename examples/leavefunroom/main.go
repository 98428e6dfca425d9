// Command leavefunroom is the first example of Sails' sails.sockets.leave()
// page, in Go: an app endpoint that makes the socket that sent the request
// leave the room named in its body.
//
// Run it beside a gateway started with --upstream-url http://127.0.0.1:3000;
// a socket then sends
//
//	{"type":"request","id":1,"method":"POST","path":"/leaveFunRoom","body":{"roomName":"fun"}}
//
// and gets {"type":"left","room":"fun"} and
// {"type":"response","id":1,"status":200,"body":{"message":"Left a room called fun."}}.
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"log"
	"net/http"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:3000", "address of this app (the gateway's --upstream-url)")
	membershipAddr := flag.String("membership-addr", "127.0.0.1:50051", "membership-server gRPC address")
	flag.Parse()
	cc, err := grpc.NewClient(*membershipAddr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		log.Fatal(err)
	}
	defer cc.Close()
	mux := http.NewServeMux()
	mux.Handle("POST /leaveFunRoom", leaveFunRoom(membershipv1.NewMembershipServiceClient(cc)))
	log.Printf("leavefunroom listening on %s", *listen)
	srv := &http.Server{Addr: *listen, Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	log.Fatal(srv.ListenAndServe())
}

// leaveFunRoom is the Sails action
//
//	leaveFunRoom: function(req, res) {
//	  if (!req.isSocket) { return res.badRequest(); }
//	  sails.sockets.leave(req, req.param('roomName'), function(err) { … });
//	}
//
// The gateway marks a socket request with X-Socket-Id; passing it on as
// x-socket-id metadata lets Leave act on "the socket of this request".
func leaveFunRoom(api membershipv1.MembershipServiceClient) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		socket := r.Header.Get("X-Socket-Id")
		if socket == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "this endpoint only serves socket requests"})
			return
		}
		var body struct {
			RoomName string `json:"roomName"`
		}
		if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, 64<<10)).Decode(&body); err != nil || body.RoomName == "" {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": "roomName is required"})
			return
		}
		ctx := metadata.AppendToOutgoingContext(r.Context(), "x-socket-id", socket)
		if _, err := api.Leave(ctx, &membershipv1.LeaveRequest{Room: body.RoomName}); err != nil {
			writeJSON(w, httpStatus(err), map[string]string{"error": status.Convert(err).Message()})
			return
		}
		writeJSON(w, http.StatusOK, map[string]string{"message": fmt.Sprintf("Left a room called %s.", body.RoomName)})
	})
}

func httpStatus(err error) int {
	switch status.Code(err) {
	case codes.InvalidArgument:
		return http.StatusBadRequest
	case codes.NotFound:
		return http.StatusNotFound
	case codes.Unavailable, codes.DeadlineExceeded:
		return http.StatusServiceUnavailable
	default:
		return http.StatusInternalServerError
	}
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
