package natsbus

import (
	"context"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/storage"
)

func TestNewNames(t *testing.T) {
	for _, bad := range []string{"", "Chat", "1chat", "-chat", "a.b", "a*", "a>", "a b", strings.Repeat("a", 33)} {
		if _, err := NewNames(bad); err == nil {
			t.Errorf("prefix %q accepted", bad)
		}
	}
	n, err := NewNames("team-a_2")
	if err != nil {
		t.Fatal(err)
	}
	for got, want := range map[string]string{
		n.MessagesStream(0):       "TEAM-A_2_MESSAGES",
		n.Bucket("MEMBERS"):       "TEAM-A_2_MEMBERS",
		n.Room("lobby"):           "team-a_2.msg.lobby",
		n.RoomLive("lobby"):       "team-a_2.live.lobby",
		n.Read("lobby"):           "team-a_2.read.lobby",
		n.User("a b", "chat.log"): "team-a_2.user.=YSBi.chat.log",
	} {
		if got != want {
			t.Errorf("%s, want %s", got, want)
		}
	}
	if room, ok := n.roomFromSubject("team-a_2.live.lobby"); !ok || room != "lobby" {
		t.Errorf("room of team-a_2.live.lobby: %q %v", room, ok)
	}
	if _, ok := n.roomFromSubject("chat.live.lobby"); ok {
		t.Error("a room of another prefix's subject")
	}
	d := DefaultNames()
	if d.MessagesStream(0) != "CHAT_MESSAGES" || d.Room("lobby") != "chat.msg.lobby" || d.Bucket("ROOMS") != "CHAT_ROOMS" {
		t.Errorf("the default names changed: %s %s %s", d.MessagesStream(0), d.Room("lobby"), d.Bucket("ROOMS"))
	}
}

// TestPrefixesShareOneNATS: two deployments with different prefixes on
// one NATS store, watch and publish apart: neither sees the other's
// messages, buckets, user queues or read events.
func TestPrefixesShareOneNATS(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	addr := "127.0.0.1:" + strconv.Itoa(port.Free(t))
	a, err := Start(ctx, Options{DataDir: t.TempDir(), ServerName: "prefixtest", ClientListen: addr, Logger: testlog.New()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = a.Close(context.Background()) })
	b, err := Start(ctx, Options{URL: "nats://" + addr, Prefix: "other", Logger: testlog.New()})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = b.Close(context.Background()) })

	type seen struct {
		rooms, users, reads chan string
	}
	watch := func(bus *Bus) seen {
		s := seen{make(chan string, 10), make(chan string, 10), make(chan string, 10)}
		stops := []func(){}
		stop, err := bus.WatchRoom("lobby", func(m storage.Message, _ uint64, _ int) { s.rooms <- string(m.Data) })
		if err == nil {
			stops = append(stops, stop)
			stop, err = bus.WatchUser("alice", "inbox", func(body []byte, _ string) { s.users <- string(body) })
		}
		if err == nil {
			stops = append(stops, stop)
			stop, err = bus.WatchReads("lobby", func(body []byte, _ string) { s.reads <- string(body) })
		}
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			for _, s := range append(stops, stop) {
				s()
			}
		})
		return s
	}
	seenA, seenB := watch(a), watch(b)
	for _, bus := range []*Bus{a, b} {
		l := openTestLog(t, bus, DurabilityReplicated)
		f, err := l.publishAsync("lobby", []byte(bus.names.Prefix()), "")
		if err != nil {
			t.Fatal(err)
		}
		select {
		case <-f.Ok():
		case err := <-f.Err():
			t.Fatal(err)
		case <-ctx.Done():
			t.Fatal("no acknowledgement")
		}
		if msgs, err := l.After(ctx, "lobby", 0, 10); err != nil || len(msgs) != 1 || string(msgs[0].Data) != bus.names.Prefix() {
			t.Fatalf("%s's log holds %v (%v), want its one message", bus.names.Prefix(), msgs, err)
		}
		if err := bus.PublishUser("alice", "inbox", "text/plain", []byte(bus.names.Prefix())); err != nil {
			t.Fatal(err)
		}
		if err := bus.PublishReads("lobby", "text/plain", []byte(bus.names.Prefix())); err != nil {
			t.Fatal(err)
		}
		k, err := bus.OpenBucket(ctx, "ROOMS", "", 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := k.Create(ctx, bus.names.Prefix(), []byte("x")); err != nil {
			t.Fatal(err)
		}
		if want := strings.ToUpper(bus.names.Prefix()) + "_ROOMS"; k.Name() != want {
			t.Errorf("bucket %s, want %s", k.Name(), want)
		}
		if keys, err := k.kv.Keys(ctx); err != nil || !slices.Equal(keys, []string{bus.names.Prefix()}) {
			t.Errorf("%s's bucket holds %v (%v)", k.Name(), keys, err)
		}
	}
	if err := a.nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for _, w := range []struct {
		prefix string
		s      seen
	}{{"chat", seenA}, {"other", seenB}} {
		for what, ch := range map[string]chan string{"room": w.s.rooms, "user queue": w.s.users, "read events": w.s.reads} {
			select {
			case got := <-ch:
				if got != w.prefix {
					t.Errorf("%s's %s watch got %q", w.prefix, what, got)
				}
			case <-time.After(5 * time.Second):
				t.Fatalf("%s's %s watch got nothing", w.prefix, what)
			}
			select {
			case got := <-ch:
				t.Errorf("%s's %s watch got %q too", w.prefix, what, got)
			case <-time.After(100 * time.Millisecond):
			}
		}
	}
}
