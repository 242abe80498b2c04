package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/internal/testkit/tcpproxy"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/go-stomp/stomp/v3"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go/jetstream"
)

// pgConn is a plain connection to the test's database, to look at the
// archive and to change memberships as a backend would, in SQL.
func pgConn(t *testing.T, dbURL string) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, dbURL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = c.Close(context.Background()) })
	return c
}

// pgNode starts a node on a database of its own, reached through a proxy
// that a test can cut, and returns the proxy and the database's URL.
func pgNode(t *testing.T, mutate ...func(*config.Config)) (*node, *tcpproxy.Proxy, string) {
	t.Helper()
	dbURL := pgtest.NewDatabase(t)
	proxy := tcpproxy.New(t, pgtest.ServerAddr(t, dbURL))
	n := startNode(t, append(mutate, func(c *config.Config) { c.PostgresURL = pgtest.WithHost(t, dbURL, proxy.Addr()) })...)
	return n, proxy, dbURL
}

func pgExec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// archivedIDs lists the room's ids in the archive (a duplicate would show).
func archivedIDs(t *testing.T, c *pgx.Conn, room string) []uint64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	rows, err := c.Query(ctx, "SELECT id FROM messages WHERE room_id = $1 ORDER BY id", room)
	if err != nil {
		t.Fatal(err)
	}
	ids, err := pgx.CollectRows(rows, pgx.RowTo[int64])
	if err != nil {
		t.Fatal(err)
	}
	out := make([]uint64, len(ids))
	for i, id := range ids {
		out[i] = uint64(id)
	}
	return out
}

// waitArchived waits until the archive holds exactly want for the room.
func waitArchived(t *testing.T, c *pgx.Conn, room string, want []uint64) {
	t.Helper()
	wait.Until(t, "archive of "+room, func() error {
		if got := archivedIDs(t, c, room); !slices.Equal(got, want) {
			return fmt.Errorf("archive holds %d messages of %s, want %d", len(got), room, len(want))
		}
		return nil
	})
}

func ids(ms []chat.Message) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.ID
	}
	return out
}

// TestPostgresMembershipAcrossNodes: two nodes start at once on an empty
// database; memberships made on one node, or in SQL by a backend, hold on
// the other, and a removal ends the member's live subscription there.
func TestPostgresMembershipAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("2-node cluster: skipped with -short")
	}
	dbURL := pgtest.NewDatabase(t)
	k := jwttest.NewKeys(t)
	nodes := startCluster(t, 2, jwtOnly(k), func(c *config.Config) { c.PostgresURL = dbURL })
	ctx := context.Background()
	if err := nodes[0].addMember(ctx, "team", "alice"); err != nil {
		t.Fatal(err)
	}
	membersOn := func(n *node, want ...string) func() error {
		return func() error {
			m, err := n.members(ctx, "team")
			if err != nil || !slices.Equal(m, want) {
				return fmt.Errorf("members %v %v, want %v", m, err, want)
			}
			return nil
		}
	}
	wait.Until(t, "node 1 sees alice", membersOn(nodes[1], "alice"))
	alice := dialRaw(t, nodes[1])
	expectConnected(t, alice.ConnectWith("passcode:"+k.HS(t, "alice")), "alice")
	alice.Send("SUBSCRIBE\nid:s\ndestination:/topic/chat.team\nreceipt:s\n\n\x00")
	if f := alice.Frame(); f.Command != "RECEIPT" {
		t.Fatalf("alice's SUBSCRIBE: %s %v", f.Command, f.Header)
	}
	bob := dialRaw(t, nodes[1])
	expectConnected(t, bob.ConnectWith("passcode:"+k.HS(t, "bob")), "bob")
	bob.Send("SEND\ndestination:/app/chat.team\n\n" + msgBody("not yet") + "\x00")
	bob.ExpectError("forbidden: not a member of room team")

	// A backend adds bob in SQL: both nodes follow.
	db := pgConn(t, dbURL)
	pgExec(t, db, "INSERT INTO room_members (room_id, user_id) VALUES ('team', 'bob')")
	wait.Until(t, "node 0 sees bob", membersOn(nodes[0], "alice", "bob"))
	wait.Until(t, "node 1 sees bob", membersOn(nodes[1], "alice", "bob"))
	bob = dialRaw(t, nodes[1])
	expectConnected(t, bob.ConnectWith("passcode:"+k.HS(t, "bob")), "bob")
	if f := sendFrame(bob, "/app/chat.team", msgBody("hi from bob")); f.Command != "RECEIPT" {
		t.Fatalf("bob's SEND: %s %v", f.Command, f.Header)
	}
	f := alice.Frame()
	var m chat.Message
	if err := json.Unmarshal(f.Body, &m); f.Command != "MESSAGE" || err != nil || m.Message != "hi from bob" || m.UnreadCount != 1 {
		t.Fatalf("alice got %s %q (%v)", f.Command, f.Body, err)
	}
	// Removed in SQL: her subscription on node 1 ends at once.
	pgExec(t, db, "DELETE FROM room_members WHERE user_id = 'alice'")
	alice.ExpectError("forbidden: no longer a member of room team")
	// The shared archive consumer stored the message once.
	waitArchived(t, db, "team", []uint64{m.ID})
	for _, n := range nodes {
		m := scrape(t, n)
		for _, name := range []string{"chatd_archive_lag_seconds", "chatd_postgres_notify_queue_usage", "chatd_read_position_transactions_total"} {
			if _, ok := m[name]; !ok {
				t.Fatalf("no %s", name)
			}
		}
		wait.Until(t, "the notification queue read", func() error {
			if u := scrape(t, n)["chatd_postgres_notify_queue_usage"]; u < 0 || u > 0.01 {
				return fmt.Errorf("notification queue usage %v on an idle deployment", u)
			}
			return nil
		})
	}
}

// TestArchiveSurvivesPostgresOutage cuts chatd off from PostgreSQL during
// a steady send: chat goes on, and the archive ends complete.
func TestArchiveSurvivesPostgresOutage(t *testing.T) {
	n, proxy, dbURL := pgNode(t)
	alice, bob := dial(t, n, "alice"), dial(t, n, "bob")
	sub := bob.subscribe("/topic/chat.steady")
	alice.post("steady", "before") // both joined while PostgreSQL is up
	var got []uint64
	got = append(got, nextChat(t, sub).ID)
	failures := func() float64 { return scrape(t, n)["chatd_archive_write_failures_total"] }
	sent := 1
	send := func(k int) {
		for range k {
			alice.post("steady", "m"+strconv.Itoa(sent))
			got = append(got, nextChat(t, sub).ID)
			sent++
			time.Sleep(5 * time.Millisecond)
		}
	}
	send(40)
	proxy.Cut()
	send(40)
	// Keep sending until the archiver has met the outage.
	for deadline := time.Now().Add(15 * time.Second); failures() == 0; send(5) {
		if time.Now().After(deadline) {
			t.Fatal("the archiver never failed a write while PostgreSQL was cut off")
		}
	}
	if m := scrape(t, n); m["chatd_archive_pending_messages"] == 0 && m["chatd_archive_lag_seconds"] == 0 {
		// Measured every 5s: the outage may be younger than that.
		wait.Until(t, "lag reported", func() error {
			if m := scrape(t, n); m["chatd_archive_pending_messages"] == 0 {
				return fmt.Errorf("pending %v", m["chatd_archive_pending_messages"])
			}
			return nil
		})
	}
	proxy.Restore()
	send(40)
	if len(got) != sent {
		t.Fatalf("bob got %d of %d", len(got), sent)
	}
	waitArchived(t, pgConn(t, dbURL), "steady", got)
}

// TestHistoryAcrossArchiveBoundary: with a retention short enough that the
// stream drops the old messages, paging and since-id walk on into the
// archive without a gap; with PostgreSQL cut off, a replay says what it
// cannot give.
func TestHistoryAcrossArchiveBoundary(t *testing.T) {
	partitioned(t, testHistoryAcrossArchiveBoundary)
}

func testHistoryAcrossArchiveBoundary(t *testing.T, partitions func(*config.Config)) {
	n, proxy, dbURL := pgNode(t, partitions, func(c *config.Config) { c.HistoryMaxAge, c.DedupeWindow = 3*time.Second, time.Second })
	db := pgConn(t, dbURL)
	alice := dial(t, n, "alice")
	sub := alice.subscribe("/topic/chat.arc")
	var all []uint64
	for i := range 12 {
		alice.post("arc", "old "+strconv.Itoa(i))
		all = append(all, nextChat(t, sub).ID)
	}
	waitArchived(t, db, "arc", all)
	js := n.jetStream(t)
	names := n.names()
	wait.Until(t, "the stream drops the old messages", func() error {
		st, err := js.Stream(context.Background(), names.MessagesStream(names.Partition("arc")))
		if err != nil {
			return err
		}
		info, err := st.Info(context.Background(), jetstream.WithSubjectFilter(names.Room("arc")))
		if err != nil || info.State.Subjects[names.Room("arc")] != 0 {
			return fmt.Errorf("stream holds %v of the room (%v)", info.State.Subjects, err)
		}
		return nil
	})
	for i := range 5 {
		alice.post("arc", "new "+strconv.Itoa(i))
		all = append(all, nextChat(t, sub).ID)
	}

	bob := dial(t, n, "bob")
	logSub := bob.subscribe("/user/queue/chat.log")
	var paged []uint64
	for before := uint64(0); ; {
		page := history(t, bob, logSub, "arc", fmt.Sprintf(`{"before":%d,"limit":4}`, before))
		if len(page) == 0 {
			break
		}
		paged = append(ids(page), paged...)
		before = page[0].ID
	}
	if !slices.Equal(paged, all) {
		t.Fatalf("STOMP pages %v\nwant %v", paged, all)
	}
	paged = nil
	for before := ""; ; {
		var page []chat.Message
		if code := api(t, n, "GET", "/api/rooms/arc/messages?limit=3"+before, "bob", "", &page); code != 200 {
			t.Fatalf("HTTP page: %d", code)
		}
		if len(page) == 0 {
			break
		}
		paged = append(ids(page), paged...)
		before = "&before=" + strconv.FormatUint(page[0].ID, 10)
	}
	if !slices.Equal(paged, all) {
		t.Fatalf("HTTP pages %v\nwant %v", paged, all)
	}

	carol := dial(t, n, "carol")
	resumed := carol.subscribeSince("/topic/chat.arc", all[2])
	for i, want := range all[3:] {
		m := next(t, resumed)
		var cm chat.Message
		_ = json.Unmarshal(m.Body, &cm)
		if cm.ID != want || m.Header.Get("history") != "" {
			t.Fatalf("replayed #%d: id %d (want %d), history note %q", i, cm.ID, want, m.Header.Get("history"))
		}
	}
	alice.post("arc", "live")
	if m := nextChat(t, resumed); m.Message != "live" {
		t.Fatalf("after the replay: %+v", m)
	}
	nextChat(t, sub)

	// Without PostgreSQL, the replay says messages are missing, and pages
	// that need the archive fail rather than end early.
	proxy.Cut()
	carol = dial(t, n, "carol") // a member already: joining needs PostgreSQL
	gap := carol.subscribeSince("/topic/chat.arc", all[2])
	m := next(t, gap)
	var cm chat.Message
	_ = json.Unmarshal(m.Body, &cm)
	// It starts at the stream's oldest (all[12], unless the new ones have
	// expired by now too): past every message only the archive holds.
	if m.Header.Get("history") != "gap" || cm.ID <= all[11] || m.Header.Get("history-first-id") != strconv.FormatUint(cm.ID, 10) {
		t.Fatalf("replay without the archive began with %d, headers %v; want a gap, past %d", cm.ID, m.Header, all[11])
	}
	if code := api(t, n, "GET", "/api/rooms/arc/messages?limit=3&before="+strconv.FormatUint(all[12], 10), "bob", "", nil); code != 500 {
		t.Fatalf("page past the stream without the archive: %d, want 500", code)
	}
}

func TestSearchAPI(t *testing.T) {
	dbURL := pgtest.NewDatabase(t)
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k, func(c *config.Config) { c.PostgresURL = dbURL })
	for _, u := range []string{"alice", "bob"} {
		if err := n.addMember(context.Background(), "team", u); err != nil {
			t.Fatal(err)
		}
	}
	alice := dialRaw(t, n)
	expectConnected(t, alice.ConnectWith("passcode:"+k.HS(t, "alice")), "alice")
	bodies := []string{"Deploy the release tonight", "lunch?", `he said "this" & that | !not`}
	for i := range 25 {
		bodies = append(bodies, "release note "+strconv.Itoa(i))
	}
	bodies = append(bodies, "'); DROP TABLE messages; --")
	var sent []uint64
	for _, text := range bodies {
		body, _ := json.Marshal(map[string]string{"message": text})
		if f := sendFrame(alice, "/app/chat.team", string(body)); f.Command != "RECEIPT" {
			t.Fatalf("SEND: %s %v", f.Command, f.Header)
		}
	}
	db := pgConn(t, dbURL)
	wait.Until(t, "archived", func() error {
		if sent = archivedIDs(t, db, "team"); len(sent) != len(bodies) {
			return fmt.Errorf("%d archived", len(sent))
		}
		return nil
	})
	bobTok := k.HS(t, "bob")
	search := func(tok, q, extra string) ([]chat.Message, int) {
		t.Helper()
		var out []chat.Message
		var raw json.RawMessage
		code := api(t, n, "GET", "/api/rooms/team/search?q="+url.QueryEscape(q)+extra, tok, "", &raw)
		if code == 200 {
			if err := json.Unmarshal(raw, &out); err != nil {
				t.Fatal(err)
			}
		}
		return out, code
	}
	// By word, newest first, paged.
	var found []uint64
	for before := ""; ; {
		page, code := search(bobTok, "release", "&limit=10"+before)
		if code != 200 {
			t.Fatalf("search: %d", code)
		}
		if len(page) == 0 {
			break
		}
		for _, m := range page {
			if !strings.Contains(strings.ToLower(m.Message), "release") || m.UserID != "alice" {
				t.Fatalf("found %+v", m)
			}
			found = append(found, m.ID)
		}
		before = "&before=" + strconv.FormatUint(page[len(page)-1].ID, 10)
	}
	want := append([]uint64{sent[0]}, sent[3:28]...)
	slices.Reverse(want) // newest first
	if !slices.Equal(found, want) {
		t.Fatalf("release: %v\nwant %v", found, want)
	}
	if got, _ := search(bobTok, "LUNCH", ""); len(got) != 1 || got[0].Message != "lunch?" {
		t.Fatalf("lunch: %+v", got)
	}
	// Members only.
	if _, code := search(k.HS(t, "carol"), "release", ""); code != 403 {
		t.Fatalf("non-member: %d, want 403", code)
	}
	if _, code := search("", "release", ""); code != 401 {
		t.Fatalf("no token: %d, want 401", code)
	}
	// Hostile input is text: quotes and operators are words or ignored,
	// never syntax errors, never SQL.
	for q, wantIDs := range map[string][]uint64{
		`"this" & that | !not`:            {sent[2]},
		`(((`:                             nil,
		`release:*`:                       want,
		`rel:*`:                           nil, // no prefix search
		`'); DROP TABLE messages; --`:     {sent[28]},
		`\\' OR 1=1 --`:                   nil,
		strings.Repeat("release ", 32):    want,
		`<script>alert(1)</script> lunch`: nil,
	} {
		got, code := search(bobTok, q, "&limit=100")
		if code != 200 || !slices.Equal(ids(got), wantIDs) {
			t.Fatalf("search %q: %d %v, want %v", q, code, ids(got), wantIDs)
		}
	}
	for q, why := range map[string]string{"": "empty", strings.Repeat("x", chat.MaxSearchQuery+1): "too long", "\xff": "not UTF-8", "a\x00b": "NUL"} {
		if _, code := search(bobTok, q, ""); code != 400 {
			t.Fatalf("%s query: %d, want 400", why, code)
		}
	}
	if got := archivedIDs(t, db, "team"); len(got) != len(bodies) {
		t.Fatalf("archive after hostile searches: %d rows", len(got))
	}
}

func TestSearchNeedsTheArchive(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	var body map[string]string
	if code := api(t, n, "GET", "/api/rooms/lobby/search?q=hello", "alice", "", &body); code != 501 || !strings.Contains(body["error"], "--postgres-url") {
		t.Fatalf("search without PostgreSQL: %d %v, want 501 naming --postgres-url", code, body)
	}
}

// TestHistoryAndUnreadFromArchive: with PostgreSQL, history pages and
// room lists' unread counts read the archive as far as it holds every
// message, and the log above that: the page is whole and in order while
// the archive lags, and what comes from where shows, for the archived
// rows are rewritten here. A restarted node trusts the archive at once.
func TestHistoryAndUnreadFromArchive(t *testing.T) {
	partitioned(t, testHistoryAndUnreadFromArchive)
}

func testHistoryAndUnreadFromArchive(t *testing.T, partitions func(*config.Config)) {
	// The test tells the archive's copy of a message from the log's by
	// its text, which in a deployment are the same: replays read for
	// themselves here, or a replay would be given what an earlier one
	// read from the other (--replay-share).
	n, proxy, dbURL := pgNode(t, partitions, func(c *config.Config) { c.ReplayShareMiB = 0 })
	db := pgConn(t, dbURL)
	alice := dial(t, n, "alice")
	sub := alice.subscribe("/topic/chat.arch")
	var all []uint64
	for i := range 10 {
		alice.post("arch", "old "+strconv.Itoa(i))
		all = append(all, nextChat(t, sub).ID)
	}
	bob := dial(t, n, "bob")
	bob.post("arch", "bob's")
	all = append(all, nextChat(t, sub).ID)
	waitArchived(t, db, "arch", all)
	pgExec(t, db, `UPDATE messages SET data = convert_to(replace(convert_from(data, 'UTF8'), '"old ', '"archived '), 'UTF8')
		WHERE room_id = 'arch'`)
	page := func(query string) []chat.Message {
		t.Helper()
		var p []chat.Message
		if code := api(t, n, "GET", "/api/rooms/arch/messages?"+query, "bob", "", &p); code != 200 {
			t.Fatalf("GET messages?%s: %d", query, code)
		}
		return p
	}
	texts := func(ms []chat.Message) []string {
		out := make([]string, len(ms))
		for i, m := range ms {
			out[i] = m.Message
		}
		return out
	}
	wait.Until(t, "the newest page from the archive", func() error {
		if got := texts(page("limit=3")); !slices.Equal(got, []string{"archived 8", "archived 9", "bob's"}) {
			return fmt.Errorf("newest page %q", got)
		}
		return nil
	})
	if got := page("limit=4&before=" + strconv.FormatUint(all[4], 10)); !slices.Equal(ids(got), all[:4]) || got[0].Message != "archived 0" {
		t.Fatalf("older page %v %q, want %v from the archive", ids(got), texts(got), all[:4])
	}

	// The archive takes no writes: what follows is read from the log.
	lock, err := db.Begin(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = lock.Rollback(context.Background()) }()
	if _, err := lock.Exec(context.Background(), "LOCK TABLE messages IN SHARE MODE"); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		alice.post("arch", "new "+strconv.Itoa(i))
		all = append(all, nextChat(t, sub).ID)
	}
	if got := page("limit=5"); !slices.Equal(ids(got), all[len(all)-5:]) ||
		!slices.Equal(texts(got), []string{"archived 9", "bob's", "new 0", "new 1", "new 2"}) {
		t.Fatalf("newest page while the archive lags: %v %q", ids(got), texts(got))
	}
	if got := page("limit=2"); !slices.Equal(ids(got), all[len(all)-2:]) {
		t.Fatalf("newest page of 2 while the archive lags: %v", ids(got))
	}
	// Bob has read up to the fourth message: ten are unread, seven of them
	// counted in the archive, three in the log.
	if code := api(t, n, "POST", "/api/rooms/arch/read", "bob", `{"lastReadId":`+strconv.FormatUint(all[3], 10)+`}`, nil); code != 200 {
		t.Fatalf("read: %d", code)
	}
	unread := func() uint64 {
		t.Helper()
		var list []chat.RoomSummary
		if code := api(t, n, "GET", "/api/rooms", "bob", "", &list); code != 200 {
			t.Fatalf("GET /api/rooms: %d", code)
		}
		for _, r := range list {
			if r.ID == "arch" {
				if r.LastMessage == nil || r.LastMessage.ID != all[len(all)-1] {
					t.Fatalf("room list's newest message %+v, want %d", r.LastMessage, all[len(all)-1])
				}
				return r.UnreadCount
			}
		}
		t.Fatalf("room arch not in bob's list %+v", list)
		return 0
	}
	if got := unread(); got != uint64(len(all)-4) {
		t.Fatalf("unread %d while the archive lags, want %d", got, len(all)-4)
	}
	if err := lock.Commit(context.Background()); err != nil {
		t.Fatal(err)
	}
	waitArchived(t, db, "arch", all)
	if got := unread(); got != uint64(len(all)-4) {
		t.Fatalf("unread %d once archived, want %d", got, len(all)-4)
	}

	n.restart()
	if got := page("limit=20"); !slices.Equal(ids(got), all) || got[0].Message != "archived 0" || got[len(got)-1].Message != "new 2" {
		t.Fatalf("history after a restart: %v %q", ids(got), texts(got))
	}
	if m := scrape(t, n); m[`chatd_history_pages_total{from="archive"}`] != 1 || m[`chatd_history_pages_total{from="log"}`] != 0 {
		t.Fatalf("history pages after a restart: %v from the archive, %v from the log; want the one from the archive",
			m[`chatd_history_pages_total{from="archive"}`], m[`chatd_history_pages_total{from="log"}`])
	}

	// A since-id replay reads the archive up to its reach as well, and so
	// does a replay of everything (since-id 0).
	replayed := func(from string, first int) {
		t.Helper()
		since := uint64(0)
		if first > 0 {
			since = all[first-1]
		}
		resumed := dial(t, n, "bob").subscribeSince("/topic/chat.arch", since)
		for i, want := range all[first:] {
			m := nextChat(t, resumed)
			text := from + " " + strconv.Itoa(i+first)
			switch {
			case i+first == 10:
				text = "bob's"
			case i+first > 10:
				text = "new " + strconv.Itoa(i+first-11)
			}
			if m.ID != want || m.Message != text {
				t.Fatalf("replayed since %d, #%d: %d %q, want %d %q", since, i, m.ID, m.Message, want, text)
			}
		}
	}
	replayed("archived", 3)
	replayed("archived", 0)

	// A room far behind, more unread than the archive counts: the log
	// counts it, exactly.
	alice = dial(t, n, "alice")
	bob = dial(t, n, "bob")
	far := alice.subscribe("/topic/chat.far")
	bob.post("far", "first")
	farIDs := []uint64{nextChat(t, far).ID}
	for i := range 300 {
		alice.post("far", "m "+strconv.Itoa(i))
		farIDs = append(farIDs, nextChat(t, far).ID)
	}
	waitArchived(t, db, "far", farIDs)
	var list []chat.RoomSummary
	if code := api(t, n, "GET", "/api/rooms", "bob", "", &list); code != 200 {
		t.Fatalf("GET /api/rooms: %d", code)
	}
	found := false
	for _, r := range list {
		if r.ID != "far" {
			continue
		}
		found = true
		want := 0
		for _, id := range farIDs {
			if id > r.LastReadID {
				want++
			}
		}
		if want < 300 || r.UnreadCount != uint64(want) {
			t.Fatalf("room far: %d unread after %d, want %d", r.UnreadCount, r.LastReadID, want)
		}
	}
	if !found {
		t.Fatal("room far not in bob's list")
	}

	// Without PostgreSQL, the replay reads the log, which holds it all.
	proxy.Cut()
	replayed("old", 3)
	replayed("old", 0)
}

// TestUpgradeMovesReadPositionsToPostgres: a deployment whose read
// positions are in JetStream KV (as chatd kept them with --postgres-url
// before they moved) restarts on PostgreSQL and keeps them: each user's
// unread counts are what they were, they are copied once, and a read
// receipt after the upgrade moves them on in PostgreSQL.
func TestUpgradeMovesReadPositionsToPostgres(t *testing.T) {
	n := startNode(t) // read positions in the READS buckets
	alice, bob := dial(t, n, "alice"), dial(t, n, "bob")
	sub := bob.subscribe("/topic/chat.up")
	var ids []uint64
	for i := range 5 {
		alice.post("up", "m"+strconv.Itoa(i))
		ids = append(ids, nextChat(t, sub).ID)
	}
	if code := api(t, n, "POST", "/api/rooms/up/read", "bob", `{"lastReadId":`+strconv.FormatUint(ids[1], 10)+`}`, nil); code != 200 {
		t.Fatalf("read: %d", code)
	}
	_ = alice.Disconnect()
	_ = bob.Disconnect()
	n.stop()

	// What the earlier chatd had in PostgreSQL: the memberships.
	dbURL := pgtest.NewDatabase(t)
	db := pgConn(t, dbURL)
	n.cfg.PostgresURL = dbURL
	n.start() // migrates, then copies the positions
	pgExec(t, db, "INSERT INTO room_members (room_id, user_id) VALUES ('up', 'alice'), ('up', 'bob')")
	unread := func(user string) uint64 {
		t.Helper()
		var list []chat.RoomSummary
		if code := api(t, n, "GET", "/api/rooms", user, "", &list); code != 200 || len(list) != 1 {
			t.Fatalf("GET /api/rooms as %s: %d %+v", user, code, list)
		}
		return list[0].UnreadCount
	}
	if got := unread("bob"); got != 3 {
		t.Fatalf("bob's unread count after the upgrade: %d, want 3", got)
	}
	var copied, rows int
	if err := db.QueryRow(context.Background(), "SELECT count(*) FROM read_positions").Scan(&rows); err != nil {
		t.Fatal(err)
	}
	if err := db.QueryRow(context.Background(), "SELECT rows FROM chatd_imports").Scan(&copied); err != nil || copied != rows || rows == 0 {
		t.Fatalf("import recorded %d positions (%v), the table holds %d", copied, err, rows)
	}
	if code := api(t, n, "POST", "/api/rooms/up/read", "bob", `{"lastReadId":`+strconv.FormatUint(ids[3], 10)+`}`, nil); code != 200 {
		t.Fatalf("read: %d", code)
	}
	if got := unread("bob"); got != 1 {
		t.Fatalf("bob's unread count after reading on: %d, want 1", got)
	}
	// A restart copies nothing again: the position stays where bob moved it.
	n.restart()
	if got := unread("bob"); got != 1 {
		t.Fatalf("bob's unread count after a restart: %d, want 1", got)
	}
}

// TestReadReceiptWaitsOutPostgresOutage: a read receipt sent while chatd
// is cut off from PostgreSQL gets its RECEIPT once PostgreSQL is back, and
// the session goes on; chat in the room goes on meanwhile.
func TestReadReceiptWaitsOutPostgresOutage(t *testing.T) {
	n, proxy, _ := pgNode(t)
	alice, bob := dial(t, n, "alice"), dial(t, n, "bob")
	sub := bob.subscribe("/topic/chat.out")
	alice.post("out", "before")
	first := nextChat(t, sub)
	d, err := n.cfg.Destinations()
	if err != nil {
		t.Fatal(err)
	}
	proxy.Cut()
	receipted := make(chan error, 1)
	go func() {
		receipted <- bob.Send(d.Read.Expand("out"), "application/json",
			[]byte(`{"lastReadId":`+strconv.FormatUint(first.ID, 10)+`}`), stomp.SendOpt.Receipt)
	}()
	alice.post("out", "during") // the room is loaded: SENDs need no PostgreSQL
	if m := nextChat(t, sub); m.Message != "during" {
		t.Fatalf("bob got %q during the outage", m.Message)
	}
	select {
	case err := <-receipted:
		t.Fatalf("read receipt answered while PostgreSQL was away: %v", err)
	case <-time.After(time.Second):
	}
	proxy.Restore()
	select {
	case err := <-receipted:
		if err != nil {
			t.Fatalf("read receipt after the outage: %v", err)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("no RECEIPT for the read receipt once PostgreSQL was back")
	}
	bob.post("out", "still here")
	if m := nextChat(t, sub); m.Message != "still here" {
		t.Fatalf("bob got %q after the outage", m.Message)
	}
	var list []chat.RoomSummary
	if code := api(t, n, "GET", "/api/rooms", "bob", "", &list); code != 200 {
		t.Fatalf("GET /api/rooms: %d", code)
	}
	if i := slices.IndexFunc(list, func(r chat.RoomSummary) bool { return r.ID == "out" }); i < 0 || list[i].LastReadID != first.ID {
		t.Fatalf("bob's rooms after the outage: %+v, want room out read up to %d", list, first.ID)
	}
}

// TestReadPositionsAcrossNodes: a read receipt made on one node moves the
// unread counts that another node gives for the room, through PostgreSQL.
func TestReadPositionsAcrossNodes(t *testing.T) {
	if testing.Short() {
		t.Skip("2-node cluster: skipped with -short")
	}
	dbURL := pgtest.NewDatabase(t)
	nodes := startCluster(t, 2, func(c *config.Config) { c.PostgresURL = dbURL })
	alice, bob := dial(t, nodes[0], "alice"), dial(t, nodes[1], "bob")
	sub := bob.subscribe("/topic/chat.rp") // joins bob, on first use
	alice.post("rp", "one")
	alice.post("rp", "two")
	first, second := nextChat(t, sub), nextChat(t, sub)
	unread := func() []int {
		t.Helper()
		var page []chat.Message
		if code := api(t, nodes[0], "GET", "/api/rooms/rp/messages?limit=10", "alice", "", &page); code != 200 || len(page) != 2 {
			t.Fatalf("history on node 0: %d %+v", code, page)
		}
		return []int{page[0].UnreadCount, page[1].UnreadCount}
	}
	if got := unread(); !slices.Equal(got, []int{1, 1}) {
		t.Fatalf("unread counts before bob reads: %v, want [1 1]", got)
	}
	if code := api(t, nodes[1], "POST", "/api/rooms/rp/read", "bob", `{"lastReadId":`+strconv.FormatUint(first.ID, 10)+`}`, nil); code != 200 {
		t.Fatalf("read: %d", code)
	}
	wait.Until(t, "node 0 sees bob's read receipt", func() error {
		if got := unread(); !slices.Equal(got, []int{0, 1}) {
			return fmt.Errorf("unread counts %v, want [0 1]", got)
		}
		return nil
	})
	if code := api(t, nodes[1], "POST", "/api/rooms/rp/read", "bob", `{"lastReadId":`+strconv.FormatUint(second.ID, 10)+`}`, nil); code != 200 {
		t.Fatalf("read: %d", code)
	}
	wait.Until(t, "node 0 sees bob's second read receipt", func() error {
		if got := unread(); !slices.Equal(got, []int{0, 0}) {
			return fmt.Errorf("unread counts %v, want [0 0]", got)
		}
		return nil
	})
}
