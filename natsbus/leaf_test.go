package natsbus

import (
	"context"
	"io"
	"log/slog"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/certtest"
	"github.com/chatd/chatd/internal/testkit/natstest"
	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/nats-io/nats-server/v2/server"
)

// TestLeafStartFailureSaysWhy: a leaf node whose hub refuses it (a
// certificate from another CA) stops at start with the server's own
// reason, not only a timeout. The waits leave a loaded machine time for
// whole handshakes: one cut by the hub's TLS timeout says no more than
// "use of closed network connection".
func TestLeafStartFailureSaysWhy(t *testing.T) {
	hubCA, otherCA := certtest.NewCA(t, "hub"), certtest.NewCA(t, "other")
	pair := hubCA.Issue("hub")
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: pair.CertFile, KeyFile: pair.KeyFile})
	if err != nil {
		t.Fatal(err)
	}
	leafPort := port.Free(t)
	natstest.Run(t, &server.Options{Host: "127.0.0.1", Port: -1, NoSigs: true, JetStream: true,
		JetStreamDomain: "hub", StoreDir: t.TempDir(),
		LeafNode: server.LeafNodeOpts{Host: "127.0.0.1", Port: leafPort, TLSConfig: tc, TLSTimeout: 5}})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	_, err = Start(ctx, Options{LeafRemotes: []string{"tls://127.0.0.1:" + strconv.Itoa(leafPort)}, LeafCA: otherCA.File,
		JSDomain: "hub", leafWait: 6 * time.Second, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err == nil || !strings.Contains(err.Error(), "leaf node: no connection") || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("start with a hub of another CA: %v, want the TLS reason", err)
	}
}
