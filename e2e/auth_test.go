package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/internal/testkit/wait"
	chatdnode "github.com/chatd/chatd/node"
	"github.com/coder/websocket"
	"github.com/go-stomp/stomp/v3/frame"
)

// jwtOnly makes a node authenticate by JWTs signed with k's secret (not
// dev mode), for a cluster's nodes.
func jwtOnly(k *jwttest.Keys) func(*config.Config) {
	return func(c *config.Config) {
		c.Dev = false
		c.JWTSecret = string(k.Secret)
		c.JWTIssuer, c.JWTAudience = jwttest.Issuer, jwttest.Audience
	}
}

// startJWTNode starts a node that authenticates by JWT (not dev mode).
func startJWTNode(t *testing.T, k *jwttest.Keys, mutate ...func(*config.Config)) *node {
	t.Helper()
	return startNode(t, append([]func(*config.Config){func(c *config.Config) {
		c.Dev = false
		c.JWTSecret = string(k.Secret)
		c.JWTPublicKey = k.PubFile
		c.JWTIssuer, c.JWTAudience, c.JWTCookie = jwttest.Issuer, jwttest.Audience, jwttest.Cookie
	}}, mutate...)...)
}

// expectConnected checks a CONNECTED for user.
func expectConnected(t *testing.T, f *frame.Frame, user string) {
	t.Helper()
	if f.Command != "CONNECTED" || f.Header.Get("user-name") != user {
		t.Fatalf("want CONNECTED as %s, got %s %v %q", user, f.Command, f.Header, f.Body)
	}
}

// sendFrame sends a SEND with a receipt and returns the answer.
func sendFrame(r *stomptest.Raw, dest, body string) *frame.Frame {
	r.T.Helper()
	r.Send("SEND\ndestination:" + dest + "\ncontent-type:application/json\nreceipt:r\n\n" + body + "\x00")
	return r.Frame()
}

func TestAllowedOrigins(t *testing.T) {
	k := jwttest.NewKeys(t)
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
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k)
	if err := n.addMember(context.Background(), "team", "alice"); err != nil {
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
			expectConnected(t, r.ConnectWith("passcode:"+k.HS(t, "bob")), "bob")
			r.Send(tc.frame)
			r.ExpectError(forbidden)
		})
	}
	t.Run("member", func(t *testing.T) {
		r := dialRaw(t, n)
		expectConnected(t, r.ConnectWith("passcode:"+k.HS(t, "alice")), "alice")
		r.Send("SUBSCRIBE\nid:s\ndestination:/topic/chat.team\n\n\x00")
		// The RECEIPT and the MESSAGE may come in either order.
		got := map[string]*frame.Frame{}
		for f := sendFrame(r, "/app/chat.team", msgBody("hi")); ; f = r.Frame() {
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
		members, err := n.members(context.Background(), "team")
		if err != nil || len(members) != 1 || members[0] != "alice" {
			t.Fatalf("members of team %v %v, want only alice", members, err)
		}
	})
}

func TestSendRateLimit(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k, func(c *config.Config) { c.SendRate, c.SendBurst = 2, 5 })
	for _, u := range []string{"alice", "bob"} {
		if err := n.addMember(context.Background(), "team", u); err != nil {
			t.Fatal(err)
		}
	}
	bob := dialRaw(t, n)
	expectConnected(t, bob.ConnectWith("passcode:"+k.HS(t, "bob")), "bob")
	alice := dialRaw(t, n)
	expectConnected(t, alice.ConnectWith("passcode:"+k.HS(t, "alice")), "alice")
	// 20 SENDs in one WebSocket message: far past a burst of 5.
	alice.Send(strings.Repeat("SEND\ndestination:/app/chat.team\n\n"+msgBody("spam")+"\x00", 20))
	alice.ExpectError("SEND rate limit exceeded (limit 2 per second, burst 5)")
	// Bob has his own bucket.
	for i := range 3 {
		if f := sendFrame(bob, "/app/chat.team", msgBody("fine")); f.Command != "RECEIPT" {
			t.Fatalf("bob's SEND %d: %s %v", i, f.Command, f.Header)
		}
	}
}

func TestConnectionsPerUser(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k, func(c *config.Config) { c.MaxConnectionsPerUser = 2 })
	first := dialRaw(t, n)
	expectConnected(t, first.ConnectWith("passcode:"+k.HS(t, "alice")), "alice")
	second := dialRaw(t, n)
	expectConnected(t, second.ConnectWith("passcode:"+k.HS(t, "alice")), "alice")
	third := dialRaw(t, n)
	third.Send("CONNECT\naccept-version:1.2\nhost:/\npasscode:" + k.HS(t, "alice") + "\n\n\x00")
	third.ExpectError("too many connections for this user (limit 2)")
	bob := dialRaw(t, n)
	expectConnected(t, bob.ConnectWith("passcode:"+k.HS(t, "bob")), "bob")

	// Once one of alice's sessions has ended she may open another.
	first.Send("DISCONNECT\nreceipt:bye\n\n\x00")
	if f := first.Frame(); f.Command != "RECEIPT" {
		t.Fatalf("want RECEIPT, got %s", f.Command)
	}
	first.ExpectClosed()
	deadline := time.Now().Add(10 * time.Second)
	for n.connections() > 2 {
		if time.Now().After(deadline) {
			t.Fatalf("%d sessions 10s after DISCONNECT, want 2", n.connections())
		}
		time.Sleep(10 * time.Millisecond) // polling the condition itself
	}
	again := dialRaw(t, n)
	expectConnected(t, again.ConnectWith("passcode:"+k.HS(t, "alice")), "alice")
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
	a, err := chatdnode.Start(ctx, cfg, "test", testlog.New())
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
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k)
	js := n.jetStream(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	kv, err := js.KeyValue(ctx, "CHAT_MEMBERS")
	if err != nil {
		t.Fatal(err)
	}
	waitMember := func(want bool) {
		t.Helper()
		for {
			members, err := n.members(ctx, "ops")
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
	expectConnected(t, r.ConnectWith("passcode:"+k.HS(t, "carol")), "carol")
	r.Send("SUBSCRIBE\nid:s\ndestination:/topic/chat.ops.read\nreceipt:s\n\n\x00")
	if f := r.Frame(); f.Command != "RECEIPT" {
		t.Fatalf("member's SUBSCRIBE: %s %v", f.Command, f.Header)
	}
	// The removal ends carol's live subscription at once.
	if err := kv.Delete(ctx, "ops.carol"); err != nil {
		t.Fatal(err)
	}
	r.ExpectError("forbidden: no longer a member of room ops")
	waitMember(false)
	r = dialRaw(t, n)
	expectConnected(t, r.ConnectWith("passcode:"+k.HS(t, "carol")), "carol")
	r.Send("SEND\ndestination:/app/chat.ops\n\n" + msgBody("again") + "\x00")
	r.ExpectError("forbidden: not a member of room ops")
}

// TestRemovedMemberCutOffOnEveryNode removes a member on one node and
// shows her subscription on another ends at once, while others' go on.
func TestRemovedMemberCutOffOnEveryNode(t *testing.T) {
	k := jwttest.NewKeys(t)
	nodes := startCluster(t, 2, jwtOnly(k))
	ctx := context.Background()
	for _, u := range []string{"alice", "bob"} {
		if err := nodes[0].addMember(ctx, "team", u); err != nil {
			t.Fatal(err)
		}
	}
	wait.Until(t, "node 1 sees both members", func() error {
		m, err := nodes[1].members(ctx, "team")
		if err != nil || len(m) != 2 {
			return fmt.Errorf("members %v %v", m, err)
		}
		return nil
	})
	alice, bob := dialRaw(t, nodes[1]), dialRaw(t, nodes[1])
	for user, r := range map[string]*stomptest.Raw{"alice": alice, "bob": bob} {
		expectConnected(t, r.ConnectWith("passcode:"+k.HS(t, user)), user)
		r.Send("SUBSCRIBE\nid:s\ndestination:/topic/chat.team\nreceipt:s\n\n\x00")
		if f := r.Frame(); f.Command != "RECEIPT" {
			t.Fatalf("%s SUBSCRIBE: %s %v", user, f.Command, f.Header)
		}
	}
	if err := nodes[0].removeMember(ctx, "team", "alice"); err != nil {
		t.Fatal(err)
	}
	alice.ExpectError("forbidden: no longer a member of room team")
	// Bob, still a member, goes on receiving.
	poster := dialRaw(t, nodes[0])
	expectConnected(t, poster.ConnectWith("passcode:"+k.HS(t, "bob")), "bob")
	if f := sendFrame(poster, "/app/chat.team", msgBody("still here")); f.Command != "RECEIPT" {
		t.Fatalf("bob's SEND: %s %v", f.Command, f.Header)
	}
	if f := bob.Frame(); f.Command != "MESSAGE" || !strings.Contains(string(f.Body), "still here") {
		t.Fatalf("bob got %s %q", f.Command, f.Body)
	}
}
