package natsbus

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/url"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/certtest"
	"github.com/chatd/chatd/internal/testkit/natstest"
	"github.com/chatd/chatd/internal/testkit/port"
	"github.com/chatd/chatd/internal/testkit/wait"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go/jetstream"
)

// TestRouteSecurity: two nodes whose routes need mutual TLS or a password
// form a cluster; a server routing to them without the CA-signed
// certificate or the password is refused, one with them is let in (so the
// refusals are the security's doing), and the cluster carries on storing.
func TestRouteSecurity(t *testing.T) {
	ca := certtest.NewCA(t, "cluster")
	other := certtest.NewCA(t, "intruder")
	tlsOf := func(p certtest.Pair, trust *certtest.CA) *tls.Config {
		tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: p.CertFile, KeyFile: p.KeyFile, CaFile: trust.File, Verify: true})
		if err != nil {
			t.Fatal(err)
		}
		tc.RootCAs = tc.ClientCAs
		return tc
	}
	type intruder struct {
		name       string
		tls        *tls.Config
		user, pass string
	}
	cases := []struct {
		name    string
		secure  func(o *Options, i int)
		welcome intruder
		refused []intruder
	}{
		{
			name: "mutual TLS",
			secure: func(o *Options, i int) {
				p := ca.Issue("n" + strconv.Itoa(i))
				o.ClusterTLSCert, o.ClusterTLSKey, o.ClusterTLSCA = p.CertFile, p.KeyFile, ca.File
			},
			welcome: intruder{name: "with a certificate the CA signed", tls: tlsOf(ca.Issue("welcome"), ca)},
			refused: []intruder{
				{name: "without TLS"},
				// It trusts the cluster's CA, so only the nodes' check of its
				// own certificate keeps it out.
				{name: "with a certificate of another CA", tls: tlsOf(other.Issue("intruder"), ca)},
			},
		},
		{
			name:    "password",
			secure:  func(o *Options, _ int) { o.ClusterUser, o.ClusterPassword = "chatd", "route-s3cr3t" },
			welcome: intruder{name: "with the password", user: "chatd", pass: "route-s3cr3t"},
			refused: []intruder{{name: "without credentials"}, {name: "with a wrong password", user: "chatd", pass: "guess"}},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			buses, routes := startSecuredPair(t, tc.secure)
			for _, in := range tc.refused {
				srv := routeServer(t, in.tls, in.user, in.pass, routes)
				time.Sleep(3 * time.Second) // several route reconnect attempts
				if n := srv.NumRoutes(); n != 0 {
					t.Errorf("a server %s has %d routes to the cluster, want none", in.name, n)
				}
				srv.Shutdown()
			}
			srv := routeServer(t, tc.welcome.tls, tc.welcome.user, tc.welcome.pass, routes)
			wait.Until(t, "a server "+tc.welcome.name+" routed", func() error {
				if srv.NumRoutes() == 0 {
					return fmt.Errorf("no routes")
				}
				return nil
			})
			srv.Shutdown()
			// The cluster carries on: a message stored through one node is read through the other.
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if _, err := buses[0].js.CreateStream(ctx, jetstream.StreamConfig{Name: "SECURE", Subjects: []string{"secure.>"}, Replicas: 2}); err != nil {
				t.Fatalf("create an R2 stream through node 0: %v", err)
			}
			if _, err := buses[0].js.Publish(ctx, "secure.1", []byte("hello")); err != nil {
				t.Fatalf("store through node 0: %v", err)
			}
			st, err := buses[1].js.Stream(ctx, "SECURE")
			if err != nil {
				t.Fatal(err)
			}
			if m, err := st.GetMsg(ctx, 1); err != nil || string(m.Data) != "hello" {
				t.Fatalf("read through node 1: %v", err)
			}
		})
	}
}

// startSecuredPair starts two clustered nodes made secure by secure, and
// returns them and their route URLs.
func startSecuredPair(t *testing.T, secure func(o *Options, i int)) ([]*Bus, []string) {
	t.Helper()
	const size = 2
	listens := make([]string, size)
	var routes []string
	for i := range listens {
		listens[i] = "127.0.0.1:" + strconv.Itoa(port.Free(t))
		routes = append(routes, "nats-route://"+listens[i])
	}
	opts := make([]Options, size)
	for i := range opts {
		opts[i] = Options{DataDir: t.TempDir(), ServerName: "n" + strconv.Itoa(i), Durability: DurabilityReplicated,
			ClusterName: "secure", ClusterListen: listens[i], Routes: routes, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		secure(&opts[i], i)
	}
	buses := make([]*Bus, size)
	errs := make([]error, size)
	var wg sync.WaitGroup
	for i := range buses {
		wg.Go(func() {
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			buses[i], errs[i] = Start(ctx, opts[i])
		})
	}
	wg.Wait()
	t.Cleanup(func() {
		for _, b := range buses {
			if b != nil {
				ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
				_ = b.Close(ctx)
				cancel()
			}
		}
	})
	for i, err := range errs {
		if err != nil {
			t.Fatalf("start node %d: %v", i, err)
		}
	}
	return buses, routes
}

// routeServer starts a bare NATS server that routes to routes with the
// given TLS and credentials (either may be nil or empty).
func routeServer(t *testing.T, tc *tls.Config, user, pass string, routes []string) *server.Server {
	t.Helper()
	urls := server.RoutesFromStr(routes[0] + "," + routes[1])
	if user != "" {
		for _, u := range urls {
			u.User = url.UserPassword(user, pass)
		}
	}
	so := &server.Options{ServerName: "intruder", Host: "127.0.0.1", Port: server.RANDOM_PORT, NoSigs: true, NoLog: true,
		Cluster: server.ClusterOpts{Name: "secure", Host: "127.0.0.1", Port: server.RANDOM_PORT, TLSConfig: tc, TLSTimeout: 2},
		Routes:  urls}
	return natstest.Run(t, so)
}
