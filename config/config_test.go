package config

import (
	"strings"
	"testing"
	"time"
)

func TestDefaults(t *testing.T) {
	c, err := Parse([]string{"--dev"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPAddr != "127.0.0.1:8080" || c.DataDir != "./chatd-data" || c.NATSURL != "" || c.HeartBeat != 10*time.Second ||
		c.Durability != DurabilityFsync {
		t.Fatalf("defaults %+v", c)
	}
}

func TestEnvironmentBelowFlags(t *testing.T) {
	t.Setenv("CHATD_DEV", "true")
	t.Setenv("CHATD_DATA_DIR", "/from/env")
	t.Setenv("CHATD_HTTP", "127.0.0.1:9000")
	c, err := Parse([]string{"--http", "127.0.0.1:9100"})
	if err != nil {
		t.Fatal(err)
	}
	if !c.Dev || c.DataDir != "/from/env" || c.HTTPAddr != "127.0.0.1:9100" {
		t.Fatalf("got %+v", c)
	}
}

func TestBadValuesNameTheSetting(t *testing.T) {
	cases := []struct {
		args []string
		env  map[string]string
		want string
	}{
		{[]string{}, nil, "--jwt-secret"},
		{[]string{"--jwt-secret", "short"}, nil, "--jwt-secret"},
		{[]string{"--jwt-public-key", "/nonexistent/key.pem"}, nil, "--jwt-public-key"},
		{[]string{"--jwt-jwks", "/nonexistent/jwks.json"}, nil, "--jwt-jwks"},
		{[]string{"--jwt-secret", strings.Repeat("s", 32), "--jwt-user-claim", ""}, nil, "--jwt-user-claim"},
		{[]string{"--dev", "--send-rate", "-1"}, nil, "--send-rate"},
		{[]string{"--dev", "--send-burst", "0"}, nil, "--send-burst"},
		{[]string{"--dev", "--max-connections-per-user", "-1"}, nil, "--max-connections-per-user"},
		{[]string{"--dev", "--http", "nope"}, nil, "--http"},
		{[]string{"--dev", "--http", "127.0.0.1:99999"}, nil, "--http"},
		{[]string{"--dev", "--nats-url", "http://x:4222"}, nil, "--nats-url"},
		{[]string{"--dev", "--nats-url", "nats://a:4222,:::"}, nil, "--nats-url"},
		{[]string{"--dev", "--data-dir", " "}, nil, "--data-dir"},
		{[]string{"--dev", "--heartbeat", "1ms"}, nil, "--heartbeat"},
		{[]string{"--dev", "--heartbeat", "soon"}, nil, "heartbeat"},
		{[]string{"--dev", "--history-max-age", "-1h"}, nil, "--history-max-age"},
		{[]string{"--dev", "--history-max-age", "50ms"}, nil, "--history-max-age"},
		{[]string{"--dev", "--history-max-age", "1m"}, nil, "--dedupe-window"},
		{[]string{"--dev", "--postgres-url", "postgres://chatd@db:notaport/chatd"}, nil, "--postgres-url"},
		{[]string{"--dev"}, map[string]string{"CHATD_POSTGRES_URL": "redis://cache"}, "--postgres-url"},
		{[]string{"--dev", "--max-frame-size", "10"}, nil, "--max-frame-size"},
		{[]string{"--dev", "--log-level", "loud"}, nil, "--log-level"},
		{[]string{"--dev", "--nats-url", "nats://127.0.0.1:4222", "--nats-listen", "127.0.0.1:1"}, nil, "--nats-listen"},
		{[]string{"--dev", "--pprof", "localhost"}, nil, "--pprof"},
		{[]string{"--dev", "--pprof", "127.0.0.1:8080"}, nil, "--pprof"},
		{[]string{"--dev", "--durability", "sync"}, nil, "--durability"},
		{[]string{"--dev", "--durability", "fast", "--replicas", "3"}, nil, "--durability"},
		{[]string{"--dev"}, map[string]string{"CHATD_DURABILITY": "FSYNC"}, "--durability"},
		{[]string{"--dev", "--bogus"}, nil, "bogus"},
		{[]string{"--dev", "extra"}, nil, "extra"},
		{[]string{"--dev"}, map[string]string{"CHATD_MAX_SUBSCRIPTIONS": "many"}, "CHATD_MAX_SUBSCRIPTIONS"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := Parse(tc.args)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want it to name %q", err, tc.want)
			}
		})
	}
}

func TestJWTKeyReplacesDev(t *testing.T) {
	secret := strings.Repeat("k", 32)
	t.Setenv("CHATD_JWT_SECRET", secret)
	c, err := Parse([]string{"--allowed-origins", "chat.example.com, *.example.org"})
	if err != nil {
		t.Fatal(err)
	}
	if c.Dev || c.JWTSecret != secret || c.JWTUserClaim != "sub" ||
		len(c.AllowedOrigins) != 2 || c.AllowedOrigins[1] != "*.example.org" {
		t.Fatalf("got %+v", c)
	}
	var b strings.Builder
	if err := c.WriteTOML(&b); err != nil {
		t.Fatal(err)
	}
	if strings.Contains(b.String(), secret) || !strings.Contains(b.String(), "# jwt-secret = (hidden)") {
		t.Fatalf("--print-config shows the secret:\n%s", b.String())
	}
}

func TestUsageListsFlags(t *testing.T) {
	u := Usage()
	for _, f := range []string{"-dev", "-http", "-data-dir", "-nats-url", "CHATD_"} {
		if !strings.Contains(u, f) {
			t.Errorf("usage lacks %s", f)
		}
	}
}
