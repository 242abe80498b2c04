package e2e_test

import (
	"context"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/certtest"
	"github.com/chatd/chatd/internal/testkit/natstest"
	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/natsbus"
	"github.com/go-stomp/stomp/v3"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// hubOptions configure a NATS server as a team's existing NATS would be:
// JetStream in domain "hub", and a leaf node port.
func hubOptions(t *testing.T, mutate ...func(*server.Options)) *server.Options {
	t.Helper()
	o := &server.Options{ServerName: "hub", Host: "127.0.0.1", Port: -1, NoSigs: true,
		JetStream: true, JetStreamDomain: "hub", StoreDir: t.TempDir(),
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: port.Free(t)}}
	for _, m := range mutate {
		m(o)
	}
	return o
}

// asLeaf makes a node a leaf node of the hub at leafPort.
func asLeaf(name string, leafPort int) func(*config.Config) {
	return func(c *config.Config) {
		c.ServerName, c.NATSListen = name, ""
		c.LeafRemotes = "nats-leaf://127.0.0.1:" + strconv.Itoa(leafPort)
		c.NATSJSDomain = "hub"
	}
}

// TestLeafNodes: three chatd nodes, each a leaf node of one NATS hub that
// keeps their stream and buckets, serve one deployment. A message sent on
// one reaches another's subscribers; its RECEIPT means the hub stored it;
// history and since-id replay read it back on a third. The leaf
// connection to a node carries one copy of a room's message however many
// of its clients subscribe, and none to a node where nobody does.
func TestLeafNodes(t *testing.T) {
	t.Parallel()
	o := hubOptions(t)
	hub, leafPort := natstest.Run(t, o), o.LeafNode.Port
	a := startNode(t, asLeaf("a", leafPort))
	b := startNode(t, asLeaf("b", leafPort))
	c := startNode(t, asLeaf("c", leafPort))

	alice := dial(t, a, "alice")
	var subs []*stomp.Subscription
	for i := range 5 {
		subs = append(subs, dial(t, b, "bob"+strconv.Itoa(i)).subscribe("/topic/chat.leaf"))
	}
	carol := dial(t, c, "carol")
	carol.subscribe("/topic/chat.elsewhere")
	alice.post("leaf", "warm-up") // alice joins; the nodes learn it
	for _, s := range subs {
		if m := nextChat(t, s); m.Message != "warm-up" {
			t.Fatalf("got %+v", m)
		}
	}

	leafOut := func() map[string]int64 {
		z, err := hub.Leafz(nil)
		if err != nil {
			t.Fatal(err)
		}
		out := map[string]int64{}
		for _, l := range z.Leafs {
			out[l.Name] += l.OutMsgs
		}
		return out
	}
	before := leafOut()
	const n = 40
	for i := range n {
		alice.post("leaf", strconv.Itoa(i))
	}
	var ids []uint64
	for si, s := range subs {
		for i := range n {
			m := nextChat(t, s)
			if m.Message != strconv.Itoa(i) {
				t.Fatalf("bob%d's message %d is %q", si, i, m.Message)
			}
			if si == 0 {
				ids = append(ids, m.ID)
			}
		}
	}
	after := leafOut()
	toB, toC := after["b"]-before["b"], after["c"]-before["c"]
	t.Logf("hub to leaf b (5 subscribers of the room): %d messages; to leaf c (none): %d; for %d room messages", toB, toC, n)
	if toB < n || toB >= 2*n {
		t.Errorf("the hub sent node b %d messages for %d room messages to 5 subscribers: want one copy each", toB, n)
	}
	if toC >= n/2 {
		t.Errorf("the hub sent node c, where nobody subscribes to the room, %d messages for %d room messages", toC, n)
	}

	// Stored in the hub's JetStream, not on any node.
	hc, err := nats.Connect(hub.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	js, err := jetstream.New(hc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	names, err := natsbus.NewNames(a.cfg.NATSPrefix)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, names.MessagesStream(0))
	if err != nil {
		t.Fatalf("the message stream is not in the hub: %v", err)
	}
	if got := st.CachedInfo().State.Msgs; got != n+1 {
		t.Fatalf("the hub's stream holds %d messages, want %d", got, n+1)
	}

	h := history(t, carol, carol.subscribe("/user/queue/chat.log"), "leaf", "")
	if len(h) == 0 || h[len(h)-1].Message != strconv.Itoa(n-1) || h[len(h)-1].ID != ids[n-1] {
		t.Fatalf("history on node c: %+v", h)
	}
	resumed := dial(t, c, "dave").subscribeSince("/topic/chat.leaf", ids[n/2-1])
	for i := n / 2; i < n; i++ {
		if m := nextChat(t, resumed); m.ID != ids[i] || m.Message != strconv.Itoa(i) {
			t.Fatalf("replay on node c: got %d %q, want %d %q", m.ID, m.Message, ids[i], strconv.Itoa(i))
		}
	}
}

// TestLeafNodeTLSAndPassword: a leaf connection over TLS, checked against
// --leaf-ca, with the user and password the hub asks of leaf nodes.
func TestLeafNodeTLSAndPassword(t *testing.T) {
	t.Parallel()
	ca := certtest.NewCA(t, "hub")
	pair := ca.Issue("hub")
	o := hubOptions(t, func(o *server.Options) {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pair.CertFile, KeyFile: pair.KeyFile})
		if err != nil {
			t.Fatal(err)
		}
		o.LeafNode.TLSConfig, o.LeafNode.TLSTimeout = tc, 2
		o.LeafNode.Username, o.LeafNode.Password = "chatd", "s3cret"
	})
	natstest.Run(t, o)
	leafPort := o.LeafNode.Port
	secure := func(c *config.Config) {
		c.LeafRemotes = "tls://chatd:s3cret@127.0.0.1:" + strconv.Itoa(leafPort)
		c.LeafCA = ca.File
	}
	a := startNode(t, asLeaf("a", leafPort), secure)
	b := startNode(t, asLeaf("b", leafPort), secure)
	sub := dial(t, b, "bob").subscribe("/topic/chat.tls")
	dial(t, a, "alice").post("tls", "over TLS")
	if m := nextChat(t, sub); m.Message != "over TLS" {
		t.Fatalf("got %+v", m)
	}
}

// TestLeafNodeLosesTheHub: while the hub is away, a node's /readyz is 503
// and a SEND gets ERROR unavailable, while its clients stay connected;
// once the hub is back, the resent SEND is stored and reaches a
// subscriber on another node that stayed subscribed throughout.
func TestLeafNodeLosesTheHub(t *testing.T) {
	t.Parallel()
	o := hubOptions(t)
	hub := natstest.Run(t, o)
	a := startNode(t, asLeaf("a", o.LeafNode.Port))
	b := startNode(t, asLeaf("b", o.LeafNode.Port))
	sub := dial(t, b, "bob").subscribe("/topic/chat.away")
	send := func(i int) string { return resendable("away", i) }
	alice := dialRaw(t, a)
	alice.ConnectAs("alice", "1.2")
	alice.Send(send(0))
	if f := alice.Frame(); f.Command != "RECEIPT" {
		t.Fatalf("with the hub: %s %v", f.Command, f.Header)
	}
	if m := nextChat(t, sub); m.Message != "m0" {
		t.Fatalf("got %+v", m)
	}

	hub.Shutdown()
	hub.WaitForShutdown()
	waitReadyz(t, a, http.StatusServiceUnavailable, "not ready")
	alice.Send(send(1))
	f, err := alice.Read(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if f.Command != "ERROR" || !strings.HasPrefix(f.Header.Get("message"), "unavailable") || f.Header.Get("receipt-id") != "r1" {
		t.Fatalf("a SEND without the hub: %s %v, want ERROR unavailable for r1", f.Command, f.Header)
	}

	natstest.Run(t, o) // the same store and leaf port
	waitReadyz(t, a, http.StatusOK, "ready")
	again := dialRaw(t, a)
	again.ConnectAs("alice", "1.2")
	again.Send(send(1))
	if f := again.Frame(); f.Command != "RECEIPT" {
		t.Fatalf("the resend with the hub back: %s %v", f.Command, f.Header)
	}
	if m := nextChat(t, sub); m.Message != "m1" {
		t.Fatalf("after the hub came back, bob got %+v", m)
	}
}

// TestNATSURLThroughALeafNode: a node that connects with --nats-url to a
// team's regional leaf node (a nats-server without JetStream of its own)
// keeps its stream in the hub's JetStream through --nats-js-domain.
func TestNATSURLThroughALeafNode(t *testing.T) {
	t.Parallel()
	o := hubOptions(t)
	natstest.Run(t, o)
	remote, err := url.Parse("nats-leaf://127.0.0.1:" + strconv.Itoa(o.LeafNode.Port))
	if err != nil {
		t.Fatal(err)
	}
	regional := natstest.Run(t, &server.Options{ServerName: "regional", Host: "127.0.0.1", Port: -1, NoSigs: true,
		LeafNode: server.LeafNodeOpts{Remotes: []*server.RemoteLeafOpts{{URLs: []*url.URL{remote}}}}})
	for deadline := time.Now().Add(10 * time.Second); regional.NumLeafNodes() == 0; time.Sleep(50 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the regional leaf node did not connect to the hub")
		}
	}
	n := startNode(t, func(c *config.Config) { c.NATSURL, c.NATSListen, c.NATSJSDomain = regional.ClientURL(), "", "hub" })
	sub := dial(t, n, "bob").subscribe("/topic/chat.regional")
	dial(t, n, "alice").post("regional", "through the region")
	if m := nextChat(t, sub); m.Message != "through the region" {
		t.Fatalf("got %+v", m)
	}
}

// TestLeafNodePartitions: chatd nodes as leaf nodes keep a partitioned
// deployment's streams in the hub. A backend that publishes
// chat.msg.<room> reaches the room's subscribers on a node: through a
// node's own NATS port, whose server maps it to the room's partition, and
// through the hub once its account maps it as docs/operations.md says.
func TestLeafNodePartitions(t *testing.T) {
	t.Parallel()
	const parts = 2
	o := hubOptions(t)
	hub := natstest.Run(t, o)
	names, err := natsbus.NewNames(natsbus.DefaultPrefix)
	if err == nil {
		names, err = names.WithPartitions(parts)
	}
	if err != nil {
		t.Fatal(err)
	}
	leafClient := "127.0.0.1:" + strconv.Itoa(port.Free(t))
	a := startNode(t, asLeaf("a", o.LeafNode.Port), func(c *config.Config) { c.Partitions, c.NATSListen = parts, leafClient })
	b := startNode(t, asLeaf("b", o.LeafNode.Port), func(c *config.Config) { c.Partitions = parts })

	hc, err := nats.Connect(hub.ClientURL())
	if err != nil {
		t.Fatal(err)
	}
	defer hc.Close()
	hjs, err := jetstream.New(hc)
	if err != nil {
		t.Fatal(err)
	}
	lc, err := nats.Connect("nats://" + leafClient)
	if err != nil {
		t.Fatal(err)
	}
	defer lc.Close()
	ljs, err := jetstream.NewWithDomain(lc, "hub")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	bob, alice := dial(t, b, "bob"), dial(t, a, "alice")
	rooms := []string{"east", "down", "west", "right"}
	subs := map[string]*stomp.Subscription{}
	used := map[int]bool{}
	for _, room := range rooms {
		used[names.Partition(room)] = true
		subs[room] = bob.subscribe("/topic/chat." + room)
		alice.post(room, "from a node")
		if m := nextChat(t, subs[room]); m.Message != "from a node" || m.RoomID != room {
			t.Fatalf("room %s: bob got %+v", room, m)
		}
	}
	if len(used) != parts {
		t.Fatalf("the rooms fell in partitions %v: want both", used)
	}
	publish := func(via string, js jetstream.JetStream) {
		t.Helper()
		for _, room := range rooms {
			ack, err := js.Publish(ctx, "chat.msg."+room, []byte(`{"userId":"svc","message":"via `+via+`"}`))
			if err != nil {
				t.Fatalf("backend publish to %s via %s: %v", room, via, err)
			}
			if want := names.MessagesStream(names.Partition(room)); ack.Stream != want {
				t.Fatalf("room %s: published via %s, stored in %s; chatd reads %s", room, via, ack.Stream, want)
			}
			if m := nextChat(t, subs[room]); m.Message != "via "+via || m.UserID != "svc" {
				t.Fatalf("room %s: after the backend's publish via %s bob got %+v", room, via, m)
			}
		}
	}
	publish("node a's NATS port", ljs)
	if err := hub.GlobalAccount().AddMapping("chat.msg.*", "chat.msg.{{partition(2,1)}}.{{wildcard(1)}}"); err != nil {
		t.Fatal(err)
	}
	publish("the hub", hjs)
}
