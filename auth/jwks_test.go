package auth_test

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/MicahParks/jwkset"
	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/golang-jwt/jwt/v5"
)

// signer is an identity provider's signing key.
type signer struct {
	kid string
	key crypto.Signer
}

func newSigner(t testing.TB, kid string) signer {
	t.Helper()
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return signer{kid: kid, key: k}
}

// token is a valid token for user, signed by s with its kid.
func (s signer) token(t testing.TB, user string) string {
	t.Helper()
	method := jwt.SigningMethod(jwt.SigningMethodES256)
	if _, ok := s.key.(*ecdsa.PrivateKey); !ok {
		method = jwt.SigningMethodRS256
	}
	tok := jwt.NewWithClaims(method, jwttest.Claims(user))
	tok.Header["kid"] = s.kid
	signed, err := tok.SignedString(s.key)
	if err != nil {
		t.Fatal(err)
	}
	return signed
}

// jwks is the JSON Web Key Set of signers' public keys.
func jwks(t testing.TB, signers ...signer) []byte {
	t.Helper()
	var set jwkset.JWKSMarshal
	for _, s := range signers {
		k, err := jwkset.NewJWKFromKey(s.key.Public(), jwkset.JWKOptions{
			Metadata: jwkset.JWKMetadataOptions{KID: s.kid, USE: jwkset.UseSig},
		})
		if err != nil {
			t.Fatal(err)
		}
		set.Keys = append(set.Keys, k.Marshal())
	}
	b, err := json.Marshal(set)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// encOnly is a set with one key, for encryption.
const encOnly = `{"keys":[{"kty":"RSA","kid":"e","use":"enc","n":"AQAB","e":"AQAB"}]}`

// idp serves a JWKS as an identity provider does; a test rotates its keys,
// and takes it down.
type idp struct {
	srv     *httptest.Server
	url     string
	body    atomic.Pointer[[]byte]
	down    atomic.Bool
	fetches atomic.Int32
}

func newIDP(t testing.TB, body []byte) *idp {
	p := &idp{}
	p.serve(body)
	p.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) {
		p.fetches.Add(1)
		if p.down.Load() {
			http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write(*p.body.Load())
	}))
	t.Cleanup(p.srv.Close)
	p.url = p.srv.URL + "/realms/chat/protocol/openid-connect/certs"
	return p
}

func (p *idp) serve(body []byte) { p.body.Store(&body) }

func newURLAuth(t testing.TB, url string, refresh, refreshUnknown time.Duration) *auth.JWT {
	t.Helper()
	a, err := auth.New(t.Context(), auth.Config{
		JWKSURL: url, JWKSRefresh: refresh, JWKSRefreshUnknown: refreshUnknown,
		Issuer: jwttest.Issuer, Audience: jwttest.Audience, Logger: testlog.New(),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	return a
}

func accepted(t *testing.T, a *auth.JWT, s signer, user string) {
	t.Helper()
	id, err := a.Verify(t.Context(), s.token(t, user))
	if err != nil || id.User != user {
		t.Fatalf("token of key %s: %+v %v, want %s", s.kid, id, err, user)
	}
}

// refused checks a refusal that comes without waiting on the identity
// provider.
func refused(t *testing.T, a *auth.JWT, s signer) {
	t.Helper()
	start := time.Now()
	id, err := a.Verify(t.Context(), s.token(t, "mallory"))
	if err == nil {
		t.Fatalf("token of key %s accepted as %+v", s.kid, id)
	}
	if d := time.Since(start); d > 2*time.Second {
		t.Fatalf("token of key %s refused after %s", s.kid, d)
	}
}

// TestJWKSURLRotation: a token signed by a key the identity provider has
// just published is accepted without a restart (its unknown kid makes
// chatd fetch the set again), a retired key's are refused, and while the
// provider is down the keys fetched last still verify and an unknown kid
// is refused at once.
func TestJWKSURLRotation(t *testing.T) {
	k1, k2, k3 := newSigner(t, "k1"), newSigner(t, "k2"), newSigner(t, "k3")
	p := newIDP(t, jwks(t, k1))
	a := newURLAuth(t, p.url, time.Hour, time.Millisecond)
	if n := p.fetches.Load(); n != 1 {
		t.Fatalf("%d fetches at start, want 1", n)
	}
	accepted(t, a, k1, "alice")

	p.serve(jwks(t, k2)) // rotated: k1 retired
	accepted(t, a, k2, "bob")
	if n := p.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: one at start, one for k2", n)
	}
	refused(t, a, k1)

	p.down.Store(true)
	before := p.fetches.Load()
	refused(t, a, k3)
	if p.fetches.Load() == before {
		t.Fatal("an unknown kid did not make chatd fetch the set")
	}
	accepted(t, a, k2, "bob")

	p.srv.Close() // not even a 503: connections refused
	refused(t, a, k3)
	accepted(t, a, k2, "carol")
}

// TestJWKSURLRefreshInterval: the set is fetched again on the interval,
// without any token asking; a fetch that fails, or that yields no key
// chatd can use, keeps the keys fetched last.
func TestJWKSURLRefreshInterval(t *testing.T) {
	k1, k2 := newSigner(t, "k1"), newSigner(t, "k2")
	p := newIDP(t, jwks(t, k1))
	a := newURLAuth(t, p.url, 20*time.Millisecond, time.Hour)
	// Spend the one unknown-kid fetch the limiter allows at first: from
	// now on only the interval fetches.
	refused(t, a, newSigner(t, "nope"))

	p.serve(jwks(t, k2))
	wait.Until(t, "the interval fetch to bring k2", func() error {
		_, err := a.Verify(t.Context(), k2.token(t, "dana"))
		return err
	})
	refused(t, a, k1)

	for _, outage := range []struct {
		name string
		set  func()
	}{
		{"503", func() { p.down.Store(true) }},
		{"an HTML page", func() { p.down.Store(false); p.serve([]byte("<html>maintenance</html>")) }},
		{"an empty set", func() { p.serve([]byte(`{"keys":[]}`)) }},
		{"encryption keys only", func() { p.serve([]byte(encOnly)) }},
	} {
		outage.set()
		n := p.fetches.Load()
		wait.Until(t, "two fetches during "+outage.name, func() error {
			if p.fetches.Load() < n+2 {
				return errors.New("not yet")
			}
			return nil
		})
		accepted(t, a, k2, "dana")
	}
}

// TestJWKSURLUnknownKidRateLimited: tokens with made-up kids cost the
// identity provider one fetch per interval of the limiter, and none of
// them waits for it.
func TestJWKSURLUnknownKidRateLimited(t *testing.T) {
	k := newSigner(t, "k")
	p := newIDP(t, jwks(t, k))
	a := newURLAuth(t, p.url, time.Hour, time.Hour)
	for i := range 20 {
		refused(t, a, newSigner(t, "made-up-"+strings.Repeat("x", i)))
	}
	if n := p.fetches.Load(); n != 2 {
		t.Fatalf("%d fetches, want 2: one at start, one for the first unknown kid", n)
	}
	accepted(t, a, k, "erin")
}

// TestJWKSURLAtStart: chatd starts only with a set it could fetch and use,
// from an https URL (or http to a loopback address).
func TestJWKSURLAtStart(t *testing.T) {
	p := newIDP(t, jwks(t, newSigner(t, "k")))
	p.down.Store(true)
	p384, err := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	up := newIDP(t, jwks(t, signer{kid: "p384", key: p384}))
	empty := newIDP(t, []byte(encOnly))
	// A provider that sends the fetch on to plain http elsewhere: keys
	// from there could be anyone's.
	cleartext := httptest.NewServer(http.RedirectHandler("http://192.0.2.1/jwks", http.StatusFound))
	t.Cleanup(cleartext.Close)
	for _, tc := range []struct {
		name, url, want string
	}{
		{"provider down", p.url, "503"},
		{"P-384 key only", up.url, "no RS256 or ES256"},
		{"encryption keys only", empty.url, "no RS256 or ES256"},
		{"plain http", "http://idp.example.com/jwks", "https"},
		{"redirected to plain http", cleartext.URL, "redirect to http://192.0.2.1/jwks"},
		{"not a URL", "idp.example.com/jwks", "https"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := auth.New(t.Context(), auth.Config{JWKSURL: tc.url, Logger: testlog.New()})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to say %q", err, tc.want)
			}
		})
	}
}

// TestJWKSFileAndURL: a file's keys and a URL's verify side by side.
func TestJWKSFileAndURL(t *testing.T) {
	file, fetched := newSigner(t, "file"), newSigner(t, "fetched")
	p := newIDP(t, jwks(t, fetched))
	a, err := auth.New(t.Context(), auth.Config{JWKS: jwks(t, file), JWKSURL: p.url, Logger: testlog.New()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(a.Close)
	accepted(t, a, file, "fay")
	accepted(t, a, fetched, "gus")
}
