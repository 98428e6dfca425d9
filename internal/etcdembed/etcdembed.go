// Package etcdembed runs a single-member etcd inside the process, for
// development stacks (membership-server without --etcd-endpoints) and tests.
package etcdembed

import (
	"fmt"
	"net/url"
	"os"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	"go.etcd.io/etcd/server/v3/embed"
)

// Config says where the embedded etcd listens and keeps its data.
type Config struct {
	Name string // member name; "default" when empty
	// Dir is the data directory; empty means a fresh temporary directory,
	// removed by Close, so nothing is left behind in the working directory.
	Dir        string
	ClientAddr string // host:port for clients
	PeerAddr   string // host:port for raft peers
	// LogLevel of etcd's own logger; "error" when empty.
	LogLevel string
	// InitialCluster lists every member as "name=http://peer,…" for a
	// multi-member cluster; empty means a cluster of this member alone. It is
	// read only when Dir holds no data yet.
	InitialCluster string
	// CertFile, KeyFile and ClientCAFile, when set, make clients use TLS and
	// present a certificate chaining to ClientCAFile.
	CertFile, KeyFile, ClientCAFile string
	// MaxRequestBytes and MaxTxnOps are etcd's --max-request-bytes and
	// --max-txn-ops; 0 keeps etcd's defaults (1.5 MiB, 128).
	MaxRequestBytes, MaxTxnOps uint
}

// Server is a running embedded etcd.
type Server struct {
	e       *embed.Etcd
	closing atomic.Bool
	tempDir string // removed by Close; "" when the caller named Dir
	// Dir is the data directory in use.
	Dir string
	// Endpoint is the client URL, e.g. "http://127.0.0.1:2379".
	Endpoint string
}

// Start launches etcd and waits until it serves clients (at most a minute).
func Start(c Config) (*Server, error) {
	cfg := embed.NewConfig()
	if c.Name != "" {
		cfg.Name = c.Name
	}
	srv := &Server{Dir: c.Dir}
	if srv.Dir == "" {
		dir, err := os.MkdirTemp("", "membership-etcd-")
		if err != nil {
			return nil, fmt.Errorf("embedded etcd data directory: %w", err)
		}
		srv.tempDir, srv.Dir = dir, dir
	}
	cfg.Dir = srv.Dir
	cfg.LogLevel = c.LogLevel
	if cfg.LogLevel == "" {
		cfg.LogLevel = "error"
	}
	scheme := "http://"
	if c.CertFile != "" {
		scheme = "https://"
		cfg.ClientTLSInfo = transport.TLSInfo{CertFile: c.CertFile, KeyFile: c.KeyFile,
			TrustedCAFile: c.ClientCAFile, ClientCertAuth: c.ClientCAFile != ""}
	}
	client, err := url.Parse(scheme + c.ClientAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd client address: %w", err)
	}
	peer, err := url.Parse("http://" + c.PeerAddr)
	if err != nil {
		return nil, fmt.Errorf("embedded etcd peer address: %w", err)
	}
	cfg.ListenClientUrls = []url.URL{*client}
	cfg.AdvertiseClientUrls = []url.URL{*client}
	cfg.ListenPeerUrls = []url.URL{*peer}
	cfg.AdvertisePeerUrls = []url.URL{*peer}
	cfg.InitialCluster = c.InitialCluster
	if cfg.InitialCluster == "" {
		cfg.InitialCluster = cfg.InitialClusterFromName(cfg.Name)
	}
	if c.MaxRequestBytes != 0 {
		cfg.MaxRequestBytes = c.MaxRequestBytes
	}
	if c.MaxTxnOps != 0 {
		cfg.MaxTxnOps = c.MaxTxnOps
	}
	// Keep history bounded in long-running development stacks.
	cfg.AutoCompactionMode = "periodic"
	cfg.AutoCompactionRetention = "1h"
	// etcd reports its own listeners closing as errors; once Close has begun
	// those are expected and dropped.
	cfg.ZapLoggerBuilder = embed.NewZapLoggerBuilder(zap.New(&closingFilter{Core: zapCore(cfg.LogLevel), closing: &srv.closing}))
	e, err := embed.StartEtcd(cfg)
	if err != nil {
		srv.removeTemp()
		return nil, fmt.Errorf("start embedded etcd: %w", err)
	}
	select {
	case <-e.Server.ReadyNotify():
	case err := <-e.Err():
		e.Close()
		srv.removeTemp()
		return nil, fmt.Errorf("embedded etcd: %w", err)
	case <-time.After(time.Minute):
		e.Server.Stop()
		e.Close()
		srv.removeTemp()
		return nil, fmt.Errorf("embedded etcd not ready after a minute")
	}
	srv.e, srv.Endpoint = e, client.String()
	return srv, nil
}

func zapCore(level string) zapcore.Core {
	lvl, err := zapcore.ParseLevel(level)
	if err != nil {
		lvl = zapcore.ErrorLevel
	}
	enc := zapcore.NewJSONEncoder(zap.NewProductionEncoderConfig())
	return zapcore.NewCore(enc, zapcore.Lock(os.Stderr), lvl)
}

// closingFilter drops every entry logged after Close began.
type closingFilter struct {
	zapcore.Core
	closing *atomic.Bool
}

func (f *closingFilter) With(fields []zapcore.Field) zapcore.Core {
	return &closingFilter{Core: f.Core.With(fields), closing: f.closing}
}

func (f *closingFilter) Check(e zapcore.Entry, ce *zapcore.CheckedEntry) *zapcore.CheckedEntry {
	if f.closing.Load() || !f.Enabled(e.Level) {
		return ce
	}
	return ce.AddCore(e, f)
}

// Err reports a fatal error of the running server.
func (s *Server) Err() <-chan error { return s.e.Err() }

// Close stops etcd and waits for it; a temporary data directory goes with it.
func (s *Server) Close() {
	s.closing.Store(true)
	s.e.Close()
	s.removeTemp()
}

func (s *Server) removeTemp() {
	if s.tempDir != "" {
		_ = os.RemoveAll(s.tempDir)
	}
}
