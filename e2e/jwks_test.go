package e2e_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/MicahParks/jwkset"
	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/golang-jwt/jwt/v5"
)

// TestJWKSURL: a node that takes its keys from an identity provider's
// JWKS URL lets in, over STOMP and the HTTP API, a client whose token
// names one of them by kid; after the provider rotates to a new key,
// tokens it signs are let in without a restart, and the old key's are not.
func TestJWKSURL(t *testing.T) {
	k := jwttest.NewKeys(t)
	ec, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var set atomic.Pointer[[]byte]
	serve := func(kid string, pub crypto.PublicKey) {
		jwk, err := jwkset.NewJWKFromKey(pub, jwkset.JWKOptions{Metadata: jwkset.JWKMetadataOptions{KID: kid, USE: jwkset.UseSig}})
		if err != nil {
			t.Fatal(err)
		}
		b, err := json.Marshal(jwkset.JWKSMarshal{Keys: []jwkset.JWKMarshal{jwk.Marshal()}})
		if err != nil {
			t.Fatal(err)
		}
		set.Store(&b)
	}
	serve("rsa-1", &k.RSA.PublicKey)
	idp := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*set.Load())
	}))
	t.Cleanup(idp.Close)
	n := startJWTNode(t, k, func(c *config.Config) { c.JWTSecret, c.JWTPublicKey, c.JWTJWKSURL = "", "", idp.URL+"/jwks" })

	signed := func(method jwt.SigningMethod, key any, kid, user string) string {
		tok := jwt.NewWithClaims(method, jwttest.Claims(user))
		tok.Header["kid"] = kid
		s, err := tok.SignedString(key)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	rsaToken := signed(jwt.SigningMethodRS256, k.RSA, "rsa-1", "alice")
	r := dialRaw(t, n)
	expectConnected(t, r.ConnectWith("Authorization:Bearer "+rsaToken), "alice")
	if code := api(t, n, "GET", "/api/rooms", rsaToken, "", nil); code != http.StatusOK {
		t.Fatalf("GET /api/rooms with a JWKS URL key's token: %d", code)
	}

	serve("ec-2", &ec.PublicKey)
	r = dialRaw(t, n)
	expectConnected(t, r.ConnectWith("passcode:"+signed(jwt.SigningMethodES256, ec, "ec-2", "bob")), "bob")
	r = dialRaw(t, n)
	f := r.ConnectWith("passcode:" + signed(jwt.SigningMethodRS256, k.RSA, "rsa-1", "mallory"))
	if f.Command != "ERROR" || !strings.Contains(f.Header.Get("message"), "unauthorized") {
		t.Fatalf("token of the retired key: %s %v", f.Command, f.Header)
	}
}
