package main

import (
	"context"
	"crypto/rand"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/golang-jwt/jwt/v5"

	membershipv1 "github.com/socketrooms/membership/gen/membership/v1"
)

// Users and sockets of the users scenario.
const (
	usersBenchUsers   = 64
	usersBenchPerUser = 4
)

// benchUsers: the cost of the user index on Join/Leave. Two gateways of one
// stack, one without JWT (sockets without a user: no user index key, not
// counted as users) and one with an HMAC JWT secret (64 users of 4 sockets
// each: a user index key per socket, and every membership counted in the
// room's users by the membership-server's index), and the same Join/Leave
// loop through the API on each, alternating at every concurrency level in
// one run. Then Join/Leave by user (4 sockets a call) on the JWT gateway.
func benchUsers(ctx context.Context, cfg config) error {
	st, err := startStack(ctx, cfg)
	if err != nil {
		return err
	}
	defer st.stop()
	secret := make([]byte, 32)
	_, _ = rand.Read(secret)
	dir, err := os.MkdirTemp("", "bench-jwt")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	secretFile := filepath.Join(dir, "secret")
	if err := os.WriteFile(secretFile, secret, 0o600); err != nil {
		return err
	}
	anonGW, err := st.addGateway("bench-anon", "--send-queue", "4096")
	if err != nil {
		return err
	}
	userGW, err := st.addGateway("bench-users", "--send-queue", "4096", "--jwt-hmac-secret-file", secretFile)
	if err != nil {
		return err
	}
	n := usersBenchUsers * usersBenchPerUser
	anon, err := dialMany(ctx, anonGW.url(), n, 32, 0)
	if err != nil {
		return err
	}
	defer closeAll(anon)
	var withUser []*socket
	defer func() { closeAll(withUser) }()
	for u := range usersBenchUsers {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{
			"sub": fmt.Sprintf("user-%d", u), "exp": time.Now().Add(24 * time.Hour).Unix(),
		}).SignedString(secret)
		if err != nil {
			return err
		}
		socks, err := dialMany(ctx, userGW.url()+"?token="+url.QueryEscape(tok), usersBenchPerUser, usersBenchPerUser, 0)
		if err != nil {
			return err
		}
		withUser = append(withUser, socks...)
	}
	for _, s := range append(append([]*socket{}, anon...), withUser...) {
		drain(s)
	}
	byUser := func(ctx context.Context, w int, join bool) error {
		user, room := fmt.Sprintf("user-%d", w%usersBenchUsers), fmt.Sprintf("tpu-%d", w)
		if join {
			_, err := st.api.Join(ctx, &membershipv1.JoinRequest{User: user, Room: room})
			return err
		}
		_, err := st.api.Leave(ctx, &membershipv1.LeaveRequest{User: user, Room: room})
		return err
	}

	fmt.Printf("## Join/Leave with and without JWT users (%v per point)\n\n", cfg.duration)
	fmt.Println("| concurrency | no user calls/s | p50 | p99 | JWT users calls/s | p50 | p99 | users / no user | by user (4 sockets) calls/s | p50 | p99 |")
	fmt.Println("|---|---|---|---|---|---|---|---|---|---|---|")
	levels, err := concurrencyLevels(cfg.tpLevels, n)
	if err != nil {
		return err
	}
	// Socket i of withUser is user i / usersBenchPerUser's; worker w uses
	// socket w.
	for _, c := range levels {
		aRate, aLat := loop(ctx, c, cfg.duration, apiJoinLeave(st.api, anon))
		uRate, uLat := loop(ctx, c, cfg.duration, apiJoinLeave(st.api, withUser))
		bRate, bLat := loop(ctx, c, cfg.duration, byUser)
		fmt.Printf("| %d | %.0f | %s | %s | %.0f | %s | %s | %.2f× | %.0f | %s | %s |\n", c,
			aRate, ms(aLat.pct(50)), ms(aLat.pct(99)), uRate, ms(uLat.pct(50)), ms(uLat.pct(99)), uRate/aRate,
			bRate, ms(bLat.pct(50)), ms(bLat.pct(99)))
	}
	fmt.Println()
	return nil
}

// concurrencyLevels parses --tp-concurrency: comma-separated levels, each
// 1 to max (the sockets there are, one per worker).
func concurrencyLevels(spec string, max int) ([]int, error) {
	var out []int
	for _, level := range strings.Split(spec, ",") {
		c, err := strconv.Atoi(level)
		if err != nil || c < 1 || c > max {
			return nil, fmt.Errorf("concurrency %q: 1 to %d", level, max)
		}
		out = append(out, c)
	}
	return out, nil
}

// apiJoinLeave is a loop call: worker w joins (or leaves) its socket
// socks[w] to room tp-{w mod 10} through api.
func apiJoinLeave(api membershipv1.MembershipServiceClient, socks []*socket) func(ctx context.Context, w int, join bool) error {
	return func(ctx context.Context, w int, join bool) error {
		room := fmt.Sprintf("tp-%d", w%10)
		if join {
			_, err := api.Join(ctx, &membershipv1.JoinRequest{SocketId: socks[w].id, Room: room})
			return err
		}
		_, err := api.Leave(ctx, &membershipv1.LeaveRequest{SocketId: socks[w].id, Room: room})
		return err
	}
}
