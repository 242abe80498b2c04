package e2e_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"net"
	"runtime"
	"strconv"
	"testing"
	"time"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage/kvstore"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// TestSessionsLeaveNoGoroutines opens sessions with every kind of
// subscription, ends them every way a session ends, and checks that the
// node is back to the goroutines it had before.
func TestSessionsLeaveNoGoroutines(t *testing.T) {
	n := startNode(t)
	warm := dial(t, n, "warm")
	warm.subscribe("/topic/chat.leak")
	warm.post("leak", "warm-up")
	_ = warm.Disconnect()
	settle := func() int {
		var g int
		for range 50 {
			runtime.GC()
			g = runtime.NumGoroutine()
			time.Sleep(20 * time.Millisecond)
			if runtime.NumGoroutine() == g {
				break
			}
		}
		return g
	}
	base := settle()
	for i := range 20 {
		c := dial(t, n, "u"+strconv.Itoa(i))
		c.subscribe("/topic/chat.leak")
		c.subscribe("/topic/chat.leak.read")
		c.subscribe("/user/queue/chat.log")
		c.subscribeSince("/topic/chat.leak"+strconv.Itoa(i), 0)
		c.post("leak", "m")
		switch i % 3 {
		case 0:
			_ = c.Disconnect()
		case 1:
			_ = c.WS.CloseNow() // the client vanishes
		case 2: // the server ends it with an ERROR
			_ = c.Send("/topic/chat.leak", "application/json", []byte(`{}`))
		}
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		g := settle()
		if g <= base {
			break
		}
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("%d goroutines, %d before the sessions:\n%s", g, base, buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(100 * time.Millisecond)
	}
	if s := n.connections(); s != 0 {
		t.Fatalf("%d sessions still open", s)
	}
}

// externalNATS is the NATS server with JetStream that the test machine runs.
const externalNATS = "nats://127.0.0.1:4222"

// TestExternalNATS runs chatd against a NATS it does not own (--nats-url):
// the same chat, history and restart behaviour as embedded. That NATS may
// hold anyone's data (a developer's own chatd): the node takes a prefix of
// its own (--nats-prefix), so its stream and buckets are new ones, the
// test deletes those and nothing else, and every stream that was there
// before is there after. With four partitions too: that server may be
// older than 2.10, which keeps no stream metadata, and a restart must still
// find the deployment's partition count.
func TestExternalNATS(t *testing.T) {
	if c, err := net.DialTimeout("tcp", "127.0.0.1:4222", time.Second); err != nil {
		t.Skipf("no NATS server at %s: %v", externalNATS, err)
	} else {
		_ = c.Close()
	}
	for _, parts := range []int{1, 4} {
		t.Run("partitions="+strconv.Itoa(parts), func(t *testing.T) { testExternalNATS(t, parts) })
	}
}

func testExternalNATS(t *testing.T, parts int) {
	nc, err := nats.Connect(externalNATS)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close) // after the cleanup below, which uses it
	js, _ := jetstream.New(nc)
	var r [6]byte
	_, _ = rand.Read(r[:])
	prefix := "test" + hex.EncodeToString(r[:])
	names, err := natsbus.NewNames(prefix)
	if err == nil {
		names, err = names.WithPartitions(parts)
	}
	if err != nil {
		t.Fatal(err)
	}
	mine := names.MessagesStreams()
	for _, b := range []string{kvstore.RoomsBucket, kvstore.MembersBucket, kvstore.UserRoomsBucket} {
		mine = append(mine, "KV_"+names.Bucket(b))
	}
	for p := range parts {
		mine = append(mine, "KV_"+names.Bucket(names.PartitionBucket(kvstore.ReadsBucket, p)))
	}
	streams := func() map[string]bool {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		all := map[string]bool{}
		l := js.StreamNames(ctx)
		for s := range l.Name() {
			all[s] = true
		}
		if err := l.Err(); err != nil {
			t.Fatalf("list streams: %v", err)
		}
		return all
	}
	before := streams()
	for _, s := range mine {
		if before[s] {
			t.Fatalf("stream %s exists before the test made it: not the test's to delete", s)
		}
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		for _, s := range mine {
			if err := js.DeleteStream(ctx, s); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
				t.Errorf("delete the test's stream %s: %v", s, err)
			}
		}
		after := streams()
		for s := range before {
			if !after[s] {
				t.Errorf("stream %s, there before the test, is gone", s)
			}
		}
	})

	n := startNode(t, func(c *config.Config) {
		c.NATSURL, c.NATSListen, c.NATSPrefix, c.Partitions = externalNATS, "", prefix, parts
	})
	alice, bob := dial(t, n, "alice"), dial(t, n, "bob")
	sub := bob.subscribe("/topic/chat.ext")
	alice.post("ext", "over external NATS")
	if m := nextChat(t, sub); m.Message != "over external NATS" || m.UnreadCount != 1 {
		t.Fatalf("got %+v", m)
	}
	// The stream lives in the external server, visible to any NATS client.
	info, err := js.Stream(context.Background(), names.MessagesStream(names.Partition("ext")))
	if err != nil {
		t.Fatalf("stream not in the external NATS: %v", err)
	}
	if info.CachedInfo().State.Msgs != 1 {
		t.Fatalf("stream holds %d messages", info.CachedInfo().State.Msgs)
	}
	n.restart()
	carol := dial(t, n, "carol")
	h := history(t, carol, carol.subscribe("/user/queue/chat.log"), "ext", "")
	if len(h) != 1 || h[0].Message != "over external NATS" {
		t.Fatalf("history after restart %+v", h)
	}
}
