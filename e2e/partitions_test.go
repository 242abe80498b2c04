package e2e_test

import (
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/go-stomp/stomp/v3"
)

// TestPartitionedCluster: on three nodes with the messages spread over
// four streams, rooms of every partition chat across nodes, resume from a
// since-id on another node with exactly what they missed, in order, say
// a gap where the per-room cap dropped messages, and list with their
// unread counts, the most recently active first.
func TestPartitionedCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster: skipped with -short")
	}
	const parts, capped = 4, 25
	nodes := startCluster(t, 3, func(c *config.Config) { c.Partitions, c.HistoryMaxPerRoom = parts, capped })
	names := nodes[0].names()
	var rooms []string
	used := map[int]bool{}
	for i := range 8 {
		room := "part-" + strconv.Itoa(i)
		rooms = append(rooms, room)
		used[names.Partition(room)] = true
	}
	if len(used) != parts {
		t.Fatalf("rooms %v fall in partitions %v: want every one of %d", rooms, used, parts)
	}
	var leaders float64
	for _, n := range nodes {
		m := scrape(t, n)
		if m["chatd_messages_partitions"] != parts {
			t.Fatalf("%s: chatd_messages_partitions %v", n.cfg.ServerName, m["chatd_messages_partitions"])
		}
		leaders += m["chatd_messages_stream_leader"]
	}
	if leaders != parts {
		t.Fatalf("the nodes lead %v streams between them, want %d", leaders, parts)
	}

	alice, bob := dial(t, nodes[0], "alice"), dial(t, nodes[1], "bob")
	ref, bsubs := map[string]*stomp.Subscription{}, map[string]*stomp.Subscription{}
	for _, room := range rooms {
		ref[room] = alice.subscribe("/topic/chat." + room)
		bsubs[room] = bob.subscribe("/topic/chat." + room)
	}
	ids := map[string][]uint64{} // each room's ids, as alice saw them
	// Each post's echo is read at once: go-stomp holds only a few
	// unread MESSAGEs before it stops reading RECEIPTs too.
	postRound := func(round string, n int, rs []string) {
		t.Helper()
		for i := range n {
			for _, room := range rs {
				alice.post(room, fmt.Sprintf("%s %d", round, i))
				m := nextChat(t, ref[room])
				if m.RoomID != room {
					t.Fatalf("room %s: got a message of %s", room, m.RoomID)
				}
				if k := len(ids[room]); k > 0 && m.ID <= ids[room][k-1] {
					t.Fatalf("room %s: id %d after %d", room, m.ID, ids[room][k-1])
				}
				ids[room] = append(ids[room], m.ID)
			}
		}
	}
	postRound("seen", 5, rooms)
	lastSeen := map[string]uint64{}
	for _, room := range rooms {
		for i := range 5 {
			if m := nextChat(t, bsubs[room]); m.ID != ids[room][i] {
				t.Fatalf("room %s: bob on node 1 got %d, alice on node 0 %d", room, m.ID, ids[room][i])
			}
		}
		lastSeen[room] = ids[room][4]
	}
	_ = bob.Disconnect()

	postRound("missed", 10, rooms)
	// Each room resumes on a session of its own, ended after its check, so
	// that later messages queue for nobody (go-stomp's Unsubscribe can miss
	// its own RECEIPT's wake-up and wait out its 30 s timeout).
	for _, room := range rooms {
		bob = dial(t, nodes[2], "bob")
		resumed := bob.subscribeSince("/topic/chat."+room, lastSeen[room])
		for i := range 10 {
			m := next(t, resumed)
			var cm chat.Message
			if err := json.Unmarshal(m.Body, &cm); err != nil {
				t.Fatal(err)
			}
			if cm.ID != ids[room][5+i] || m.Header.Get("history") != "" {
				t.Fatalf("room %s: replay %d gave %d (history %q), want %d", room, i, cm.ID, m.Header.Get("history"), ids[room][5+i])
			}
		}
		quiet(t, resumed, 100*time.Millisecond)
		_ = bob.Disconnect()
	}
	bob = dial(t, nodes[2], "bob")

	// More than the cap in the first room: a since-id from before what the
	// stream keeps is told the gap, and where the room resumes.
	postRound("over", capped+5, rooms[:1])
	kept := ids[rooms[0]][len(ids[rooms[0]])-capped:]
	carol := dial(t, nodes[1], "carol")
	gap := carol.subscribeSince("/topic/chat."+rooms[0], ids[rooms[0]][0])
	m := next(t, gap)
	var first chat.Message
	if err := json.Unmarshal(m.Body, &first); err != nil {
		t.Fatal(err)
	}
	if m.Header.Get("history") != "gap" || first.ID != kept[0] || m.Header.Get("history-first-id") != strconv.FormatUint(kept[0], 10) {
		t.Fatalf("since-id before the cap: history %q first-id %s, message %d; want gap from %d",
			m.Header.Get("history"), m.Header.Get("history-first-id"), first.ID, kept[0])
	}

	// Bob's rooms from node 2: the capped room, posted to last, first; then
	// the others in the reverse order of their last messages; unread
	// counts from each partition's stream, read positions included.
	if err := bob.Send("/app/chat."+rooms[1]+".read", "application/json",
		fmt.Appendf(nil, `{"lastReadId":%d}`, ids[rooms[1]][12]), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	var list []chat.RoomSummary
	if code := api(t, nodes[2], http.MethodGet, "/api/rooms", "bob", "", &list); code != http.StatusOK {
		t.Fatalf("GET /api/rooms: %d", code)
	}
	var order []string
	unread := map[string]uint64{}
	for _, r := range list {
		if r.LastMessage == nil {
			continue // the read-receipt barrier's own room
		}
		order = append(order, r.ID)
		unread[r.ID] = r.UnreadCount
		if want := ids[r.ID][len(ids[r.ID])-1]; r.LastMessage.ID != want {
			t.Fatalf("room %s: newest %d, want %d", r.ID, r.LastMessage.ID, want)
		}
	}
	want := slices.Clone(rooms[1:])
	slices.Reverse(want)
	want = append([]string{rooms[0]}, want...)
	if !slices.Equal(order, want) {
		t.Fatalf("room list order %v, want %v", order, want)
	}
	for room, n := range unread {
		w := uint64(15)
		switch room {
		case rooms[0]:
			w = capped // what the stream keeps
		case rooms[1]:
			w = 2
		}
		if n != w {
			t.Fatalf("room %s: %d unread, want %d", room, n, w)
		}
	}
}
