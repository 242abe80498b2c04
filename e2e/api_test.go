package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/golang-jwt/jwt/v5"
)

// api calls the node's HTTP API with a bearer token ("" for none) and
// decodes the JSON answer into out (if not nil).
func api(t *testing.T, n *node, method, path, token, body string, out any) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, "http://"+n.app.Addr()+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer func() { _ = resp.Body.Close() }()
	raw, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode == http.StatusNoContent {
		if len(raw) != 0 {
			t.Fatalf("%s %s: 204 with a body %q", method, path, raw)
		}
		return resp.StatusCode
	}
	if ct := resp.Header.Get("Content-Type"); ct != "application/json" {
		t.Fatalf("%s %s: Content-Type %q, body %q", method, path, ct, raw)
	}
	if out != nil {
		if err := json.Unmarshal(raw, out); err != nil {
			t.Fatalf("%s %s: decode %q: %v", method, path, raw, err)
		}
	}
	return resp.StatusCode
}

func TestAPIMessagesAndRead(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k)
	for _, u := range []string{"alice", "bob"} {
		if err := n.addMember(context.Background(), "team", u); err != nil {
			t.Fatal(err)
		}
	}
	alice := dialRaw(t, n)
	expectConnected(t, alice.ConnectWith("passcode:"+k.HS(t, "alice")), "alice")
	for i := range 3 {
		if f := sendFrame(alice, "/app/chat.team", msgBody("m"+strconv.Itoa(i))); f.Command != "RECEIPT" {
			t.Fatalf("SEND: %s %v", f.Command, f.Header)
		}
	}
	bob, mallory := k.RS(t, "bob"), k.HS(t, "mallory")

	var page []chat.Message
	if code := api(t, n, "GET", "/api/rooms/team/messages?limit=2", bob, "", &page); code != 200 || len(page) != 2 ||
		page[0].Message != "m1" || page[1].Message != "m2" || page[1].UnreadCount != 1 {
		t.Fatalf("newest page: %d %+v", code, page)
	}
	var older []chat.Message
	if code := api(t, n, "GET", "/api/rooms/team/messages?before="+strconv.FormatUint(page[0].ID, 10), bob, "", &older); code != 200 ||
		len(older) != 1 || older[0].Message != "m0" {
		t.Fatalf("older page: %d %+v", code, older)
	}
	var ev chat.ReadEvent
	if code := api(t, n, "POST", "/api/rooms/team/read", bob, `{"lastReadId":`+strconv.FormatUint(page[1].ID, 10)+`}`, &ev); code != 200 ||
		ev != (chat.ReadEvent{RoomID: "team", UserID: "bob", LastReadID: page[1].ID}) {
		t.Fatalf("mark read: %d %+v", code, ev)
	}
	if code := api(t, n, "GET", "/api/rooms/team/messages", bob, "", &page); code != 200 || len(page) != 3 || page[2].UnreadCount != 0 {
		t.Fatalf("after read: %d %+v", code, page)
	}

	expired := k.HS(t, "bob", func(c jwt.MapClaims) { c["exp"] = time.Now().Add(-time.Hour).Unix() })
	for _, tc := range []struct {
		name, method, path, token, body string
		code                            int
		msg                             string
	}{
		{"no token", "GET", "/api/rooms/team/messages", "", "", 401, "unauthorized"},
		{"garbage token", "GET", "/api/rooms/team/messages", "garbage", "", 401, "unauthorized"},
		{"expired token", "POST", "/api/rooms/team/read", expired, `{"lastReadId":1}`, 401, "unauthorized"},
		{"non-member history", "GET", "/api/rooms/team/messages", mallory, "", 403, "forbidden: not a member of room team"},
		{"non-member read", "POST", "/api/rooms/team/read", mallory, `{"lastReadId":1}`, 403, "forbidden: not a member of room team"},
		{"bad room", "GET", "/api/rooms/a.b/messages", bob, "", 400, "invalid room id"},
		{"bad limit", "GET", "/api/rooms/team/messages?limit=0", bob, "", 400, "invalid limit"},
		{"bad before", "GET", "/api/rooms/team/messages?before=x", bob, "", 400, "invalid before"},
		{"bad read body", "POST", "/api/rooms/team/read", bob, `{"lastReadId":"x"}`, 400, "invalid body"},
		{"no read id", "POST", "/api/rooms/team/read", bob, `{}`, 400, "invalid body"},
		{"unknown read field", "POST", "/api/rooms/team/read", bob, `{"lastReadId":1,"userId":"alice"}`, 400, "invalid body"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e struct{ Error string }
			if code := api(t, n, tc.method, tc.path, tc.token, tc.body, &e); code != tc.code || !strings.HasPrefix(e.Error, tc.msg) {
				t.Fatalf("%d %q, want %d %q", code, e.Error, tc.code, tc.msg)
			}
		})
	}
}

// TestAPIDevMode: in dev mode the bearer token is the user id, as the
// CONNECT login is.
func TestAPIDevMode(t *testing.T) {
	n := startNode(t)
	alice := dial(t, n, "alice")
	alice.post("lobby", "hello")
	var page []chat.Message
	if code := api(t, n, "GET", "/api/rooms/lobby/messages", "bob", "", &page); code != 200 || len(page) != 1 || page[0].Message != "hello" {
		t.Fatalf("dev history: %d %+v", code, page)
	}
	var e struct{ Error string }
	if code := api(t, n, "GET", "/api/rooms/lobby/messages", "has space", "", &e); code != 401 {
		t.Fatalf("bad dev user: %d %+v", code, e)
	}
}
