package auth_test

// The JWT authenticator on real STOMP sessions: a stompws server whose
// handler authenticates with auth.JWT and accepts whatever else comes,
// and real WebSocket clients.

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/stompws/frame"
	gsframe "github.com/go-stomp/stomp/v3/frame"
	"github.com/golang-jwt/jwt/v5"
)

// jwtHandler authenticates by JWT and accepts every SEND and SUBSCRIBE.
type jwtHandler struct{ a *auth.JWT }

func (h jwtHandler) Authenticate(ctx context.Context, req *stompws.ConnectRequest) (stompws.Principal, error) {
	return h.a.Authenticate(ctx, req)
}
func (jwtHandler) Send(_ context.Context, _ *stompws.Session, _ *frame.Frame, done func(error)) {
	done(nil)
}
func (jwtHandler) Subscribe(context.Context, *stompws.Subscription) error { return nil }
func (jwtHandler) Unsubscribe(*stompws.Subscription)                      {}

// server is a STOMP endpoint that authenticates by JWT.
type server struct{ url string }

// startJWT serves STOMP with a JWT authenticator that takes k's secret and
// public key, jwttest's issuer, audience and cookie, and chat's user ids,
// changed by mods.
func startJWT(t *testing.T, k *jwttest.Keys, mods ...func(*auth.Config)) *server {
	t.Helper()
	cfg := auth.Config{
		Secret: k.Secret, PublicKeyPEM: k.PubPEM,
		Issuer: jwttest.Issuer, Audience: jwttest.Audience, Cookie: jwttest.Cookie,
		ValidUser: chat.ValidUserID,
	}
	for _, m := range mods {
		m(&cfg)
	}
	a, err := auth.New(t.Context(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	srv := stompws.NewServer(stompws.Config{}, jwtHandler{a})
	hs := httptest.NewServer(srv)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx, "test over")
		hs.Close()
	})
	return &server{url: "ws" + strings.TrimPrefix(hs.URL, "http")}
}

func (s *server) dial(t *testing.T) *stomptest.Raw {
	return stomptest.DialRaw(t, s.url, stomptest.DialOptions{Subprotocols: []string{"v12.stomp"}})
}

// dialWith opens a raw STOMP connection with extra handshake headers
// and a query string.
func (s *server) dialWith(t *testing.T, query string, hdr http.Header) *stomptest.Raw {
	return stomptest.DialRaw(t, s.url+query, stomptest.DialOptions{Subprotocols: []string{"v12.stomp"}, Header: hdr})
}

// expectConnected checks a CONNECTED for user.
func expectConnected(t *testing.T, f *gsframe.Frame, user string) {
	t.Helper()
	if f.Command != "CONNECTED" || f.Header.Get("user-name") != user {
		t.Fatalf("want CONNECTED as %s, got %s %v %q", user, f.Command, f.Header, f.Body)
	}
}

// expectUnauthorized checks a bare ERROR "unauthorized" (nothing that
// would help an attacker) and the close after it.
func expectUnauthorized(r *stomptest.Raw, f *gsframe.Frame) {
	r.T.Helper()
	if f.Command != "ERROR" || f.Header.Get("message") != "unauthorized" || len(f.Body) != 0 {
		r.T.Fatalf("want ERROR unauthorized without details, got %s %v %q", f.Command, f.Header, f.Body)
	}
	r.ExpectClosed()
}

func TestJWTVerification(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWT(t, k)
	other := make([]byte, len(k.Secret))
	copy(other, k.Secret)
	other[0] ^= 1
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	noneToken := jwttest.Sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, jwttest.Claims("mallory"))
	for _, tc := range []struct {
		name  string
		token string
		user  string // "": refused
	}{
		{"HS256 valid", k.HS(t, "alice"), "alice"},
		{"RS256 valid", k.RS(t, "bob"), "bob"},
		{"expired", k.HS(t, "alice", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), ""},
		{"RS256 expired", k.RS(t, "bob", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), ""},
		{"within leeway", k.HS(t, "alice", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(10 * time.Second).Unix() }), "alice"},
		{"not yet valid", k.HS(t, "alice", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(2 * time.Minute).Unix() }), ""},
		{"no exp", k.HS(t, "alice", func(c jwt.MapClaims) { delete(c, "exp") }), ""},
		{"wrong signature", jwttest.Sign(t, jwt.SigningMethodHS256, other, jwttest.Claims("alice")), ""},
		{"RS256 tampered", jwttest.Tamper(k.RS(t, "alice")), ""},
		{"HS256 claims changed", jwttest.SwapClaims(k.HS(t, "alice"), k.HS(t, "admin")), ""},
		{"wrong audience", k.HS(t, "alice", func(c jwt.MapClaims) { c["aud"] = "someone-else" }), ""},
		{"wrong issuer", k.RS(t, "alice", func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }), ""},
		{"no sub", k.HS(t, "alice", func(c jwt.MapClaims) { delete(c, "sub") }), ""},
		{"invalid user id", k.HS(t, "has space"), ""},
		{"alg none", noneToken, ""},
		{"ES256 with no EC key configured", jwttest.Sign(t, jwt.SigningMethodES256, ecKey, jwttest.Claims("alice")), ""},
		{"HS256 keyed with the RSA public key", jwttest.Sign(t, jwt.SigningMethodHS256, k.PubPEM, jwttest.Claims("alice")), ""},
		{"garbage", "not-a-jwt", ""},
		{"garbage with dots", "eyJhbGciOi.e30.xx", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.dial(t)
			f := r.ConnectWith("Authorization:Bearer " + tc.token)
			if tc.user == "" {
				expectUnauthorized(r, f)
				return
			}
			expectConnected(t, f, tc.user)
		})
	}
	t.Run("no token", func(t *testing.T) {
		r := n.dial(t)
		expectUnauthorized(r, r.ConnectWith("login:alice"))
	})
}

// TestJWTPublicKeyOnly shows that with only an RSA key configured an HS256
// token signed with that public key (the classic alg confusion) is refused.
func TestJWTPublicKeyOnly(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWT(t, k, func(c *auth.Config) { c.Secret = nil })
	r := n.dial(t)
	expectUnauthorized(r, r.ConnectWith("Authorization:Bearer "+jwttest.Sign(t, jwt.SigningMethodHS256, k.PubPEM, jwttest.Claims("mallory"))))
	r = n.dial(t)
	expectUnauthorized(r, r.ConnectWith("passcode:"+k.HS(t, "mallory")))
	r = n.dial(t)
	expectConnected(t, r.ConnectWith("passcode:"+k.RS(t, "carol")), "carol")
}

func TestJWTTokenSources(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWT(t, k)
	t.Run("CONNECT Authorization", func(t *testing.T) {
		r := n.dial(t)
		expectConnected(t, r.ConnectWith("Authorization:Bearer "+k.HS(t, "u1")), "u1")
	})
	t.Run("CONNECT Authorization without Bearer", func(t *testing.T) {
		r := n.dial(t)
		expectConnected(t, r.ConnectWith("Authorization:"+k.HS(t, "u1")), "u1")
	})
	t.Run("CONNECT passcode", func(t *testing.T) {
		r := n.dial(t)
		expectConnected(t, r.ConnectWith("login:ignored", "passcode:"+k.RS(t, "u2")), "u2")
	})
	t.Run("handshake Authorization", func(t *testing.T) {
		r := n.dialWith(t, "", http.Header{"Authorization": {"Bearer " + k.HS(t, "u3")}})
		expectConnected(t, r.ConnectWith(), "u3")
	})
	t.Run("access_token query", func(t *testing.T) {
		r := n.dialWith(t, "?access_token="+k.RS(t, "u4"), nil)
		expectConnected(t, r.ConnectWith(), "u4")
	})
	t.Run("cookie", func(t *testing.T) {
		r := n.dialWith(t, "", http.Header{"Cookie": {jwttest.Cookie + "=" + k.HS(t, "u5")}})
		expectConnected(t, r.ConnectWith(), "u5")
	})
	t.Run("other cookie", func(t *testing.T) {
		r := n.dialWith(t, "", http.Header{"Cookie": {"session=" + k.HS(t, "u6")}})
		expectUnauthorized(r, r.ConnectWith())
	})
	t.Run("bad handshake token", func(t *testing.T) {
		r := n.dialWith(t, "?access_token=garbage", nil)
		expectUnauthorized(r, r.ConnectWith())
	})
}

// TestJWTConnectHeader: a Spring app whose ChannelInterceptor reads a
// header of its own keeps its clients as they are.
func TestJWTConnectHeader(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWT(t, k, func(c *auth.Config) { c.ConnectHeader = "token" })
	r := n.dial(t)
	expectConnected(t, r.ConnectWith("token:"+k.HS(t, "u7")), "u7")
	r = n.dial(t)
	expectUnauthorized(r, r.ConnectWith("token:"+k.HS(t, "u8")+"x"))
	r = n.dial(t)
	expectUnauthorized(r, r.ConnectWith("Authorization:Bearer "+k.HS(t, "u9")))
}

func TestJWTExpiryEndsSession(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWT(t, k)
	// exp has whole seconds: 2s ahead is at least 1s of session.
	tok := k.HS(t, "alice", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(2 * time.Second).Unix() })
	r := n.dial(t)
	expectConnected(t, r.ConnectWith("Authorization:Bearer "+tok), "alice")
	r.Send("SUBSCRIBE\nid:q\ndestination:/user/queue/inbox\nreceipt:s\n\n\x00")
	if f := r.Frame(); f.Command != "RECEIPT" {
		t.Fatalf("want RECEIPT, got %s %v", f.Command, f.Header)
	}
	r.ExpectError("credentials expired")
}

// TestJWKS verifies RS256 and ES256 tokens by the key their kid names.
func TestJWKS(t *testing.T) {
	k := jwttest.NewKeys(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ecPub, err := ec.PublicKey.Bytes() // 0x04 || X || Y
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	set, err := json.Marshal(map[string]any{"keys": []map[string]string{
		{"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b64(k.RSA.N.Bytes()), "e": b64(big.NewInt(int64(k.RSA.E)).Bytes())},
		{"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(ecPub[1:33]), "y": b64(ecPub[33:])},
	}})
	if err != nil {
		t.Fatal(err)
	}
	n := startJWT(t, k, func(c *auth.Config) { c.Secret, c.PublicKeyPEM, c.JWKS = nil, nil, set })
	withKid := func(method jwt.SigningMethod, key any, kid, user string) string {
		tok := jwt.NewWithClaims(method, jwttest.Claims(user))
		if kid != "" {
			tok.Header["kid"] = kid
		}
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	for _, tc := range []struct {
		name, token, user string
	}{
		{"RS256 by kid", withKid(jwt.SigningMethodRS256, k.RSA, "rsa-1", "erin"), "erin"},
		{"ES256 by kid", withKid(jwt.SigningMethodES256, ec, "ec-1", "frank"), "frank"},
		{"no kid", withKid(jwt.SigningMethodRS256, k.RSA, "", "erin"), ""},
		{"unknown kid", withKid(jwt.SigningMethodRS256, k.RSA, "rsa-2", "erin"), ""},
		{"kid of the other key", withKid(jwt.SigningMethodES256, ec, "rsa-1", "erin"), ""},
		{"HS256 keyed with the JWKS", withKid(jwt.SigningMethodHS256, set, "rsa-1", "erin"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := n.dial(t)
			f := r.ConnectWith("passcode:" + tc.token)
			if tc.user == "" {
				expectUnauthorized(r, f)
				return
			}
			expectConnected(t, f, tc.user)
		})
	}
}
