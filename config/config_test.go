package config

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/stompws"
	"github.com/peterbourgon/ff/v3"
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

// TestWriteStallMax: --write-stall-max defaults to 2 minutes, takes 0
// (writes are cut after the write timeout) or anything from the write
// timeout up, from a flag, the environment or the file; the write timeout
// it is checked against is the STOMP server's.
func TestWriteStallMax(t *testing.T) {
	if d := stompws.DefaultConfig().WriteTimeout; writeTimeout != d {
		t.Fatalf("writeTimeout %s, the STOMP server's %s", writeTimeout, d)
	}
	c, err := Parse([]string{"--dev"})
	if err != nil || c.WriteStallMax != 2*time.Minute {
		t.Fatalf("default: %s %v", c.WriteStallMax, err)
	}
	for _, v := range []string{"0s", "10s", "1h0m0s"} {
		if c, err = Parse([]string{"--dev", "--write-stall-max", v}); err != nil || c.WriteStallMax.String() != v {
			t.Errorf("--write-stall-max %s: got %s %v", v, c.WriteStallMax, err)
		}
	}
	t.Setenv("CHATD_WRITE_STALL_MAX", "30s")
	if c, err = Parse([]string{"--dev"}); err != nil || c.WriteStallMax != 30*time.Second {
		t.Errorf("CHATD_WRITE_STALL_MAX=30s: got %s %v", c.WriteStallMax, err)
	}
	t.Setenv("CHATD_WRITE_STALL_MAX", "")
	path := filepath.Join(t.TempDir(), "chatd.toml")
	if err := os.WriteFile(path, []byte("write-stall-max = \"5m\"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if c, err = Parse([]string{"--dev", "--config", path}); err != nil || c.WriteStallMax != 5*time.Minute {
		t.Errorf("write-stall-max in the file: got %s %v", c.WriteStallMax, err)
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
		{[]string{"--jwt-jwks-url", "http://idp.example.com/jwks"}, nil, "--jwt-jwks-url"},
		{[]string{"--jwt-jwks-url", "idp.example.com/jwks"}, nil, "--jwt-jwks-url"},
		{nil, map[string]string{"CHATD_JWT_JWKS_URL": "ftp://idp.example.com/jwks"}, "--jwt-jwks-url"},
		{[]string{"--jwt-jwks-url", "https://idp.example.com/jwks", "--jwt-jwks-refresh", "1s"}, nil, "--jwt-jwks-refresh"},
		{[]string{"--jwt-secret", strings.Repeat("s", 32), "--jwt-user-claim", ""}, nil, "--jwt-user-claim"},
		{[]string{"--dev", "--send-rate", "-1"}, nil, "--send-rate"},
		{[]string{"--dev", "--send-burst", "0"}, nil, "--send-burst"},
		{[]string{"--dev", "--max-connections-per-user", "-1"}, nil, "--max-connections-per-user"},
		{[]string{"--dev", "--http", "nope"}, nil, "--http"},
		{[]string{"--dev", "--http", "127.0.0.1:99999"}, nil, "--http"},
		{[]string{"--dev", "--nats-url", "http://x:4222"}, nil, "--nats-url"},
		{[]string{"--dev", "--nats-prefix", "Chat"}, nil, "--nats-prefix"},
		{[]string{"--dev"}, map[string]string{"CHATD_NATS_PREFIX": "chat.a"}, "--nats-prefix"},
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
		{[]string{"--dev", "--jwt-header", "X-Token:"}, nil, "--jwt-header"},
		{[]string{"--dev", "--ws-path", "ws"}, nil, "--ws-path"},
		{[]string{"--dev", "--ws-path", "/ws/"}, nil, "--ws-path"},
		{[]string{"--dev", "--ws-path", "/api/ws"}, nil, "--ws-path"},
		{[]string{"--dev", "--heartbeat-min", "10ms"}, nil, "--heartbeat-min"},
		{[]string{"--dev", "--flush-window", "2s"}, nil, "--flush-window"},
		{[]string{"--dev", "--working-set", "10"}, nil, "--working-set"},
		{[]string{"--dev", "--replay-share", "-1"}, nil, "--replay-share"},
		{[]string{"--dev", "--partitions", "0"}, nil, "--partitions"},
		{[]string{"--dev", "--partitions", "65"}, nil, "--partitions"},
		{[]string{"--dev", "--flush-window", "-1ms"}, nil, "--flush-window"},
		{[]string{"--dev", "--write-stall-max", "5s"}, nil, "--write-stall-max"},
		{[]string{"--dev", "--write-stall-max", "-1m"}, nil, "--write-stall-max"},
		{[]string{"--dev", "--heartbeat", "1s", "--heartbeat-min", "2s"}, nil, "--heartbeat-min"},
		{[]string{"--dev", "--dest-send", "/app/chat"}, nil, "--dest-send"},
		{[]string{"--dev", "--dest-room", "/topic/{room}.{room}"}, nil, "--dest-room"},
		{[]string{"--dev", "--dest-read", "/app/chat.{room}.*"}, nil, "--dest-read"},
		{[]string{"--dev", "--dest-history", "app/{room}"}, nil, "--dest-history"},
		{[]string{"--dev", "--user-prefix", "/user/{room}"}, nil, "--user-prefix"},
		{[]string{"--dev", "--dest-history-reply", "/topic/history"}, nil, "--dest-history-reply"},
		{[]string{"--dev", "--dest-history-reply", "/user/queue/a..b"}, nil, "--dest-history-reply"},
		{[]string{"--dev"}, map[string]string{"CHATD_DEST_READ_EVENTS": "/topic/reads"}, "--dest-read-events"},
		{[]string{"--dev", "--message-fields", "body=text"}, nil, "message-fields"},
		{[]string{"--dev", "--message-fields", "text"}, nil, "message-fields"},
		{[]string{"--dev", "--message-fields", "text=message text"}, nil, "message-fields"},
		{[]string{"--dev", "--message-fields", "text=id"}, nil, "message-fields"},
		{[]string{"--dev"}, map[string]string{"CHATD_MESSAGE_FIELDS": "room=userId"}, "CHATD_MESSAGE_FIELDS"},
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

// Two templates that could match one destination stop chatd naming both
// settings, whatever the separators.
func TestOverlappingDestinationsNameBoth(t *testing.T) {
	cases := []struct {
		args         []string
		flag1, flag2 string
	}{
		{[]string{"--dest-send", "/topic/chat.{room}"}, "--dest-send", "--dest-room"},
		{[]string{"--dest-room", "/sub/{room}", "--dest-read-events", "/sub/read-{room}"}, "--dest-room", "--dest-read-events"},
		{[]string{"--dest-send", "/app/chat/{room}", "--dest-history", "/app/chat/{room}"}, "--dest-send", "--dest-history"},
		{[]string{"--dest-room", "/user/queue/{room}"}, "--dest-room", "--user-prefix"},
		{[]string{"--dest-send", "/app/{room}.log", "--dest-history", "/app/chat.{room}"}, "--dest-send", "--dest-history"},
	}
	for _, tc := range cases {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			_, err := Parse(append([]string{"--dev"}, tc.args...))
			if err == nil || !strings.Contains(err.Error(), tc.flag1) || !strings.Contains(err.Error(), tc.flag2) {
				t.Fatalf("error %v, want it to name %s and %s", err, tc.flag1, tc.flag2)
			}
		})
	}
	// Templates that only look alike are fine.
	c, err := Parse([]string{"--dev", "--dest-send", "/pub/chat/send/{room}", "--dest-room", "/sub/chat/{room}",
		"--dest-read", "/pub/chat/read/{room}", "--dest-read-events", "/sub/chat/read/{room}",
		"--dest-history", "/pub/chat/history/{room}", "--dest-history-reply", "/user/queue/history",
		"--message-fields", "text=messageText, created=sendAt"})
	if err != nil {
		t.Fatal(err)
	}
	if c.MessageFields["text"] != "messageText" || c.MessageFields["created"] != "sendAt" || c.MessageFields["room"] != "roomId" {
		t.Fatalf("message fields %v", c.MessageFields)
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

// TestJWKSURL: --jwt-jwks-url alone is a key, from a flag, the environment
// or the file; plain http is taken only to a loopback address, and
// --print-config shows the URL with any password hidden.
func TestJWKSURL(t *testing.T) {
	t.Setenv("CHATD_JWT_JWKS_URL", "https://chatd:s3cr3t@idp.example.com/realms/chat/protocol/openid-connect/certs")
	c, err := Parse(nil)
	if err != nil {
		t.Fatal(err)
	}
	if c.JWTJWKSRefresh != 5*time.Minute {
		t.Errorf("--jwt-jwks-refresh default %s", c.JWTJWKSRefresh)
	}
	var b strings.Builder
	if err := c.WriteTOML(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `jwt-jwks-url = "https://chatd:xxxxx@idp.example.com/realms/chat/protocol/openid-connect/certs"`) ||
		!strings.Contains(b.String(), `jwt-jwks-refresh = "5m0s"`) {
		t.Errorf("--print-config:\n%s", b.String())
	}
	t.Setenv("CHATD_JWT_JWKS_URL", "")
	for _, u := range []string{"http://127.0.0.1:8081/jwks", "http://localhost/jwks", "http://[::1]:80/jwks"} {
		if _, err := Parse([]string{"--jwt-jwks-url", u}); err != nil {
			t.Errorf("%s: %v", u, err)
		}
	}
	path := writeFile(t, "jwt-jwks-url = \"https://idp.example.com/jwks\"\njwt-jwks-refresh = \"1h\"\n")
	if c, err = Parse([]string{"--config", path}); err != nil || c.JWTJWKSURL != "https://idp.example.com/jwks" || c.JWTJWKSRefresh != time.Hour {
		t.Errorf("from the file: %q %s %v", c.JWTJWKSURL, c.JWTJWKSRefresh, err)
	}
}

// TestHelp: --help shows every flag once, with -- and its environment
// variable, under a group; its usage lines name every way to start that
// Validate asks for.
func TestHelp(t *testing.T) {
	u := Usage()
	head, groups, ok := strings.Cut(u, "\n\n")
	if !ok {
		t.Fatalf("no usage lines:\n%s", u)
	}
	_, err := Parse(nil)
	if err == nil {
		t.Fatal("no key and no --dev: started")
	}
	for _, f := range regexp.MustCompile(`--[a-z-]+`).FindAllString(err.Error(), -1) {
		if !strings.Contains(head, f+" ") && !strings.Contains(head, f+")") {
			t.Errorf("Validate asks for %s, the usage lines do not name it:\n%s", f, head)
		}
	}
	flagLine := regexp.MustCompile(`^  --([a-z-]+)(?: [a-zA-Z:]+)? +(\S+)$`)
	group := ""
	seen := map[string]string{}
	for _, line := range strings.Split(groups, "\n") {
		switch {
		case strings.HasSuffix(line, "):") && !strings.HasPrefix(line, " "):
			group = line
		case strings.HasPrefix(line, "  --"):
			m := flagLine.FindStringSubmatch(line)
			switch {
			case m == nil:
				t.Errorf("flag line %q: want --name [arg] VARIABLE", line)
			case group == "":
				t.Errorf("--%s before any group", m[1])
			case seen[m[1]] != "":
				t.Errorf("--%s under %q and again under %q", m[1], seen[m[1]], group)
			case m[2] != EnvName(m[1]):
				t.Errorf("--%s: variable %s, want %s", m[1], m[2], EnvName(m[1]))
			default:
				seen[m[1]] = group
			}
		}
	}
	var c Config
	c.flags(new(string)).VisitAll(func(f *flag.Flag) {
		if seen[f.Name] == "" {
			t.Errorf("--%s is not in --help", f.Name)
		}
		delete(seen, f.Name)
	})
	for name := range seen {
		t.Errorf("--help shows --%s, which is no flag", name)
	}
}

// TestEnvNames: the variable --help names for each flag is the one chatd
// reads.
func TestEnvNames(t *testing.T) {
	valid := map[string]string{"routes": "nats-route://10.0.0.2:6222", "allowed-origins": "chat.example.com", "message-fields": "text=t", "trusted-proxies": "10.0.0.0/8"}
	var c Config
	fs := c.flags(new(string))
	record(fs)
	want := map[string]string{}
	fs.VisitAll(func(f *flag.Flag) {
		v := valid[f.Name]
		switch {
		case v != "":
		case kindOf(f.Value) == kindBool && f.DefValue == "true":
			v = "false"
		case kindOf(f.Value) == kindBool:
			v = "true"
		case kindOf(f.Value) == kindDuration:
			v = "7s"
		case kindOf(f.Value) == kindNumber:
			v = "7"
		default:
			v = "from-env-" + f.Name
		}
		t.Setenv(EnvName(f.Name), v)
		want[f.Name] = v
	})
	if err := ff.Parse(fs, nil, ff.WithEnvVarPrefix(EnvPrefix)); err != nil {
		t.Fatal(err)
	}
	fs.VisitAll(func(f *flag.Flag) {
		if got := f.Value.String(); got != want[f.Name] {
			t.Errorf("%s=%s: --%s is %q", EnvName(f.Name), want[f.Name], f.Name, got)
		}
	})
}
