package app

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"os"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
)

// ServerTLSFlags are a gRPC server's TLS flags, the same on both binaries.
type ServerTLSFlags struct{ cert, key, clientCA *string }

// AddServerTLSFlags defines --tls-cert-file, --tls-key-file and
// --tls-client-ca-file; api names the server in the help text.
func AddServerTLSFlags(fs *flag.FlagSet, api string) ServerTLSFlags {
	return ServerTLSFlags{
		cert:     fs.String("tls-cert-file", "", "server certificate (PEM) for the "+api+"; empty: plaintext"),
		key:      fs.String("tls-key-file", "", "key of --tls-cert-file"),
		clientCA: fs.String("tls-client-ca-file", "", "CA bundle that client certificates must chain to (mutual TLS)"),
	}
}

// Append adds the server credentials the flags ask for (none: plaintext).
func (f ServerTLSFlags) Append(opts []grpc.ServerOption) ([]grpc.ServerOption, error) {
	creds, err := ServerTLS(*f.cert, *f.key, *f.clientCA)
	if err != nil || creds == nil {
		return opts, err
	}
	return append(opts, grpc.Creds(creds)), nil
}

// ServerTLS loads a server certificate, and a CA bundle whose certificates
// clients must present when clientCAFile is set (mutual TLS). Both empty: no
// TLS (nil, nil).
func ServerTLS(certFile, keyFile, clientCAFile string) (credentials.TransportCredentials, error) {
	cfg, err := ServerTLSConfig(certFile, keyFile, clientCAFile)
	if cfg == nil || err != nil {
		return nil, err
	}
	return credentials.NewTLS(cfg), nil
}

// Config is the flags' server TLS as a *tls.Config (nil: plaintext), for an
// HTTP listener that serves the same certificate as the gRPC one.
func (f ServerTLSFlags) Config() (*tls.Config, error) {
	return ServerTLSConfig(*f.cert, *f.key, *f.clientCA)
}

// ServerTLSConfig is ServerTLS as a *tls.Config.
func ServerTLSConfig(certFile, keyFile, clientCAFile string) (*tls.Config, error) {
	if certFile == "" && keyFile == "" {
		if clientCAFile != "" {
			return nil, errors.New("a client CA needs a server certificate and key")
		}
		return nil, nil
	}
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("server certificate: %w", err)
	}
	cfg := &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12}
	if clientCAFile != "" {
		pool, err := loadPool(clientCAFile)
		if err != nil {
			return nil, err
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// ClientTLS verifies servers against caFile and, with certFile and keyFile,
// presents a client certificate. All empty: no TLS (nil, nil).
// A non-empty serverName is checked in the server's certificate instead of
// the dialled host: gateways are dialled by pod IP, and one certificate
// naming a fixed name serves them all.
func ClientTLS(caFile, certFile, keyFile, serverName string) (credentials.TransportCredentials, error) {
	cfg, err := ClientTLSConfig(caFile, certFile, keyFile)
	if cfg == nil || err != nil {
		if err == nil && serverName != "" {
			err = fmt.Errorf("a TLS server name (%s) needs a CA file", serverName)
		}
		return nil, err
	}
	cfg.ServerName = serverName
	return credentials.NewTLS(cfg), nil
}

// ClientTLSConfig is ClientTLS as a *tls.Config (for the etcd client).
func ClientTLSConfig(caFile, certFile, keyFile string) (*tls.Config, error) {
	if caFile == "" && certFile == "" && keyFile == "" {
		return nil, nil
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if caFile != "" {
		pool, err := loadPool(caFile)
		if err != nil {
			return nil, err
		}
		cfg.RootCAs = pool
	}
	if certFile != "" || keyFile != "" {
		cert, err := tls.LoadX509KeyPair(certFile, keyFile)
		if err != nil {
			return nil, fmt.Errorf("client certificate: %w", err)
		}
		cfg.Certificates = []tls.Certificate{cert}
	}
	return cfg, nil
}

func loadPool(file string) (*x509.CertPool, error) {
	pem, err := os.ReadFile(file)
	if err != nil {
		return nil, fmt.Errorf("CA bundle: %w", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("CA bundle %s holds no certificate", file)
	}
	return pool, nil
}
