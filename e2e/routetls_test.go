package e2e_test

import (
	"net/http"
	"strconv"
	"strings"
	"testing"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/certtest"
	"github.com/go-stomp/stomp/v3"
)

// TestThreeNodesOverTLSRoutes: three nodes whose routes are mutual TLS
// only, each with a certificate of its own from one CA. Messages cross
// every route; with one node down the other two still store (a majority
// over TLS); the node restarts, rejoins over TLS and serves everything,
// what it missed included.
func TestThreeNodesOverTLSRoutes(t *testing.T) {
	if testing.Short() {
		t.Skip("3-node cluster: skipped with -short")
	}
	t.Parallel()
	ca := certtest.NewCA(t, "routes")
	pairs := []certtest.Pair{ca.Issue("n0"), ca.Issue("n1"), ca.Issue("n2")}
	next := 0
	ns := startCluster(t, 3, func(c *config.Config) {
		p := pairs[next]
		next++
		c.ClusterTLSCert, c.ClusterTLSKey, c.ClusterTLSCA = p.CertFile, p.KeyFile, ca.File
	})
	for i, n := range ns {
		for j, m := range ns {
			if i != j && n.cfg.ClusterTLSCert == m.cfg.ClusterTLSCert {
				t.Fatalf("nodes %d and %d share a certificate", i, j)
			}
		}
	}

	const room = "tlsroutes"
	watchers := make([]*client, 3)
	for i, n := range ns {
		watchers[i] = dial(t, n, "w"+strconv.Itoa(i))
	}
	s0 := watchers[0].subscribe("/topic/chat." + room)
	s2 := watchers[2].subscribe("/topic/chat." + room)
	sender := dial(t, ns[1], "alice")
	sender.post(room, "m1")
	for _, s := range []*stomp.Subscription{s0, s2} {
		if got := nextChat(t, s).Message; got != "m1" {
			t.Fatalf("across the TLS routes: got %q, want m1", got)
		}
	}

	ns[2].stop()
	sender.post(room, "m2") // a majority of two, over TLS
	if got := nextChat(t, s0).Message; got != "m2" {
		t.Fatalf("with a node down: got %q, want m2", got)
	}

	ns[2].start()
	waitReadyz(t, ns[2], http.StatusOK, "ready")
	bob := dial(t, ns[2], "bob")
	got := texts(history(t, bob, bob.subscribe("/user/queue/chat.log"), room, ""))
	if strings.Join(got, " ") != "m1 m2" {
		t.Fatalf("the restarted node serves %q, want m1 m2", got)
	}
}
