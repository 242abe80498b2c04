package e2e_test

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage/kvstore"
	"github.com/jackc/pgx/v5"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What a test sees of a node from outside, as a backend service or an
// operator would: the KV buckets or the PostgreSQL tables it shares with
// chatd (docs/protocol.md), and /metrics.

// natsURL is where a client reaches the node's NATS.
func (n *node) natsURL() string {
	if n.cfg.NATSURL != "" {
		return n.cfg.NATSURL
	}
	return "nats://" + n.cfg.NATSListen
}

// jetStream connects t to the node's NATS, as a backend service would.
func (n *node) jetStream(t testing.TB) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(n.natsURL())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// names are the node's NATS subjects, stream and buckets.
func (n *node) names() natsbus.Names {
	names, err := natsbus.NewNames(n.cfg.NATSPrefix)
	if err == nil {
		names, err = names.WithPartitions(n.cfg.Partitions)
	}
	if err != nil {
		n.t.Fatal(err)
	}
	return names
}

// kv opens one of chatd's KV buckets (kvstore.MembersBucket, ...) over a
// NATS connection of the test's.
func (n *node) kv(ctx context.Context, bucket string) (jetstream.KeyValue, error) {
	bucket = n.names().Bucket(bucket)
	kv, err := n.jetStream(n.t).KeyValue(ctx, bucket)
	if err != nil {
		return nil, fmt.Errorf("bucket %s: %w", bucket, err)
	}
	return kv, nil
}

// sql runs fn on a connection to the node's PostgreSQL database.
func (n *node) sql(ctx context.Context, fn func(*pgx.Conn) error) error {
	c, err := pgx.Connect(ctx, n.cfg.PostgresURL)
	if err != nil {
		return err
	}
	defer func() { _ = c.Close(context.Background()) }()
	return fn(c)
}

// addMember makes user a plain member of room straight in storage, as a
// backend writing to the CHAT_MEMBERS bucket (or the room_members table)
// would, bypassing the rooms API's checks.
func (n *node) addMember(ctx context.Context, room, user string) error {
	if n.cfg.PostgresURL != "" {
		return n.sql(ctx, func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, `INSERT INTO room_members (room_id, user_id, role) VALUES ($1, $2, 'member')
				ON CONFLICT DO NOTHING`, room, user)
			return err
		})
	}
	kv, err := n.kv(ctx, kvstore.MembersBucket)
	if err != nil {
		return err
	}
	_, err = kv.Put(ctx, natsbus.RoomUserKey(room, user), []byte(`{"role":"member"}`))
	return err
}

// removeMember ends user's membership of room straight in storage.
func (n *node) removeMember(ctx context.Context, room, user string) error {
	if n.cfg.PostgresURL != "" {
		return n.sql(ctx, func(c *pgx.Conn) error {
			_, err := c.Exec(ctx, "DELETE FROM room_members WHERE room_id = $1 AND user_id = $2", room, user)
			return err
		})
	}
	kv, err := n.kv(ctx, kvstore.MembersBucket)
	if err != nil {
		return err
	}
	return kv.Delete(ctx, natsbus.RoomUserKey(room, user))
}

// members lists a room's members as storage holds them, sorted.
func (n *node) members(ctx context.Context, room string) ([]string, error) {
	var users []string
	if n.cfg.PostgresURL != "" {
		err := n.sql(ctx, func(c *pgx.Conn) error {
			rows, err := c.Query(ctx, "SELECT user_id FROM room_members WHERE room_id = $1 ORDER BY user_id", room)
			if err != nil {
				return err
			}
			users, err = pgx.CollectRows(rows, pgx.RowTo[string])
			return err
		})
		return users, err
	}
	kv, err := n.kv(ctx, kvstore.MembersBucket)
	if err != nil {
		return nil, err
	}
	keys, err := kv.ListKeysFiltered(ctx, room+".>")
	if err != nil {
		return nil, err
	}
	for k := range keys.Keys() {
		if _, u, ok := natsbus.SplitRoomUserKey(k); ok {
			users = append(users, u)
		}
	}
	slices.Sort(users)
	return users, nil
}

// metric reads one sample of the node's /metrics: the first series of
// that name, whatever its labels.
func (n *node) metric(name string) (float64, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.app.Addr()+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	for line := range strings.SplitSeq(string(body), "\n") {
		if rest, ok := strings.CutPrefix(line, name); ok && (strings.HasPrefix(rest, " ") || strings.HasPrefix(rest, "{")) {
			return strconv.ParseFloat(rest[strings.LastIndexByte(rest, ' ')+1:], 64)
		}
	}
	return 0, errors.New("no metric " + name)
}

// liveReceived is how many room messages NATS brought the node for its
// own subscribers.
func (n *node) liveReceived() uint64 {
	n.t.Helper()
	v, err := n.metric("chatd_live_messages_received_total")
	if err != nil {
		n.t.Fatal(err)
	}
	return uint64(v)
}

// connections is how many WebSocket connections the node has open.
func (n *node) connections() int {
	n.t.Helper()
	v, err := n.metric("chatd_websocket_connections")
	if err != nil {
		n.t.Fatal(err)
	}
	return int(v)
}
