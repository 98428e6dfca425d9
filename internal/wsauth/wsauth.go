// Package wsauth authenticates WebSocket clients at the gateway with a JSON
// Web Token presented when the socket connects.
//
// The token travels in an "Authorization: Bearer" header or, because browsers
// cannot set headers on a WebSocket handshake, in a "token" query parameter.
// It is checked once, before the upgrade: a socket that exists was opened with
// a valid token, and its subject is recorded as the socket's user. An open
// socket is not closed when its token expires later; tokens are for opening
// sockets, as cookies are for starting sessions.
//
// Keys: an HMAC secret (HS256/384/512, at least 32 bytes) or a PEM public key
// (RSA: RS*/PS*; ECDSA: ES*; Ed25519: EdDSA). Only algorithms of the
// configured key's family are accepted, so a token signed with HMAC under a
// public key (the classic algorithm-confusion attack) is refused. Tokens must
// carry "exp" and a non-empty "sub"; "iss" and "aud" are checked when
// configured.
package wsauth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/golang-jwt/jwt/v5"
)

// MaxSubjectBytes bounds the subject kept with every socket in etcd.
const MaxSubjectBytes = 256

// MinHMACSecretBytes is the shortest HMAC secret accepted: RFC 7518 asks for
// a key at least as long as the hash output of HS256.
const MinHMACSecretBytes = 32

// Leeway absorbs clock skew between the token's issuer and the gateway.
const Leeway = 30 * time.Second

// ErrNoToken is returned when a request carries no token.
var ErrNoToken = errors.New("no token: send Authorization: Bearer <jwt> or ?token=<jwt>")

// Options configures a Verifier; exactly one of HMACSecret and PublicKey is set.
type Options struct {
	HMACSecret []byte
	PublicKey  any // *rsa.PublicKey, *ecdsa.PublicKey or ed25519.PublicKey
	Issuer     string
	Audience   string
	// Now is the clock (tests); time.Now when nil.
	Now func() time.Time
}

// Verifier checks tokens signed with one key.
type Verifier struct {
	key    any
	parser *jwt.Parser
}

// New builds a Verifier.
func New(o Options) (*Verifier, error) {
	var key any
	var methods []string
	switch {
	case o.HMACSecret != nil && o.PublicKey != nil:
		return nil, errors.New("jwt: give an HMAC secret or a public key, not both")
	case o.HMACSecret != nil:
		if len(o.HMACSecret) < MinHMACSecretBytes {
			return nil, fmt.Errorf("jwt: HMAC secret is %d bytes; at least %d are needed", len(o.HMACSecret), MinHMACSecretBytes)
		}
		key, methods = o.HMACSecret, []string{"HS256", "HS384", "HS512"}
	case o.PublicKey != nil:
		switch o.PublicKey.(type) {
		case *rsa.PublicKey:
			methods = []string{"RS256", "RS384", "RS512", "PS256", "PS384", "PS512"}
		case *ecdsa.PublicKey:
			methods = []string{"ES256", "ES384", "ES512"}
		case ed25519.PublicKey:
			methods = []string{"EdDSA"}
		default:
			return nil, fmt.Errorf("jwt: unsupported public key type %T", o.PublicKey)
		}
		key = o.PublicKey
	default:
		return nil, errors.New("jwt: no key")
	}
	opts := []jwt.ParserOption{
		jwt.WithValidMethods(methods),
		jwt.WithExpirationRequired(),
		jwt.WithLeeway(Leeway),
	}
	if o.Issuer != "" {
		opts = append(opts, jwt.WithIssuer(o.Issuer))
	}
	if o.Audience != "" {
		opts = append(opts, jwt.WithAudience(o.Audience))
	}
	if o.Now != nil {
		opts = append(opts, jwt.WithTimeFunc(o.Now))
	}
	return &Verifier{key: key, parser: jwt.NewParser(opts...)}, nil
}

// Verify checks a token and returns its subject.
func (v *Verifier) Verify(token string) (string, error) {
	var claims jwt.RegisteredClaims
	if _, err := v.parser.ParseWithClaims(token, &claims, func(*jwt.Token) (any, error) { return v.key, nil }); err != nil {
		return "", err
	}
	switch sub := claims.Subject; {
	case sub == "":
		return "", errors.New("token has no subject (sub)")
	case len(sub) > MaxSubjectBytes || !utf8.ValidString(sub) || strings.ContainsFunc(sub, unicode.IsControl):
		// The subject travels in the X-Socket-User header, which cannot
		// carry control characters.
		return "", fmt.Errorf("token subject must be at most %d bytes of UTF-8 without control characters", MaxSubjectBytes)
	default:
		return sub, nil
	}
}

// Authenticate verifies the token a handshake request carries and returns
// its subject.
func (v *Verifier) Authenticate(r *http.Request) (string, error) {
	tok := TokenFromRequest(r)
	if tok == "" {
		return "", ErrNoToken
	}
	return v.Verify(tok)
}

// TokenFromRequest takes the token from the Authorization header, or else
// from the token query parameter.
func TokenFromRequest(r *http.Request) string {
	if h := r.Header.Get("Authorization"); h != "" {
		scheme, tok, ok := strings.Cut(h, " ")
		if ok && strings.EqualFold(scheme, "Bearer") {
			return strings.TrimSpace(tok)
		}
		return ""
	}
	return r.URL.Query().Get("token")
}

// ReadHMACSecret reads a secret file; one trailing newline is dropped so
// that files written by echo work, other bytes are kept as they are.
func ReadHMACSecret(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwt secret file: %w", err)
	}
	b = []byte(strings.TrimSuffix(strings.TrimSuffix(string(b), "\n"), "\r"))
	return b, nil
}

// ReadPublicKey reads a PEM file holding a public key ("PUBLIC KEY" or
// "RSA PUBLIC KEY") or a certificate whose key is used.
func ReadPublicKey(path string) (any, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("jwt public key file: %w", err)
	}
	block, _ := pem.Decode(b)
	if block == nil {
		return nil, fmt.Errorf("jwt public key file %s: no PEM block", path)
	}
	var key any
	switch block.Type {
	case "PUBLIC KEY":
		key, err = x509.ParsePKIXPublicKey(block.Bytes)
	case "RSA PUBLIC KEY":
		key, err = x509.ParsePKCS1PublicKey(block.Bytes)
	case "CERTIFICATE":
		var cert *x509.Certificate
		if cert, err = x509.ParseCertificate(block.Bytes); err == nil {
			key = cert.PublicKey
		}
	default:
		return nil, fmt.Errorf("jwt public key file %s: PEM block %q is not a public key or certificate", path, block.Type)
	}
	if err != nil {
		return nil, fmt.Errorf("jwt public key file %s: %w", path, err)
	}
	return key, nil
}

// Load builds a Verifier from the gateway's flags; nil when neither key file
// is given.
func Load(secretFile, publicKeyFile, issuer, audience string) (*Verifier, error) {
	o := Options{Issuer: issuer, Audience: audience}
	var err error
	switch {
	case secretFile != "" && publicKeyFile != "":
		return nil, errors.New("--jwt-hmac-secret-file and --jwt-public-key-file are exclusive")
	case secretFile != "":
		o.HMACSecret, err = ReadHMACSecret(secretFile)
	case publicKeyFile != "":
		o.PublicKey, err = ReadPublicKey(publicKeyFile)
	default:
		if issuer != "" || audience != "" {
			return nil, errors.New("--jwt-issuer and --jwt-audience need --jwt-hmac-secret-file or --jwt-public-key-file")
		}
		return nil, nil
	}
	if err != nil {
		return nil, err
	}
	return New(o)
}
