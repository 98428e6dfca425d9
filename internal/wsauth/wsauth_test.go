package wsauth

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var secret = []byte("0123456789abcdef0123456789abcdef")

func sign(t *testing.T, m jwt.SigningMethod, key any, claims jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(m, claims).SignedString(key)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func valid() jwt.MapClaims {
	return jwt.MapClaims{"sub": "alice", "exp": time.Now().Add(time.Hour).Unix()}
}

func with(c jwt.MapClaims, k string, v any) jwt.MapClaims {
	out := jwt.MapClaims{}
	for kk, vv := range c {
		out[kk] = vv
	}
	if v == nil {
		delete(out, k)
	} else {
		out[k] = v
	}
	return out
}

func TestHMAC(t *testing.T) {
	v, err := New(Options{HMACSecret: secret, Issuer: "chat", Audience: "gateways"})
	if err != nil {
		t.Fatal(err)
	}
	good := with(with(valid(), "iss", "chat"), "aud", "gateways")
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	for _, tc := range []struct {
		name    string
		token   string
		wantErr string
	}{
		{"valid", sign(t, jwt.SigningMethodHS256, secret, good), ""},
		{"valid HS512", sign(t, jwt.SigningMethodHS512, secret, good), ""},
		{"wrong secret", sign(t, jwt.SigningMethodHS256, []byte("another secret of enough length!!"), good), "signature is invalid"},
		{"expired", sign(t, jwt.SigningMethodHS256, secret, with(good, "exp", time.Now().Add(-time.Minute).Unix())), "expired"},
		{"expired within leeway", sign(t, jwt.SigningMethodHS256, secret, with(good, "exp", time.Now().Add(-Leeway/2).Unix())), ""},
		{"not yet valid", sign(t, jwt.SigningMethodHS256, secret, with(good, "nbf", time.Now().Add(time.Hour).Unix())), "not valid yet"},
		{"no exp", sign(t, jwt.SigningMethodHS256, secret, with(good, "exp", nil)), "exp claim is required"},
		{"no sub", sign(t, jwt.SigningMethodHS256, secret, with(good, "sub", nil)), "no subject"},
		{"long sub", sign(t, jwt.SigningMethodHS256, secret, with(good, "sub", strings.Repeat("x", MaxSubjectBytes+1))), "at most"},
		{"sub with a newline", sign(t, jwt.SigningMethodHS256, secret, with(good, "sub", "alice\nX-Evil: 1")), "control characters"},
		{"wrong issuer", sign(t, jwt.SigningMethodHS256, secret, with(good, "iss", "other")), "issuer"},
		{"wrong audience", sign(t, jwt.SigningMethodHS256, secret, with(good, "aud", "other")), "audience"},
		{"alg none", sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, good), "signing method none is invalid"},
		{"RSA-signed under an HMAC key", sign(t, jwt.SigningMethodRS256, rsaKey, good), "signing method RS256 is invalid"},
		{"garbage", "not.a.token", "malformed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			sub, err := v.Verify(tc.token)
			if tc.wantErr == "" {
				if err != nil || sub != "alice" {
					t.Fatalf("Verify = %q, %v; want alice", sub, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Verify = %q, %v; want an error containing %q", sub, err, tc.wantErr)
			}
		})
	}
}

func TestPublicKeys(t *testing.T) {
	rsaKey, _ := rsa.GenerateKey(rand.Reader, 2048)
	ecKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	edPub, edKey, _ := ed25519.GenerateKey(rand.Reader)
	dir := t.TempDir()
	write := func(name string, block *pem.Block) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, pem.EncodeToMemory(block), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pkix := func(pub any) []byte {
		b, err := x509.MarshalPKIXPublicKey(pub)
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	for _, tc := range []struct {
		name   string
		file   string
		method jwt.SigningMethod
		key    any
	}{
		{"RSA PKIX", write("rsa.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: pkix(&rsaKey.PublicKey)}), jwt.SigningMethodRS256, rsaKey},
		{"RSA PKCS1 PS384", write("rsa1.pem", &pem.Block{Type: "RSA PUBLIC KEY", Bytes: x509.MarshalPKCS1PublicKey(&rsaKey.PublicKey)}), jwt.SigningMethodPS384, rsaKey},
		{"ECDSA", write("ec.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: pkix(&ecKey.PublicKey)}), jwt.SigningMethodES256, ecKey},
		{"Ed25519", write("ed.pem", &pem.Block{Type: "PUBLIC KEY", Bytes: pkix(edPub)}), jwt.SigningMethodEdDSA, edKey},
	} {
		t.Run(tc.name, func(t *testing.T) {
			v, err := Load("", tc.file, "", "")
			if err != nil {
				t.Fatal(err)
			}
			if sub, err := v.Verify(sign(t, tc.method, tc.key, valid())); err != nil || sub != "alice" {
				t.Fatalf("Verify = %q, %v", sub, err)
			}
			// A token signed with HMAC using the public key's bytes as the
			// secret must not pass (algorithm confusion).
			raw, _ := os.ReadFile(tc.file)
			if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, raw, valid())); err == nil {
				t.Fatal("HS256 token accepted under a public key")
			}
		})
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	short := filepath.Join(dir, "short")
	_ = os.WriteFile(short, []byte("tooshort\n"), 0o600)
	notPEM := filepath.Join(dir, "notpem")
	_ = os.WriteFile(notPEM, []byte("hello"), 0o600)
	good := filepath.Join(dir, "good")
	_ = os.WriteFile(good, append(append([]byte{}, secret...), '\n'), 0o600)
	for _, tc := range []struct {
		name, secret, pub, iss, want string
	}{
		{"both", good, notPEM, "", "exclusive"},
		{"short secret", short, "", "", "at least 32"},
		{"not PEM", "", notPEM, "", "no PEM block"},
		{"missing file", filepath.Join(dir, "nope"), "", "", "no such file"},
		{"issuer without key", "", "", "chat", "need"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Load(tc.secret, tc.pub, tc.iss, ""); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Load = %v; want an error containing %q", err, tc.want)
			}
		})
	}
	// The trailing newline is not part of the secret.
	v, err := Load(good, "", "", "")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := v.Verify(sign(t, jwt.SigningMethodHS256, secret, valid())); err != nil {
		t.Fatal(err)
	}
	if v, err := Load("", "", "", ""); v != nil || err != nil {
		t.Fatalf("Load with no key = %v, %v; want nil, nil", v, err)
	}
}

func TestTokenFromRequest(t *testing.T) {
	for _, tc := range []struct {
		target, auth, want string
	}{
		{"/ws", "Bearer abc", "abc"},
		{"/ws", "bearer  abc ", "abc"},
		{"/ws?token=q", "", "q"},
		{"/ws?token=q", "Bearer h", "h"},
		{"/ws?token=q", "Basic xyz", ""}, // a header that is not a bearer token is not overridden by the query
		{"/ws", "", ""},
	} {
		r := httptest.NewRequest("GET", tc.target, nil)
		if tc.auth != "" {
			r.Header.Set("Authorization", tc.auth)
		}
		if got := TokenFromRequest(r); got != tc.want {
			t.Errorf("TokenFromRequest(%s, %q) = %q, want %q", tc.target, tc.auth, got, tc.want)
		}
	}
}
