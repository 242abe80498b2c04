package auth

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/pem"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/stompws"
	"github.com/chatd/chatd/stompws/frame"
	"github.com/golang-jwt/jwt/v5"
)

func pemOf(t *testing.T, pub any) []byte {
	t.Helper()
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		t.Fatal(err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
}

func TestES256(t *testing.T) {
	priv, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(t.Context(), Config{PublicKeyPEM: pemOf(t, &priv.PublicKey), UserClaim: "uid"})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Truncate(time.Second)
	tok, err := jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"uid": "dana", "exp": exp.Unix()}).SignedString(priv)
	if err != nil {
		t.Fatal(err)
	}
	p, err := a.Verify(t.Context(), tok)
	if err != nil || p.User != "dana" || !p.Expires.Equal(exp) {
		t.Fatalf("Verify: %+v %v, want dana until %s", p, err, exp)
	}
	// The default claim, sub, is not the configured one.
	tok, _ = jwt.NewWithClaims(jwt.SigningMethodES256, jwt.MapClaims{"sub": "dana", "exp": exp.Unix()}).SignedString(priv)
	if _, err := a.Verify(t.Context(), tok); err == nil {
		t.Fatal("token without the user claim accepted")
	}
}

func TestLeeway(t *testing.T) {
	secret := []byte(strings.Repeat("x", MinSecretLen))
	a, err := New(t.Context(), Config{Secret: secret})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		exp time.Duration
		ok  bool
	}{{-10 * time.Second, true}, {-DefaultLeeway - 5*time.Second, false}} {
		tok, _ := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"sub": "u", "exp": time.Now().Add(tc.exp).Unix()}).SignedString(secret)
		if _, err := a.Verify(t.Context(), tok); (err == nil) != tc.ok {
			t.Errorf("exp %s ago: err %v, want ok=%v", -tc.exp, err, tc.ok)
		}
	}
}

func TestBadKeysRefused(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for name, cfg := range map[string]Config{
		"no key":        {},
		"short secret":  {Secret: []byte("short")},
		"not PEM":       {PublicKeyPEM: []byte("hello")},
		"private block": {PublicKeyPEM: pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: []byte{1}})},
		"small RSA":     {PublicKeyPEM: pemOf(t, &small.PublicKey)},
		"P-384":         {PublicKeyPEM: pemOf(t, &p384.PublicKey)},
	} {
		if _, err := New(t.Context(), cfg); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}

func TestTokenOrder(t *testing.T) {
	a, err := New(t.Context(), Config{Secret: []byte(strings.Repeat("x", MinSecretLen)), Cookie: "tok"})
	if err != nil {
		t.Fatal(err)
	}
	r := httptest.NewRequest("GET", "/ws?access_token=query", nil)
	r.Header.Set("Authorization", "Bearer handshake")
	r.Header.Set("Cookie", "tok=cookie")
	f := &frame.Frame{Command: "CONNECT", Headers: []frame.Header{{Name: "Authorization", Value: "Bearer frame"}, {Name: "passcode", Value: "pass"}}}
	req := &stompws.ConnectRequest{Frame: f, Request: r}
	steps := []struct {
		drop func()
		want string
	}{
		{func() {}, "frame"},
		{func() { f.Headers = f.Headers[1:] }, "pass"},
		{func() { f.Headers = nil }, "handshake"},
		{func() { r.Header.Del("Authorization") }, "query"},
		{func() { r.URL.RawQuery = "" }, "cookie"},
		{func() { r.Header.Del("Cookie") }, ""},
	}
	for _, s := range steps {
		s.drop()
		if got, _ := a.Token(req); got != s.want {
			t.Fatalf("token %q, want %q", got, s.want)
		}
	}
}

// A CONNECT header of the app's own carries the token, with or without
// "Bearer "; Authorization is then no longer read from the frame.
func TestConnectHeader(t *testing.T) {
	a, err := New(t.Context(), Config{Secret: []byte(strings.Repeat("x", MinSecretLen)), ConnectHeader: "X-AUTH-TOKEN"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		headers []frame.Header
		want    string
	}{
		{[]frame.Header{{Name: "X-AUTH-TOKEN", Value: "Bearer abc"}}, "abc"},
		{[]frame.Header{{Name: "X-AUTH-TOKEN", Value: " abc "}}, "abc"},
		{[]frame.Header{{Name: "X-AUTH-TOKEN", Value: "Basic abc"}}, ""},
		{[]frame.Header{{Name: "Authorization", Value: "Bearer abc"}}, ""},
		{[]frame.Header{{Name: "X-AUTH-TOKEN", Value: ""}, {Name: "passcode", Value: "pass"}}, "pass"},
	} {
		f := &frame.Frame{Command: "CONNECT", Headers: tc.headers}
		if got, _ := a.Token(&stompws.ConnectRequest{Frame: f}); got != tc.want {
			t.Errorf("headers %v: token %q, want %q", tc.headers, got, tc.want)
		}
	}
}

// A user id claim may be a string or an integer, as many Spring apps
// sign their numeric user ids; anything else is refused.
func TestUserClaimTypes(t *testing.T) {
	secret := []byte(strings.Repeat("x", MinSecretLen))
	a, err := New(t.Context(), Config{Secret: secret, UserClaim: "userId"})
	if err != nil {
		t.Fatal(err)
	}
	exp := time.Now().Add(time.Hour).Unix()
	for _, tc := range []struct {
		claim any
		want  string // "": refused
	}{
		{"alice", "alice"},
		{42, "42"},
		{int64(9007199254740993), "9007199254740993"}, // above 2^53: exact all the same
		{1.5, ""},
		{"", ""},
		{true, ""},
		{[]string{"alice"}, ""},
		{nil, ""},
	} {
		tok, err := jwt.NewWithClaims(jwt.SigningMethodHS256, jwt.MapClaims{"userId": tc.claim, "exp": exp}).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		id, err := a.Verify(t.Context(), tok)
		switch {
		case tc.want == "" && err == nil:
			t.Errorf("claim %v: accepted as %q", tc.claim, id.User)
		case tc.want != "" && (err != nil || id.User != tc.want):
			t.Errorf("claim %v: user %q, %v; want %q", tc.claim, id.User, err, tc.want)
		}
	}
}

func TestBadJWKSRefused(t *testing.T) {
	small, err := rsa.GenerateKey(rand.Reader, 1024)
	if err != nil {
		t.Fatal(err)
	}
	b64 := base64.RawURLEncoding.EncodeToString
	for name, set := range map[string]string{
		"not JSON":        `{`,
		"no keys":         `{"keys":[]}`,
		"only encryption": `{"keys":[{"kty":"RSA","kid":"a","use":"enc"}]}`,
		"no kid":          `{"keys":[{"kty":"EC","crv":"P-256","x":"","y":""}]}`,
		"symmetric":       `{"keys":[{"kty":"oct","kid":"a","k":"c2VjcmV0"}]}`,
		"P-384":           `{"keys":[{"kty":"EC","kid":"a","crv":"P-384","x":"AA","y":"AA"}]}`,
		"EC off curve":    `{"keys":[{"kty":"EC","kid":"a","crv":"P-256","x":"` + b64(make([]byte, 32)) + `","y":"` + b64(make([]byte, 32)) + `"}]}`,
		"small RSA":       `{"keys":[{"kty":"RSA","kid":"a","n":"` + b64(small.N.Bytes()) + `","e":"AQAB"}]}`,
		"RSA for PS256":   `{"keys":[{"kty":"RSA","kid":"a","alg":"PS256","n":"AA","e":"AQAB"}]}`,
	} {
		if _, err := New(t.Context(), Config{JWKS: []byte(set)}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
}
