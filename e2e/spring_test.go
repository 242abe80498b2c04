package e2e_test

// Spring apps' conventions, from the config files in examples/spring that
// docs/migrating-from-spring.md walks through: their destinations, their
// field names, the fields their clients add, on one node and on three.

import (
	"bytes"
	"encoding/json"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/stompapi/dest"
	"github.com/go-stomp/stomp/v3"
)

// convention is one Spring convention's settings, from its file.
type convention struct {
	cfg    config.Config
	dests  dest.Set
	fields map[string]string
}

func loadConvention(t *testing.T, file string) convention {
	t.Helper()
	cfg, err := config.Parse([]string{"--config", filepath.Join("..", "examples", "spring", file), "--dev"})
	if err != nil {
		t.Fatalf("%s: %v", file, err)
	}
	d, err := cfg.Destinations()
	if err != nil {
		t.Fatal(err)
	}
	return convention{cfg: cfg, dests: d, fields: cfg.MessageFields}
}

// apply sets a test node's configuration to the convention's.
func (cv convention) apply(c *config.Config) {
	c.WSPath, c.SockJS = cv.cfg.WSPath, cv.cfg.SockJS
	c.DestSend, c.DestRoom, c.DestHistory, c.DestHistoryReply = cv.cfg.DestSend, cv.cfg.DestRoom, cv.cfg.DestHistory, cv.cfg.DestHistoryReply
	c.DestRead, c.DestReadEvents, c.UserPrefix = cv.cfg.DestRead, cv.cfg.DestReadEvents, cv.cfg.UserPrefix
	c.MessageFields, c.KeepClientFields, c.HeartBeatMin = cv.cfg.MessageFields, cv.cfg.KeepClientFields, cv.cfg.HeartBeatMin
}

func TestSpringConventions(t *testing.T) {
	for _, file := range []string{"chat-dot.toml", "pub-sub.toml", "classic-talk.toml"} {
		cv := loadConvention(t, file)
		t.Run(file+"/one node", func(t *testing.T) {
			n := startNode(t, cv.apply)
			checkConvention(t, cv, n, n, n)
		})
		t.Run(file+"/three nodes", func(t *testing.T) {
			ns := startCluster(t, 3, cv.apply)
			checkConvention(t, cv, ns[0], ns[1], ns[2])
		})
	}
}

// checkConvention: alice on one node, bob posting from another, carol
// resuming on a third; what each sees is in the convention's shape.
func checkConvention(t *testing.T, cv convention, na, nb, nc *node) {
	f, d := cv.fields, cv.dests
	const room = "7" // numeric room ids, as Spring apps' database keys
	alice := dial(t, na, "alice")
	roomSub := alice.subscribe(d.Room.Expand(room))
	readSub := alice.subscribe(d.ReadEvents.Expand(room))
	bob := dial(t, nb, "bob")
	logSub := bob.subscribe(d.Queue.Expand(d.HistoryReply))

	sent := map[string]any{
		f["text"]: "hi from bob", "type": "TALK", "n": 7, "nested": map[string]any{"a": []any{1, "x"}},
		// Forged: chatd sets these itself.
		f["user"]: "mallory", f["room"]: "99", f["id"]: 1, f["created"]: "1999-01-01T00:00:00Z", f["unread"]: -1,
	}
	body, _ := json.Marshal(sent)
	if err := bob.Send(d.Send.Expand(room), "application/json", body, stomp.SendOpt.Receipt); err != nil {
		t.Fatalf("bob's SEND to %s: %v", d.Send.Expand(room), err)
	}
	live := shaped(t, cv, next(t, roomSub).Body, "bob")
	id := live[f["id"]]

	// History, on the convention's reply queue.
	if err := bob.Send(d.History.Expand(room), "application/json", []byte(`{"limit":5}`), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	var page []json.RawMessage
	if err := json.Unmarshal(next(t, logSub).Body, &page); err != nil || len(page) != 1 {
		t.Fatalf("history page: %d messages, %v", len(page), err)
	}
	shaped(t, cv, page[0], "bob")

	// A replay on a third node.
	carol := dial(t, nc, "carol")
	var idNum uint64
	_ = json.Unmarshal(id, &idNum)
	replay, err := carol.Subscribe(d.Room.Expand(room), stomp.AckAuto, stomp.SubscribeOpt.Header("since-id", strconv.FormatUint(idNum-1, 10)))
	if err != nil {
		t.Fatal(err)
	}
	if m := shaped(t, cv, next(t, replay).Body, "bob"); !bytes.Equal(m[f["id"]], id) {
		t.Fatalf("replay gave id %s, want %s", m[f["id"]], id)
	}

	// A read receipt, and the event the room's subscribers get.
	if err := bob.Send(d.Read.Expand(room), "application/json", []byte(`{"lastReadId":`+string(id)+`}`), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	var ev map[string]json.RawMessage
	if err := json.Unmarshal(next(t, readSub).Body, &ev); err != nil {
		t.Fatal(err)
	}
	if string(ev[f["room"]]) != `"7"` || string(ev[f["user"]]) != `"bob"` || !bytes.Equal(ev["lastReadId"], id) {
		t.Fatalf("read event %v, want %s=7, %s=bob, lastReadId=%s", ev, f["room"], f["user"], id)
	}

	// The HTTP API answers in the same shape (dev mode: the bearer is the user).
	var msgs []json.RawMessage
	if code := api(t, nb, "GET", "/api/rooms/"+room+"/messages", "bob", "", &msgs); code != 200 || len(msgs) != 1 {
		t.Fatalf("GET messages: %d, %d messages", code, len(msgs))
	}
	shaped(t, cv, msgs[0], "bob")
}

// shaped checks a message in the convention's shape: chatd's fields
// under their configured names and set by chatd, the client's own
// fields back as they were sent.
func shaped(t *testing.T, cv convention, raw []byte, sender string) map[string]json.RawMessage {
	t.Helper()
	f := cv.fields
	var m map[string]json.RawMessage
	if err := json.Unmarshal(raw, &m); err != nil {
		t.Fatalf("message %s: %v", raw, err)
	}
	want := map[string]string{f["text"]: `"hi from bob"`, f["user"]: strconv.Quote(sender), f["room"]: `"7"`,
		"type": `"TALK"`, "n": `7`, "nested": `{"a":[1,"x"]}`}
	for k, v := range want {
		if string(m[k]) != v {
			t.Errorf("%s: field %q is %s, want %s", raw, k, m[k], v)
		}
	}
	var id uint64
	if err := json.Unmarshal(m[f["id"]], &id); err != nil || id <= 1 {
		t.Errorf("%s: field %q is %s, want chatd's id", raw, f["id"], m[f["id"]])
	}
	if c := string(m[f["created"]]); c == `"1999-01-01T00:00:00Z"` || len(c) < 20 {
		t.Errorf("%s: field %q is %s, want chatd's time", raw, f["created"], c)
	}
	var unread int
	if err := json.Unmarshal(m[f["unread"]], &unread); err != nil || unread < 0 {
		t.Errorf("%s: field %q is %s, want chatd's count", raw, f["unread"], m[f["unread"]])
	}
	for _, chatds := range []string{"message", "roomId", "userId", "createdAt"} {
		if _, ok := m[chatds]; ok && !isConfigured(f, chatds) {
			t.Errorf("%s: chatd's own name %q is there besides the configured one", raw, chatds)
		}
	}
	return m
}

func isConfigured(f map[string]string, name string) bool {
	for _, v := range f {
		if v == name {
			return true
		}
	}
	return false
}

// TestClientFieldsDropped: with keep-client-fields off a message holds
// chatd's fields alone.
func TestClientFieldsDropped(t *testing.T) {
	n := startNode(t, func(c *config.Config) { c.KeepClientFields = false })
	a := dial(t, n, "alice")
	sub := a.subscribe("/topic/chat.nokeep")
	a.post("nokeep", "plain")
	if err := a.Send("/app/chat.nokeep", "application/json", []byte(`{"message":"x","type":"TALK"}`), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}
	next(t, sub)
	var m map[string]json.RawMessage
	if err := json.Unmarshal(next(t, sub).Body, &m); err != nil {
		t.Fatal(err)
	}
	if _, ok := m["type"]; ok || len(m) != 6 {
		t.Fatalf("message %v, want chatd's six fields only", m)
	}
}
