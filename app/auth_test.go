package app_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/app"
	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testport"
	"github.com/chatd/chatd/internal/wait"
	"github.com/coder/websocket"
	"github.com/go-stomp/stomp/v3/frame"
	"github.com/golang-jwt/jwt/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

const (
	testIssuer   = "https://idp.test"
	testAudience = "chatd-test"
	testCookie   = "chatd_token"
)

// keys are the test's signing keys: an HS256 secret and an RSA key pair
// whose public half chatd reads from a PEM file.
type keys struct {
	secret  []byte
	rsa     *rsa.PrivateKey
	pubPEM  []byte
	pubFile string
}

func newKeys(t *testing.T) *keys {
	t.Helper()
	priv, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	der, err := x509.MarshalPKIXPublicKey(&priv.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	k := &keys{secret: []byte(strings.Repeat("0123456789abcdef", 3)), rsa: priv}
	k.pubPEM = pem.EncodeToMemory(&pem.Block{Type: "PUBLIC KEY", Bytes: der})
	k.pubFile = filepath.Join(t.TempDir(), "jwt.pem")
	if err := os.WriteFile(k.pubFile, k.pubPEM, 0o600); err != nil {
		t.Fatal(err)
	}
	return k
}

// claims are a valid token's claims for user, changed by mods.
func claims(user string, mods ...func(jwt.MapClaims)) jwt.MapClaims {
	now := time.Now()
	c := jwt.MapClaims{"sub": user, "iss": testIssuer, "aud": testAudience, "iat": now.Unix(), "exp": now.Add(time.Hour).Unix()}
	for _, m := range mods {
		m(c)
	}
	return c
}

func sign(t *testing.T, method jwt.SigningMethod, key any, c jwt.MapClaims) string {
	t.Helper()
	s, err := jwt.NewWithClaims(method, c).SignedString(key)
	if err != nil {
		t.Fatalf("sign %s: %v", method.Alg(), err)
	}
	return s
}

func (k *keys) hs(t *testing.T, user string, mods ...func(jwt.MapClaims)) string {
	return sign(t, jwt.SigningMethodHS256, k.secret, claims(user, mods...))
}

func (k *keys) rs(t *testing.T, user string, mods ...func(jwt.MapClaims)) string {
	return sign(t, jwt.SigningMethodRS256, k.rsa, claims(user, mods...))
}

// tamper changes one character in the middle of a token's signature.
func tamper(tok string) string {
	i := strings.LastIndexByte(tok, '.') + 10
	c := byte('A')
	if tok[i] == 'A' {
		c = 'B'
	}
	return tok[:i] + string(c) + tok[i+1:]
}

// swapClaims puts the claims of one token under the signature of another.
func swapClaims(signed, claimsFrom string) string {
	s := strings.Split(signed, ".")
	c := strings.Split(claimsFrom, ".")
	return s[0] + "." + c[1] + "." + s[2]
}

// startJWTNode starts a node that authenticates by JWT (not dev mode).
func startJWTNode(t *testing.T, k *keys, mutate ...func(*config.Config)) *node {
	t.Helper()
	return startNode(t, append([]func(*config.Config){func(c *config.Config) {
		c.Dev = false
		c.JWTSecret = string(k.secret)
		c.JWTPublicKey = k.pubFile
		c.JWTIssuer, c.JWTAudience, c.JWTCookie = testIssuer, testAudience, testCookie
	}}, mutate...)...)
}

// dialRawWith opens a raw STOMP connection with extra handshake headers
// and a query string.
func dialRawWith(t *testing.T, n *node, query string, hdr http.Header) *rawConn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, n.wsURL()+query, &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}, HTTPHeader: hdr})
	if err != nil {
		t.Fatalf("dial: %v", err)
	}
	ws.SetReadLimit(-1)
	t.Cleanup(func() { _ = ws.CloseNow() })
	nc := websocket.NetConn(context.Background(), ws, websocket.MessageText)
	return &rawConn{t: t, ws: ws, nc: nc, rd: frame.NewReader(nc)}
}

// connectWith sends CONNECT with the given header lines and returns the answer.
func (r *rawConn) connectWith(headers ...string) *frame.Frame {
	r.t.Helper()
	var b strings.Builder
	b.WriteString("CONNECT\naccept-version:1.2\nhost:/\n")
	for _, h := range headers {
		b.WriteString(h + "\n")
	}
	b.WriteString("\n\x00")
	r.send(b.String())
	return r.frame()
}

// expectConnected checks a CONNECTED for user.
func expectConnected(t *testing.T, f *frame.Frame, user string) {
	t.Helper()
	if f.Command != "CONNECTED" || f.Header.Get("user-name") != user {
		t.Fatalf("want CONNECTED as %s, got %s %v %q", user, f.Command, f.Header, f.Body)
	}
}

// expectUnauthorized checks a bare ERROR "unauthorized" (nothing that
// would help an attacker) and the close after it.
func (r *rawConn) expectUnauthorized(f *frame.Frame) {
	r.t.Helper()
	if f.Command != "ERROR" || f.Header.Get("message") != "unauthorized" || len(f.Body) != 0 {
		r.t.Fatalf("want ERROR unauthorized without details, got %s %v %q", f.Command, f.Header, f.Body)
	}
	r.expectClosed()
}

// sendFrame sends a SEND with a receipt and returns the answer.
func (r *rawConn) sendFrame(dest, body string) *frame.Frame {
	r.t.Helper()
	r.send("SEND\ndestination:" + dest + "\ncontent-type:application/json\nreceipt:r\n\n" + body + "\x00")
	return r.frame()
}

func TestJWTVerification(t *testing.T) {
	k := newKeys(t)
	n := startJWTNode(t, k)
	other := make([]byte, len(k.secret))
	copy(other, k.secret)
	other[0] ^= 1
	ecKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	noneToken := sign(t, jwt.SigningMethodNone, jwt.UnsafeAllowNoneSignatureType, claims("mallory"))
	for _, tc := range []struct {
		name  string
		token string
		user  string // "": refused
	}{
		{"HS256 valid", k.hs(t, "alice"), "alice"},
		{"RS256 valid", k.rs(t, "bob"), "bob"},
		{"expired", k.hs(t, "alice", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), ""},
		{"RS256 expired", k.rs(t, "bob", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-2 * time.Minute).Unix() }), ""},
		{"within leeway", k.hs(t, "alice", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(10 * time.Second).Unix() }), "alice"},
		{"not yet valid", k.hs(t, "alice", func(c jwt.MapClaims) { c["nbf"] = time.Now().Add(2 * time.Minute).Unix() }), ""},
		{"no exp", k.hs(t, "alice", func(c jwt.MapClaims) { delete(c, "exp") }), ""},
		{"wrong signature", sign(t, jwt.SigningMethodHS256, other, claims("alice")), ""},
		{"RS256 tampered", tamper(k.rs(t, "alice")), ""},
		{"HS256 claims changed", swapClaims(k.hs(t, "alice"), k.hs(t, "admin")), ""},
		{"wrong audience", k.hs(t, "alice", func(c jwt.MapClaims) { c["aud"] = "someone-else" }), ""},
		{"wrong issuer", k.rs(t, "alice", func(c jwt.MapClaims) { c["iss"] = "https://evil.test" }), ""},
		{"no sub", k.hs(t, "alice", func(c jwt.MapClaims) { delete(c, "sub") }), ""},
		{"invalid user id", k.hs(t, "has space"), ""},
		{"alg none", noneToken, ""},
		{"ES256 with no EC key configured", sign(t, jwt.SigningMethodES256, ecKey, claims("alice")), ""},
		{"HS256 keyed with the RSA public key", sign(t, jwt.SigningMethodHS256, k.pubPEM, claims("alice")), ""},
		{"garbage", "not-a-jwt", ""},
		{"garbage with dots", "eyJhbGciOi.e30.xx", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, n)
			f := r.connectWith("Authorization:Bearer " + tc.token)
			if tc.user == "" {
				r.expectUnauthorized(f)
				return
			}
			expectConnected(t, f, tc.user)
		})
	}
	t.Run("no token", func(t *testing.T) {
		r := dialRaw(t, n)
		r.expectUnauthorized(r.connectWith("login:alice"))
	})
}

// TestJWTPublicKeyOnly shows that with only an RSA key configured an HS256
// token signed with that public key (the classic alg confusion) is refused.
func TestJWTPublicKeyOnly(t *testing.T) {
	k := newKeys(t)
	n := startJWTNode(t, k, func(c *config.Config) { c.JWTSecret = "" })
	r := dialRaw(t, n)
	r.expectUnauthorized(r.connectWith("Authorization:Bearer " + sign(t, jwt.SigningMethodHS256, k.pubPEM, claims("mallory"))))
	r = dialRaw(t, n)
	r.expectUnauthorized(r.connectWith("passcode:" + k.hs(t, "mallory")))
	r = dialRaw(t, n)
	expectConnected(t, r.connectWith("passcode:"+k.rs(t, "carol")), "carol")
}

func TestJWTTokenSources(t *testing.T) {
	k := newKeys(t)
	n := startJWTNode(t, k)
	t.Run("CONNECT Authorization", func(t *testing.T) {
		r := dialRaw(t, n)
		expectConnected(t, r.connectWith("Authorization:Bearer "+k.hs(t, "u1")), "u1")
	})
	t.Run("CONNECT passcode", func(t *testing.T) {
		r := dialRaw(t, n)
		expectConnected(t, r.connectWith("login:ignored", "passcode:"+k.rs(t, "u2")), "u2")
	})
	t.Run("handshake Authorization", func(t *testing.T) {
		r := dialRawWith(t, n, "", http.Header{"Authorization": {"Bearer " + k.hs(t, "u3")}})
		expectConnected(t, r.connectWith(), "u3")
	})
	t.Run("access_token query", func(t *testing.T) {
		r := dialRawWith(t, n, "?access_token="+k.rs(t, "u4"), nil)
		expectConnected(t, r.connectWith(), "u4")
	})
	t.Run("cookie", func(t *testing.T) {
		r := dialRawWith(t, n, "", http.Header{"Cookie": {testCookie + "=" + k.hs(t, "u5")}})
		expectConnected(t, r.connectWith(), "u5")
	})
	t.Run("other cookie", func(t *testing.T) {
		r := dialRawWith(t, n, "", http.Header{"Cookie": {"session=" + k.hs(t, "u6")}})
		r.expectUnauthorized(r.connectWith())
	})
	t.Run("bad handshake token", func(t *testing.T) {
		r := dialRawWith(t, n, "?access_token=garbage", nil)
		r.expectUnauthorized(r.connectWith())
	})
}

func TestJWTExpiryEndsSession(t *testing.T) {
	k := newKeys(t)
	n := startJWTNode(t, k)
	// exp has whole seconds: 2s ahead is at least 1s of session.
	tok := k.hs(t, "alice", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(2 * time.Second).Unix() })
	r := dialRaw(t, n)
	expectConnected(t, r.connectWith("Authorization:Bearer "+tok), "alice")
	r.send("SUBSCRIBE\nid:q\ndestination:/user/queue/inbox\nreceipt:s\n\n\x00")
	if f := r.frame(); f.Command != "RECEIPT" {
		t.Fatalf("want RECEIPT, got %s %v", f.Command, f.Header)
	}
	r.expectError("credentials expired")
}

func TestAllowedOrigins(t *testing.T) {
	k := newKeys(t)
	n := startJWTNode(t, k, func(c *config.Config) { c.AllowedOrigins = []string{"chat.example.com"} })
	dialOrigin := func(origin string) (int, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		ws, resp, err := websocket.Dial(ctx, n.wsURL(), &websocket.DialOptions{HTTPHeader: http.Header{"Origin": {origin}}})
		if err == nil {
			_ = ws.CloseNow()
		}
		code := 0
		if resp != nil {
			code = resp.StatusCode
		}
		return code, err
	}
	for _, origin := range []string{"http://evil.example", "https://chat.example.com.evil.example"} {
		if code, err := dialOrigin(origin); err == nil || code != http.StatusForbidden {
			t.Errorf("origin %s: status %d, err %v; want 403", origin, code, err)
		}
	}
	for _, origin := range []string{"https://chat.example.com", "http://" + n.app.Addr()} {
		if _, err := dialOrigin(origin); err != nil {
			t.Errorf("origin %s refused: %v", origin, err)
		}
	}
}

func TestNonMemberRefused(t *testing.T) {
	k := newKeys(t)
	n := startJWTNode(t, k)
	if err := n.app.AddMember(context.Background(), "team", "alice"); err != nil {
		t.Fatal(err)
	}
	const forbidden = "forbidden: not a member of room team"
	for _, tc := range []struct{ name, frame string }{
		{"subscribe", "SUBSCRIBE\nid:s\ndestination:/topic/chat.team\n\n\x00"},
		{"subscribe receipts", "SUBSCRIBE\nid:s\ndestination:/topic/chat.team.read\n\n\x00"},
		{"send", "SEND\ndestination:/app/chat.team\n\n" + msgBody("hi") + "\x00"},
		{"history", "SEND\ndestination:/app/chat.team.log\n\n\x00"},
		{"read", "SEND\ndestination:/app/chat.team.read\n\n{\"lastReadId\":1}\x00"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, n)
			expectConnected(t, r.connectWith("passcode:"+k.hs(t, "bob")), "bob")
			r.send(tc.frame)
			r.expectError(forbidden)
		})
	}
	t.Run("member", func(t *testing.T) {
		r := dialRaw(t, n)
		expectConnected(t, r.connectWith("passcode:"+k.hs(t, "alice")), "alice")
		r.send("SUBSCRIBE\nid:s\ndestination:/topic/chat.team\n\n\x00")
		// The RECEIPT and the MESSAGE may come in either order.
		got := map[string]*frame.Frame{}
		for f := r.sendFrame("/app/chat.team", msgBody("hi")); ; f = r.frame() {
			got[f.Command] = f
			if len(got) == 2 || f.Command == "ERROR" {
				break
			}
		}
		if got["RECEIPT"] == nil || got["MESSAGE"] == nil || !strings.Contains(string(got["MESSAGE"].Body), `"userId":"alice"`) {
			t.Fatalf("want a RECEIPT and alice's MESSAGE, got %v", got)
		}
	})
	t.Run("no auto-join", func(t *testing.T) {
		members, err := n.app.Members(context.Background(), "team")
		if err != nil || len(members) != 1 || members[0] != "alice" {
			t.Fatalf("members of team %v %v, want only alice", members, err)
		}
	})
}

func TestSendRateLimit(t *testing.T) {
	k := newKeys(t)
	n := startJWTNode(t, k, func(c *config.Config) { c.SendRate, c.SendBurst = 2, 5 })
	for _, u := range []string{"alice", "bob"} {
		if err := n.app.AddMember(context.Background(), "team", u); err != nil {
			t.Fatal(err)
		}
	}
	bob := dialRaw(t, n)
	expectConnected(t, bob.connectWith("passcode:"+k.hs(t, "bob")), "bob")
	alice := dialRaw(t, n)
	expectConnected(t, alice.connectWith("passcode:"+k.hs(t, "alice")), "alice")
	// 20 SENDs in one WebSocket message: far past a burst of 5.
	alice.send(strings.Repeat("SEND\ndestination:/app/chat.team\n\n"+msgBody("spam")+"\x00", 20))
	alice.expectError("SEND rate limit exceeded (limit 2 per second, burst 5)")
	// Bob has his own bucket.
	for i := range 3 {
		if f := bob.sendFrame("/app/chat.team", msgBody("fine")); f.Command != "RECEIPT" {
			t.Fatalf("bob's SEND %d: %s %v", i, f.Command, f.Header)
		}
	}
}

func TestConnectionsPerUser(t *testing.T) {
	k := newKeys(t)
	n := startJWTNode(t, k, func(c *config.Config) { c.MaxConnectionsPerUser = 2 })
	first := dialRaw(t, n)
	expectConnected(t, first.connectWith("passcode:"+k.hs(t, "alice")), "alice")
	second := dialRaw(t, n)
	expectConnected(t, second.connectWith("passcode:"+k.hs(t, "alice")), "alice")
	third := dialRaw(t, n)
	third.send("CONNECT\naccept-version:1.2\nhost:/\npasscode:" + k.hs(t, "alice") + "\n\n\x00")
	third.expectError("too many connections for this user (limit 2)")
	bob := dialRaw(t, n)
	expectConnected(t, bob.connectWith("passcode:"+k.hs(t, "bob")), "bob")

	// Once one of alice's sessions has ended she may open another.
	first.send("DISCONNECT\nreceipt:bye\n\n\x00")
	if f := first.frame(); f.Command != "RECEIPT" {
		t.Fatalf("want RECEIPT, got %s", f.Command)
	}
	first.expectClosed()
	deadline := time.Now().Add(10 * time.Second)
	for n.app.Sessions() > 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions 10s after DISCONNECT, want 2", n.app.Sessions())
		}
		time.Sleep(10 * time.Millisecond) // polling the condition itself
	}
	again := dialRaw(t, n)
	expectConnected(t, again.connectWith("passcode:"+k.hs(t, "alice")), "alice")
}

func TestStartRefusesBadPublicKey(t *testing.T) {
	bad := filepath.Join(t.TempDir(), "bad.pem")
	if err := os.WriteFile(bad, []byte("not a key"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(t)
	cfg.Dev, cfg.JWTPublicKey = false, bad
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	a, err := app.Start(ctx, cfg, "test", testLogger())
	if err == nil {
		_ = a.Shutdown(ctx)
		t.Fatal("chatd started with a bad --jwt-public-key")
	}
	if !strings.Contains(err.Error(), "--jwt-public-key") {
		t.Fatalf("error %v does not name --jwt-public-key", err)
	}
}

// TestMembershipFromKV shows the documented way a backend manages members
// outside dev mode: writing to the CHAT_MEMBERS bucket over NATS.
func TestMembershipFromKV(t *testing.T) {
	k := newKeys(t)
	natsAddr := "127.0.0.1:" + strconv.Itoa(testport.Free(t))
	n := startJWTNode(t, k, func(c *config.Config) { c.NATSListen = natsAddr })
	nc, err := nats.Connect("nats://" + natsAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "CHAT_MEMBERS")
	if err != nil {
		t.Fatal(err)
	}
	waitMember := func(want bool) {
		t.Helper()
		for {
			members, err := n.app.Members(ctx, "ops")
			if err != nil {
				t.Fatal(err)
			}
			if slices.Contains(members, "carol") == want {
				return
			}
			select {
			case <-ctx.Done():
				t.Fatalf("carol's membership never became %v", want)
			case <-time.After(10 * time.Millisecond): // polling the condition itself
			}
		}
	}
	if _, err := kv.Put(ctx, "ops.carol", []byte(`{"role":"member"}`)); err != nil {
		t.Fatal(err)
	}
	waitMember(true)
	r := dialRaw(t, n)
	expectConnected(t, r.connectWith("passcode:"+k.hs(t, "carol")), "carol")
	r.send("SUBSCRIBE\nid:s\ndestination:/topic/chat.ops.read\nreceipt:s\n\n\x00")
	if f := r.frame(); f.Command != "RECEIPT" {
		t.Fatalf("member's SUBSCRIBE: %s %v", f.Command, f.Header)
	}
	// The removal ends carol's live subscription at once.
	if err := kv.Delete(ctx, "ops.carol"); err != nil {
		t.Fatal(err)
	}
	r.expectError("forbidden: no longer a member of room ops")
	waitMember(false)
	r = dialRaw(t, n)
	expectConnected(t, r.connectWith("passcode:"+k.hs(t, "carol")), "carol")
	r.send("SEND\ndestination:/app/chat.ops\n\n" + msgBody("again") + "\x00")
	r.expectError("forbidden: not a member of room ops")
}

// TestRemovedMemberCutOffOnEveryNode removes a member on one node and
// shows her subscription on another ends at once, while others' go on.
func TestRemovedMemberCutOffOnEveryNode(t *testing.T) {
	k := newKeys(t)
	nodes := startCluster(t, 2, func(c *config.Config) {
		c.Dev = false
		c.JWTSecret = string(k.secret)
		c.JWTIssuer, c.JWTAudience = testIssuer, testAudience
	})
	ctx := context.Background()
	for _, u := range []string{"alice", "bob"} {
		if err := nodes[0].app.AddMember(ctx, "team", u); err != nil {
			t.Fatal(err)
		}
	}
	wait.Until(t, "node 1 sees both members", func() error {
		m, err := nodes[1].app.Members(ctx, "team")
		if err != nil || len(m) != 2 {
			return fmt.Errorf("members %v %v", m, err)
		}
		return nil
	})
	alice, bob := dialRaw(t, nodes[1]), dialRaw(t, nodes[1])
	for user, r := range map[string]*rawConn{"alice": alice, "bob": bob} {
		expectConnected(t, r.connectWith("passcode:"+k.hs(t, user)), user)
		r.send("SUBSCRIBE\nid:s\ndestination:/topic/chat.team\nreceipt:s\n\n\x00")
		if f := r.frame(); f.Command != "RECEIPT" {
			t.Fatalf("%s SUBSCRIBE: %s %v", user, f.Command, f.Header)
		}
	}
	if err := nodes[0].app.RemoveMember(ctx, "team", "alice"); err != nil {
		t.Fatal(err)
	}
	alice.expectError("forbidden: no longer a member of room team")
	// Bob, still a member, goes on receiving.
	poster := dialRaw(t, nodes[0])
	expectConnected(t, poster.connectWith("passcode:"+k.hs(t, "bob")), "bob")
	if f := poster.sendFrame("/app/chat.team", msgBody("still here")); f.Command != "RECEIPT" {
		t.Fatalf("bob's SEND: %s %v", f.Command, f.Header)
	}
	if f := bob.frame(); f.Command != "MESSAGE" || !strings.Contains(string(f.Body), "still here") {
		t.Fatalf("bob got %s %q", f.Command, f.Body)
	}
}

// TestJWKS verifies RS256 and ES256 tokens by the key their kid names.
func TestJWKS(t *testing.T) {
	k := newKeys(t)
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
		{"kty": "RSA", "kid": "rsa-1", "use": "sig", "alg": "RS256", "n": b64(k.rsa.N.Bytes()), "e": b64(big.NewInt(int64(k.rsa.E)).Bytes())},
		{"kty": "EC", "kid": "ec-1", "crv": "P-256", "x": b64(ecPub[1:33]), "y": b64(ecPub[33:])},
	}})
	if err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(t.TempDir(), "jwks.json")
	if err := os.WriteFile(file, set, 0o600); err != nil {
		t.Fatal(err)
	}
	n := startNode(t, func(c *config.Config) {
		c.Dev, c.JWTJWKS, c.JWTAudience = false, file, testAudience
	})
	withKid := func(method jwt.SigningMethod, key any, kid, user string) string {
		tok := jwt.NewWithClaims(method, claims(user))
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
		{"RS256 by kid", withKid(jwt.SigningMethodRS256, k.rsa, "rsa-1", "erin"), "erin"},
		{"ES256 by kid", withKid(jwt.SigningMethodES256, ec, "ec-1", "frank"), "frank"},
		{"no kid", withKid(jwt.SigningMethodRS256, k.rsa, "", "erin"), ""},
		{"unknown kid", withKid(jwt.SigningMethodRS256, k.rsa, "rsa-2", "erin"), ""},
		{"kid of the other key", withKid(jwt.SigningMethodES256, ec, "rsa-1", "erin"), ""},
		{"HS256 keyed with the JWKS", withKid(jwt.SigningMethodHS256, set, "rsa-1", "erin"), ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := dialRaw(t, n)
			f := r.connectWith("passcode:" + tc.token)
			if tc.user == "" {
				r.expectUnauthorized(f)
				return
			}
			expectConnected(t, f, tc.user)
		})
	}
}
