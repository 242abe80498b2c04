package e2e_test

import (
	"context"
	"encoding/json"
	"fmt"
	"reflect"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/internal/testkit/stomptest"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/go-stomp/stomp/v3"
)

// startCluster starts n chatd nodes in this process, each embedding a NATS
// server that routes to the others, with clustered JetStream (R3 for 3).
func startCluster(t testing.TB, size int, mutate ...func(*config.Config)) []*node {
	t.Helper()
	var routes []string
	ports := make([]int, size)
	for i := range ports {
		ports[i] = port.Free(t)
		routes = append(routes, "nats-route://127.0.0.1:"+strconv.Itoa(ports[i]))
	}
	nodes := make([]*node, size)
	for i := range nodes {
		cfg := testConfig(t)
		cfg.ServerName = "n" + strconv.Itoa(i)
		cfg.ClusterListen = "127.0.0.1:" + strconv.Itoa(ports[i])
		cfg.Routes = routes
		for _, m := range mutate {
			m(&cfg)
		}
		nodes[i] = &node{t: t, cfg: cfg}
	}
	// A node waits for its peers before JetStream can place R3 streams.
	errs := make(chan error, size)
	for _, n := range nodes {
		go func() { errs <- n.tryStart() }()
	}
	for range nodes {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	for _, n := range nodes {
		t.Cleanup(n.stop)
		t.Cleanup(func() {
			if t.Failed() {
				n.logs.dump(t, n.cfg.ServerName)
			}
		})
	}
	return nodes
}

func TestCluster(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster: skipped with -short")
	}
	nodes := startCluster(t, 3)
	n0, n1, n2 := nodes[0], nodes[1], nodes[2]

	t.Run("replicated", func(t *testing.T) {
		if n0.cfg.Replicas != 0 {
			t.Fatal("test expects automatic replicas")
		}
		// The stream must survive a node: it has 3 replicas.
		c := dial(t, n0, "probe")
		c.post("probe", "x")
	})

	t.Run("cross-node chat", func(t *testing.T) {
		alice, bob, carol := dial(t, n0, "alice"), dial(t, n1, "bob"), dial(t, n2, "carol")
		subs := []*stomp.Subscription{
			alice.subscribe("/topic/chat.x"), bob.subscribe("/topic/chat.x"), carol.subscribe("/topic/chat.x"),
		}
		// Joins travel between nodes' membership mirrors in milliseconds;
		// the counts below assume node 0 has seen all three.
		wait.Until(t, "node 0 sees the members", func() error {
			m, err := n0.members(context.Background(), "x")
			if err != nil || len(m) != 3 {
				return fmt.Errorf("members %v %v", m, err)
			}
			return nil
		})
		alice.post("x", "from n0")
		bob.post("x", "from n1")
		carol.post("x", "from n2")
		var first []chat.Message
		for i, sub := range subs {
			var got []chat.Message
			for range 3 {
				got = append(got, nextChat(t, sub))
			}
			if i == 0 {
				first = got
			} else if !reflect.DeepEqual(got, first) {
				t.Fatalf("node %d saw %+v, node 0 saw %+v", i, got, first)
			}
		}
		if first[0].Message != "from n0" || first[1].Message != "from n1" || first[2].Message != "from n2" {
			t.Fatalf("order %v", texts(first))
		}
		if first[0].UnreadCount != 2 {
			t.Fatalf("unreadCount %d, want 2", first[0].UnreadCount)
		}
	})

	t.Run("user queue on every node", func(t *testing.T) {
		a0, a2, a1 := dial(t, n0, "alice"), dial(t, n2, "alice"), dial(t, n1, "alice")
		b1 := dial(t, n1, "bob")
		q0, q2 := a0.subscribe("/user/queue/chat.log"), a2.subscribe("/user/queue/chat.log")
		qb := b1.subscribe("/user/queue/chat.log")
		if err := a1.Send("/app/chat.x.log", "application/json", nil, stomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
		for _, q := range []*stomp.Subscription{q0, q2} {
			if m := next(t, q); len(m.Body) < 10 {
				t.Fatalf("log reply %q", m.Body)
			}
		}
		quiet(t, qb, 300*time.Millisecond)
	})

	t.Run("same history and unread counts from every node", func(t *testing.T) {
		bob := dial(t, n1, "bob")
		logSub := bob.subscribe("/user/queue/chat.log")
		h := history(t, bob, logSub, "x", "")
		if err := bob.Send("/app/chat.x.read", "application/json",
			fmt.Appendf(nil, `{"lastReadId":%d}`, h[len(h)-1].ID), stomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
		want := history(t, bob, logSub, "x", "")
		for i, n := range nodes {
			// The same member asks every node (a new user would join the
			// room by asking and change the counts).
			c := dial(t, n, "bob")
			cl := c.subscribe("/user/queue/chat.log")
			wait.Until(t, "history on node "+strconv.Itoa(i), func() error {
				got := history(t, c, cl, "x", "")
				if !reflect.DeepEqual(got, want) {
					return fmt.Errorf("got %+v, want %+v", got, want)
				}
				return nil
			})
		}
	})

	t.Run("interest-based fan-out", func(t *testing.T) {
		// A raw client: go-stomp's Unsubscribe can miss a quick RECEIPT
		// (its wait is registered on another goroutine) and then waits 30 s.
		sub0 := dialRaw(t, n0)
		sub0.ConnectAs("watcher", "1.2")
		sub0.Subscribe("s", "/topic/chat.solo")
		before1, before2 := n1.liveReceived(), n2.liveReceived()
		before0 := n0.liveReceived()
		pub := dial(t, n1, "pub") // publishing from n1 does not make n1 take the room's traffic
		const count = 50
		for i := range count {
			pub.post("solo", "m"+strconv.Itoa(i))
		}
		for range count {
			sub0.Expect("MESSAGE")
		}
		if got := n0.liveReceived() - before0; got < count {
			t.Fatalf("node 0 received %d room messages, want >= %d", got, count)
		}
		if d1, d2 := n1.liveReceived()-before1, n2.liveReceived()-before2; d1 != 0 || d2 != 0 {
			t.Fatalf("nodes without subscribers received %d and %d room messages", d1, d2)
		}
		// The last local subscriber leaves: node 0 stops taking the room.
		// The RECEIPT comes once the subscription is gone.
		sub0.Send(stomptest.Render("UNSUBSCRIBE", "", "id:s", "receipt:u"))
		sub0.ExpectReceipt("u")
		after0 := n0.liveReceived()
		for i := range 10 {
			pub.post("solo", "later"+strconv.Itoa(i))
		}
		// A subscriber on node 2 sees them: they did flow, just not to node 0.
		late := dial(t, n2, "late").subscribeSince("/topic/chat.solo", 0)
		for range count + 10 {
			nextChat(t, late)
		}
		if d := n0.liveReceived() - after0; d != 0 {
			t.Fatalf("node 0 received %d room messages after its last subscriber left", d)
		}
	})

	t.Run("drain and node loss", func(t *testing.T) {
		watcher := dial(t, n0, "ref")
		ref := watcher.subscribe("/topic/chat.drain")
		bob := dial(t, n1, "bob")
		bSub := bob.subscribe("/topic/chat.drain")
		alice := dial(t, n0, "alice")
		alice.post("drain", "start")
		last := nextChat(t, bSub).ID

		const total = 200
		var wg sync.WaitGroup
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Every SEND gets its RECEIPT: one in flight while the
			// drained node hands over the stream's leadership is sent
			// again by chatd, not failed.
			for i := range total {
				if err := alice.tryPost("drain", "d"+strconv.Itoa(i)); err != nil {
					t.Errorf("while node 1 drains: %v", err)
					return
				}
			}
		}()
		// Bob reads a few, then his node is drained (SIGTERM's path).
		for range 20 {
			last = nextChat(t, bSub).ID
		}
		n1.stop()
		// His client is told to go; he resumes on another node.
		for m := range bSub.C {
			if m.Err == nil {
				last = max(last, mustID(t, m))
			}
		}
		bob2 := dial(t, n2, "bob")
		resumed := bob2.subscribeSince("/topic/chat.drain", last)
		wg.Wait() // JetStream kept accepting with 2 of 3 nodes

		var want []uint64
		for range total + 1 {
			if m := nextChat(t, ref); m.ID > last {
				want = append(want, m.ID)
			}
		}
		for i, w := range want {
			if got := nextChat(t, resumed).ID; got != w {
				t.Fatalf("resumed message %d: id %d, want %d", i, got, w)
			}
		}
		quiet(t, resumed, 300*time.Millisecond)

		// The drained node comes back and serves the same history.
		n1.start()
		refHist := history(t, watcher, watcher.subscribe("/user/queue/chat.log"), "drain", `{"limit":100}`)
		back := dial(t, n1, "ref")
		bl := back.subscribe("/user/queue/chat.log")
		wait.Until(t, "history on the restarted node", func() error {
			got := history(t, back, bl, "drain", `{"limit":100}`)
			if !reflect.DeepEqual(texts(got), texts(refHist)) || got[0].ID != refHist[0].ID {
				return fmt.Errorf("got %d messages from %d, want %d from %d", len(got), got[0].ID, len(refHist), refHist[0].ID)
			}
			return nil
		})
	})
}

func mustID(t *testing.T, m *stomp.Message) uint64 {
	t.Helper()
	var cm chat.Message
	if err := json.Unmarshal(m.Body, &cm); err != nil {
		t.Fatal(err)
	}
	return cm.ID
}
