package e2e_test

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/certtest"
	"github.com/chatd/chatd/internal/testkit/natstest"
	"github.com/chatd/chatd/internal/testkit/testlog"
	chatdnode "github.com/chatd/chatd/node"
	"github.com/nats-io/jwt/v2"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nkeys"
)

// startNATS starts a NATS server with JetStream made by opts, owned by the
// test.
func startNATS(t *testing.T, opts *server.Options) *server.Server {
	t.Helper()
	opts.Host, opts.Port, opts.JetStream, opts.StoreDir, opts.NoSigs, opts.NoLog = "127.0.0.1", -1, true, t.TempDir(), true, true
	return natstest.Run(t, opts)
}

// tryExternal starts a node on the NATS at url with the settings mutate
// makes, and stops it at once; it returns the start's error.
func tryExternal(t *testing.T, url string, mutate func(*config.Config)) error {
	t.Helper()
	cfg := testConfig(t)
	cfg.NATSURL, cfg.NATSListen = url, ""
	mutate(&cfg)
	if err := cfg.Validate(); err != nil {
		t.Fatalf("config: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	n, err := chatdnode.Start(ctx, cfg, "test", testlog.New())
	if err != nil {
		return err
	}
	if err := n.Shutdown(ctx); err != nil {
		t.Errorf("shutdown: %v", err)
	}
	return nil
}

// TestNATSCreds: chatd joins a NATS in operator mode (accounts and users
// as JWTs, as NGS and nsc set one up) with --nats-creds; without the file
// it is refused, with an error naming the setting.
func TestNATSCreds(t *testing.T) {
	must := func(err error) {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
	}
	operator, err := nkeys.CreateOperator()
	must(err)
	operatorPub, err := operator.PublicKey()
	must(err)
	newAccount := func(js bool) (nkeys.KeyPair, string, string) {
		kp, err := nkeys.CreateAccount()
		must(err)
		pub, err := kp.PublicKey()
		must(err)
		ac := jwt.NewAccountClaims(pub)
		if js {
			ac.Limits.JetStreamLimits = jwt.JetStreamLimits{MemoryStorage: -1, DiskStorage: -1, Streams: -1, Consumer: -1}
		}
		token, err := ac.Encode(operator)
		must(err)
		return kp, pub, token
	}
	_, sysPub, sysJWT := newAccount(false)
	account, accountPub, accountJWT := newAccount(true)
	oc := jwt.NewOperatorClaims(operatorPub)
	oc.SystemAccount = sysPub
	operatorJWT, err := oc.Encode(operator)
	must(err)
	trusted, err := jwt.DecodeOperatorClaims(operatorJWT)
	must(err)
	resolver := &server.MemAccResolver{}
	must(resolver.Store(sysPub, sysJWT))
	must(resolver.Store(accountPub, accountJWT))
	srv := startNATS(t, &server.Options{TrustedOperators: []*jwt.OperatorClaims{trusted}, SystemAccount: sysPub, AccountResolver: resolver})

	user, err := nkeys.CreateUser()
	must(err)
	userPub, err := user.PublicKey()
	must(err)
	userJWT, err := jwt.NewUserClaims(userPub).Encode(account)
	must(err)
	seed, err := user.Seed()
	must(err)
	creds, err := jwt.FormatUserConfig(userJWT, seed)
	must(err)
	credsFile := filepath.Join(t.TempDir(), "chatd.creds")
	must(os.WriteFile(credsFile, creds, 0o600))

	if err := tryExternal(t, srv.ClientURL(), func(c *config.Config) { c.NATSCreds = credsFile }); err != nil {
		t.Fatalf("with --nats-creds: %v", err)
	}
	err = tryExternal(t, srv.ClientURL(), func(*config.Config) {})
	if err == nil || !strings.Contains(err.Error(), "--nats-creds") || !strings.Contains(strings.ToLower(err.Error()), "authorization violation") {
		t.Fatalf("without --nats-creds: %v, want an authorization violation naming --nats-creds", err)
	}
}

// TestNATSTLSAndUsers: chatd joins a NATS that requires TLS with client
// certificates and a user (a password, or an nkey) with --nats-ca,
// --nats-tls-cert/--nats-tls-key and --nats-user/--nats-password or
// --nats-nkey; without the CA, the client certificate or the password it
// is refused.
func TestNATSTLSAndUsers(t *testing.T) {
	ca := certtest.NewCA(t, "nats")
	serverPair, clientPair := ca.Issue("nats-server"), ca.Issue("chatd")
	tc, err := server.GenTLSConfig(&server.TLSConfigOpts{CertFile: serverPair.CertFile, KeyFile: serverPair.KeyFile, CaFile: ca.File, Verify: true})
	if err != nil {
		t.Fatal(err)
	}
	nkey, err := nkeys.CreateUser()
	if err != nil {
		t.Fatal(err)
	}
	nkeyPub, _ := nkey.PublicKey()
	seed, _ := nkey.Seed()
	seedFile := filepath.Join(t.TempDir(), "chatd.nk")
	if err := os.WriteFile(seedFile, seed, 0o600); err != nil {
		t.Fatal(err)
	}
	srv := startNATS(t, &server.Options{TLS: true, TLSVerify: true, TLSConfig: tc, TLSTimeout: 2,
		Users: []*server.User{{Username: "chatd", Password: "nats-s3cr3t"}}, Nkeys: []*server.NkeyUser{{Nkey: nkeyPub}}})
	url := "tls://" + srv.Addr().String()
	clientTLS := func(c *config.Config) {
		c.NATSCA, c.NATSTLSCert, c.NATSTLSKey = ca.File, clientPair.CertFile, clientPair.KeyFile
	}

	for name, mutate := range map[string]func(*config.Config){
		"password": func(c *config.Config) { clientTLS(c); c.NATSUser, c.NATSPassword = "chatd", "nats-s3cr3t" },
		"nkey":     func(c *config.Config) { clientTLS(c); c.NATSNkey = seedFile },
	} {
		if err := tryExternal(t, url, mutate); err != nil {
			t.Errorf("with %s: %v", name, err)
		}
	}
	if err := tryExternal(t, "tls://chatd:nats-s3cr3t@"+srv.Addr().String(), clientTLS); err != nil {
		t.Errorf("with the user and password in the URL: %v", err)
	}
	for _, tc := range []struct {
		name   string
		mutate func(*config.Config)
		want   string
	}{
		{"a wrong password", func(c *config.Config) { clientTLS(c); c.NATSUser, c.NATSPassword = "chatd", "guess" }, "--nats-password"},
		{"no CA", func(c *config.Config) {
			clientTLS(c)
			c.NATSCA = ""
			c.NATSUser, c.NATSPassword = "chatd", "nats-s3cr3t"
		}, "certificate signed by unknown authority"},
		{"no client certificate", func(c *config.Config) { c.NATSCA, c.NATSUser, c.NATSPassword = ca.File, "chatd", "nats-s3cr3t" }, "connect to NATS"},
	} {
		err := tryExternal(t, url, tc.mutate)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("with %s: %v, want an error with %q", tc.name, err, tc.want)
		}
	}
}
