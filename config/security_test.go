package config

import (
	"net/netip"
	"slices"
	"strings"
	"testing"

	"github.com/chatd/chatd/internal/testkit/certtest"
)

// TestSecuritySettingsNameTheFlag: every TLS and credentials setting is
// checked at start, and a bad one names its flag.
func TestSecuritySettingsNameTheFlag(t *testing.T) {
	ca := certtest.NewCA(t, "config")
	a, b := ca.Issue("a"), ca.Issue("b")
	jwt := []string{"--jwt-secret", strings.Repeat("s", 32)}
	cluster := append(slices.Clone(jwt), "--name", "n1", "--cluster", "127.0.0.1:6222", "--routes", "nats-route://127.0.0.1:6223")
	external := append(slices.Clone(jwt), "--nats-url", "nats://127.0.0.1:4222")
	leaf := append(slices.Clone(jwt), "--leaf-remote", "nats-leaf://hub.example:7422", "--nats-js-domain", "hub")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"--dev", "--tls-cert", a.CertFile}, "--tls-cert needs --tls-key"},
		{[]string{"--dev", "--tls-key", a.KeyFile}, "--tls-key needs --tls-cert"},
		{[]string{"--dev", "--tls-cert", a.CertFile, "--tls-key", b.KeyFile}, "invalid --tls-cert/--tls-key"},
		{[]string{"--dev", "--tls-cert", "/nonexistent.pem", "--tls-key", a.KeyFile}, "invalid --tls-cert/--tls-key"},
		{[]string{"--dev", "--trusted-proxies", "10.0.0.0/33"}, "trusted-proxies"},
		{[]string{"--dev", "--trusted-proxies", "proxy.example.com"}, "trusted-proxies"},
		{cluster, "--insecure-cluster"},
		{append(slices.Clone(cluster), "--cluster-tls-cert", a.CertFile, "--cluster-tls-key", a.KeyFile), "--cluster-tls-cert needs --cluster-tls-ca"},
		{append(slices.Clone(cluster), "--cluster-tls-ca", ca.File), "--cluster-tls-ca needs --cluster-tls-cert"},
		{append(slices.Clone(cluster), "--cluster-tls-cert", a.CertFile, "--cluster-tls-key", b.KeyFile, "--cluster-tls-ca", ca.File), "invalid --cluster-tls-cert/--cluster-tls-key"},
		{append(slices.Clone(cluster), "--cluster-tls-cert", a.CertFile, "--cluster-tls-key", a.KeyFile, "--cluster-tls-ca", a.KeyFile), "invalid --cluster-tls-ca"},
		{append(slices.Clone(cluster), "--cluster-user", "chatd"), "--cluster-user and --cluster-password go together"},
		{append(slices.Clone(cluster), "--cluster-user", "a:b", "--cluster-password", "p"), "invalid --cluster-user"},
		{append(slices.Clone(jwt), "--cluster-user", "u", "--cluster-password", "p"), "need --cluster"},
		{append(slices.Clone(jwt), "--nats-creds", a.CertFile), "--nats-creds applies to an external NATS and needs --nats-url"},
		{append(slices.Clone(external), "--nats-creds", "/nonexistent.creds"), "invalid --nats-creds"},
		{append(slices.Clone(external), "--nats-nkey", "/nonexistent.nk"), "invalid --nats-nkey"},
		{append(slices.Clone(external), "--nats-ca", "/nonexistent.pem"), "invalid --nats-ca"},
		{append(slices.Clone(external), "--nats-creds", a.CertFile, "--nats-nkey", a.KeyFile), "--nats-creds and --nats-nkey"},
		{append(slices.Clone(external), "--nats-creds", a.CertFile, "--nats-user", "u"), "--nats-user cannot be used"},
		{append(slices.Clone(external), "--nats-password", "p"), "--nats-password needs --nats-user"},
		{append(slices.Clone(external), "--nats-tls-cert", a.CertFile), "--nats-tls-cert needs --nats-tls-key"},
		{append(slices.Clone(jwt), "--leaf-remote", "nats-leaf://hub.example:7422"), "--leaf-remote needs --nats-js-domain"},
		{append(slices.Clone(leaf), "--nats-url", "nats://127.0.0.1:4222"), "--leaf-remote applies to the embedded server"},
		{append(slices.Clone(leaf), "--name", "n1", "--cluster", "127.0.0.1:6222", "--insecure-cluster"), "cannot be used with --leaf-remote"},
		{append(slices.Clone(jwt), "--leaf-remote", "http://hub.example:7422", "--nats-js-domain", "hub"), "invalid --leaf-remote"},
		{append(slices.Clone(leaf), "--leaf-ca", "/nonexistent.pem"), "invalid --leaf-ca"},
		{append(slices.Clone(leaf), "--leaf-creds", "/nonexistent.creds"), "invalid --leaf-creds"},
		{append(slices.Clone(jwt), "--leaf-creds", a.CertFile), "--leaf-creds applies to a leaf node and needs --leaf-remote"},
		{append(slices.Clone(jwt), "--nats-js-domain", "hub"), "--nats-js-domain names another NATS's JetStream"},
	}
	for _, tc := range cases {
		_, err := Parse(tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%v: %v, want an error with %q", tc.args, err, tc.want)
		}
	}

	good := [][]string{
		append(slices.Clone(cluster), "--insecure-cluster"),
		{"--dev", "--name", "n1", "--cluster", "127.0.0.1:6222"}, // dev mode implies --insecure-cluster
		append(slices.Clone(cluster), "--cluster-user", "chatd", "--cluster-password", "pw"),
		append(slices.Clone(cluster), "--cluster-tls-cert", a.CertFile, "--cluster-tls-key", a.KeyFile, "--cluster-tls-ca", ca.File),
		append(slices.Clone(external), "--nats-creds", a.CertFile, "--nats-ca", ca.File, "--nats-tls-cert", a.CertFile, "--nats-tls-key", a.KeyFile),
		append(slices.Clone(external), "--nats-user", "u", "--nats-password", "p"),
		append(slices.Clone(external), "--nats-js-domain", "hub"),
		append(slices.Clone(leaf), "--leaf-ca", ca.File, "--leaf-creds", a.CertFile, "--data-dir", ""),
		{"--dev", "--tls-cert", a.CertFile, "--tls-key", a.KeyFile},
	}
	for _, args := range good {
		if _, err := Parse(args); err != nil {
			t.Errorf("%v: %v", args, err)
		}
	}

	// --print-config hides a leaf URL's password.
	c, err := Parse(append(slices.Clone(jwt), "--leaf-remote", "tls://chatd:s3cr3t@hub.example:7422,tls://hub2.example:7422", "--nats-js-domain", "hub"))
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := c.WriteTOML(&out); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(out.String(), `leaf-remote = "tls://chatd:xxxxx@hub.example:7422,tls://hub2.example:7422"`) {
		t.Errorf("--print-config:\n%s", out.String())
	}
}

func TestTrustedProxies(t *testing.T) {
	c, err := Parse([]string{"--dev", "--trusted-proxies", "10.1.2.3/8, 192.168.1.7,::ffff:172.16.0.1, fd00::/8"})
	if err != nil {
		t.Fatal(err)
	}
	want := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32"),
		netip.MustParsePrefix("172.16.0.1/32"), netip.MustParsePrefix("fd00::/8")}
	if !slices.Equal(c.TrustedProxies, want) {
		t.Fatalf("trusted proxies %v, want %v", c.TrustedProxies, want)
	}
}

// TestPrintConfigHidesRoutePasswords: the new passwords are secrets by
// their names.
func TestPrintConfigHidesRoutePasswords(t *testing.T) {
	c, err := Parse([]string{"--dev", "--name", "n1", "--cluster", "127.0.0.1:6222", "--cluster-user", "chatd",
		"--cluster-password", "s3cr3t-route", "--print-config"})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	if err := c.WriteTOML(&out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); strings.Contains(got, "s3cr3t") || !strings.Contains(got, "# cluster-password = (hidden)") ||
		!strings.Contains(got, `cluster-user = "chatd"`) {
		t.Errorf("print-config:\n%s", got)
	}
	c, err = Parse([]string{"--jwt-secret", strings.Repeat("s", 32), "--nats-url", "nats://127.0.0.1:4222", "--nats-user", "u",
		"--nats-password", "s3cr3t-nats", "--print-config"})
	if err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := c.WriteTOML(&out); err != nil {
		t.Fatal(err)
	}
	if got := out.String(); strings.Contains(got, "s3cr3t") || !strings.Contains(got, "# nats-password = (hidden)") {
		t.Errorf("print-config:\n%s", got)
	}
}
