package e2e_test

import (
	"context"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/go-stomp/stomp/v3/frame"
)

// TestWorkingSetEviction: a node whose working set overflows drops the
// rooms least recently used, but keeps the rooms it has subscribers in:
// their messages, unread counts and member removals go on as before, and
// their sends load nothing. A room dropped gives the same answers when
// used again.
func TestWorkingSetEviction(t *testing.T) {
	t.Run("kv", func(t *testing.T) { testWorkingSetEviction(t, "") })
	t.Run("postgres", func(t *testing.T) { testWorkingSetEviction(t, pgtest.NewDatabase(t)) })
}

// testWorkingSetEviction runs TestWorkingSetEviction on the KV store, or
// with rooms and memberships in the PostgreSQL database at dbURL.
func testWorkingSetEviction(t *testing.T, dbURL string) {
	k := jwttest.NewKeys(t)
	nodes := startCluster(t, 2, jwtOnly(k), func(c *config.Config) { c.WorkingSet, c.PostgresURL = 1000, dbURL })
	ctx := context.Background()
	for _, u := range []string{"alice", "bob", "carol"} {
		if err := nodes[0].addMember(ctx, "team", u); err != nil {
			t.Fatal(err)
		}
	}
	// 60 rooms of 20 members (21 entries each with the room, more with
	// read positions): more than the 1000 a node may hold.
	const fillers, size = 60, 20
	for r := range fillers {
		for u := range size {
			user := "filler"
			if u > 0 {
				user = "f" + strconv.Itoa(u)
			}
			if err := nodes[0].addMember(ctx, "room"+strconv.Itoa(r), user); err != nil {
				t.Fatal(err)
			}
		}
	}
	subs := map[string]*stomptest.Raw{}
	for _, user := range []string{"alice", "bob"} {
		r := dialRaw(t, nodes[1])
		expectConnected(t, r.ConnectWith("passcode:"+k.HS(t, user)), user)
		// Node 1 loads team from the store on this first use: the
		// memberships written on node 0 are there.
		r.Send("SUBSCRIBE\nid:s\ndestination:/topic/chat.team\nreceipt:s\n\n\x00")
		if f := r.Frame(); f.Command != "RECEIPT" {
			t.Fatalf("%s's SUBSCRIBE: %s %v", user, f.Command, f.Header)
		}
		subs[user] = r
	}
	evictions := func() float64 {
		v, err := nodes[1].metric("chatd_working_set_evictions_total")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	if evictions() != 0 {
		t.Fatal("node 1 evicted rooms before it held more than it may")
	}
	// Node 1 uses every filler room (a history page each): team, used
	// first but kept for its subscribers, stays.
	token := k.HS(t, "filler")
	for r := range fillers {
		if code := api(t, nodes[1], http.MethodGet, "/api/rooms/room"+strconv.Itoa(r)+"/messages", token, "", nil); code != http.StatusOK {
			t.Fatalf("GET room%d: %d", r, code)
		}
	}
	if evictions() == 0 {
		t.Fatal("node 1 holds more than --working-set allows")
	}
	loads := func() float64 {
		v, err := nodes[1].metric("chatd_working_set_loads_total")
		if err != nil {
			t.Fatal(err)
		}
		return v
	}
	before := loads()
	// A message posted on node 0 reaches both subscribers on node 1, with
	// its unread count (two members besides carol).
	poster := dialRaw(t, nodes[0])
	expectConnected(t, poster.ConnectWith("passcode:"+k.HS(t, "carol")), "carol")
	if f := sendFrame(poster, "/app/chat.team", msgBody("after the evictions")); f.Command != "RECEIPT" {
		t.Fatalf("carol's SEND: %s %v", f.Command, f.Header)
	}
	for user, r := range subs {
		f := r.Frame()
		if f.Command != "MESSAGE" || !strings.Contains(string(f.Body), "after the evictions") || !strings.Contains(string(f.Body), `"unreadCount":2`) {
			t.Fatalf("%s got %s %q", user, f.Command, f.Body)
		}
	}
	// Removed on node 0: alice's subscription on node 1 ends at once;
	// bob's goes on.
	if err := nodes[0].removeMember(ctx, "team", "alice"); err != nil {
		t.Fatal(err)
	}
	subs["alice"].ExpectError("forbidden: no longer a member of room team")
	// Bob sends on node 1: team is there, one member besides him.
	bob := dialRaw(t, nodes[1])
	expectConnected(t, bob.ConnectWith("passcode:"+k.HS(t, "bob")), "bob")
	if f := sendFrame(bob, "/app/chat.team", msgBody("kept")); f.Command != "RECEIPT" {
		t.Fatalf("bob's SEND on node 1: %s %v", f.Command, f.Header)
	}
	if f := subs["bob"].Frame(); f.Command != "MESSAGE" || !strings.Contains(string(f.Body), `"unreadCount":1`) {
		t.Fatalf("bob got %s %q, want unreadCount 1 (carol)", f.Command, f.Body)
	}
	if n := loads(); n != before {
		t.Fatalf("team, kept for its subscribers, was loaded again (%v loads, was %v)", n, before)
	}
	// room0, dropped, answers as before when used again: a message there
	// is unread by its 19 other members.
	filler := dialRaw(t, nodes[1])
	expectConnected(t, filler.ConnectWith("passcode:"+token), "filler")
	filler.Send("SUBSCRIBE\nid:s\ndestination:/topic/chat.room0\nreceipt:s\n\n\x00")
	if f := filler.Frame(); f.Command != "RECEIPT" {
		t.Fatalf("filler's SUBSCRIBE: %s %v", f.Command, f.Header)
	}
	// Its RECEIPT and the MESSAGE to its own subscription, in either order.
	frames := []*frame.Frame{sendFrame(filler, "/app/chat.room0", msgBody("back")), filler.Frame()}
	slices.SortFunc(frames, func(a, b *frame.Frame) int { return strings.Compare(a.Command, b.Command) })
	if frames[0].Command != "MESSAGE" || frames[1].Command != "RECEIPT" ||
		!strings.Contains(string(frames[0].Body), fmt.Sprintf(`"unreadCount":%d`, size-1)) {
		t.Fatalf("filler got %s %q and %s, want a MESSAGE with unreadCount %d and a RECEIPT",
			frames[0].Command, frames[0].Body, frames[1].Command, size-1)
	}
	if n := loads(); n != before+1 {
		t.Fatalf("room0 was not loaded again (%v loads, was %v)", n, before)
	}
}
