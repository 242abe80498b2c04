package config

import (
	"flag"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

func writeFile(t *testing.T, text string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "chatd.toml")
	if err := os.WriteFile(p, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestConfigFileBelowEnvironmentBelowFlags sets keys in the file, some of
// them again in the environment, one of those again as a flag: each setting
// comes from the highest source that has it.
func TestConfigFileBelowEnvironmentBelowFlags(t *testing.T) {
	path := writeFile(t, `
dev = true
heartbeat = "3s"
max-subscriptions = 7
routes = ["nats-route://10.0.0.2:6222", "nats-route://10.0.0.3:6222"]
data-dir = "/from/file"
http = "127.0.0.1:9001"
`)
	t.Setenv("CHATD_DATA_DIR", "/from/env")
	t.Setenv("CHATD_HTTP", "127.0.0.1:9002")
	c, err := Parse([]string{"--config", path, "--http", "127.0.0.1:9003", "--cluster", "127.0.0.1:6222", "--name", "n1"})
	if err != nil {
		t.Fatal(err)
	}
	switch {
	case !c.Dev || c.HeartBeat != 3*time.Second || c.MaxSubscriptions != 7:
		t.Errorf("file only: dev %v heartbeat %s max-subscriptions %d", c.Dev, c.HeartBeat, c.MaxSubscriptions)
	case len(c.Routes) != 2 || c.Routes[1] != "nats-route://10.0.0.3:6222":
		t.Errorf("file array: routes %q", c.Routes)
	case c.DataDir != "/from/env":
		t.Errorf("file and env: data-dir %q, want the environment's", c.DataDir)
	case c.HTTPAddr != "127.0.0.1:9003":
		t.Errorf("file, env and flag: http %q, want the flag's", c.HTTPAddr)
	case c.DedupeWindow != 2*time.Minute:
		t.Errorf("nowhere: dedupe-window %s, want the default", c.DedupeWindow)
	}

	// The file may be named in the environment too.
	t.Setenv("CHATD_CONFIG", path)
	c, err = Parse([]string{"--cluster", "127.0.0.1:6222", "--name", "n1"})
	if err != nil {
		t.Fatal(err)
	}
	if c.HeartBeat != 3*time.Second || c.HTTPAddr != "127.0.0.1:9002" {
		t.Errorf("CHATD_CONFIG: heartbeat %s http %q", c.HeartBeat, c.HTTPAddr)
	}
}

func TestConfigFileErrorsNameTheKey(t *testing.T) {
	for _, tc := range []struct {
		name, file string
		args       []string
		want       []string
	}{
		{"unknown key", "dev = true\nhistory-max-agee = \"1h\"\n", nil,
			[]string{`unknown key "history-max-agee"`}},
		{"table key", "[cluster]\nname = \"x\"\n", nil,
			[]string{`unknown key "cluster.name"`}},
		{"bad duration", "heartbeat = \"soon\"\n", nil,
			[]string{`key "heartbeat"`, `"soon"`, "duration"}},
		{"duration as number", "heartbeat = 10\n", nil,
			[]string{`key "heartbeat"`, "duration"}},
		{"bad bool", "dev = \"yes\"\n", nil,
			[]string{`key "dev"`, "true or false"}},
		{"bad number", "max-frame-size = \"big\"\n", nil,
			[]string{`key "max-frame-size"`, "whole number"}},
		{"bad value hidden by a flag", "max-subscriptions = 1.5\n", []string{"--max-subscriptions", "8"},
			[]string{`key "max-subscriptions"`}},
		{"not a setting", "version = true\n", nil,
			[]string{`key "version"`, "cannot be set in a config file"}},
		{"not TOML", "dev = \n", nil,
			[]string{"chatd.toml", "TOML"}},
		{"valid value, checked later", "dev = true\nheartbeat-grace = \"-1s\"\n", nil,
			[]string{"--heartbeat-grace"}},
		{"bad log level", "dev = true\nlog-level = \"loud\"\n", nil,
			[]string{"--log-level", "loud"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := writeFile(t, tc.file)
			_, err := Parse(append([]string{"--config", path}, tc.args...))
			if err == nil {
				t.Fatalf("no error for %q", tc.file)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %s", err, w)
				}
			}
		})
	}
	if _, err := Parse([]string{"--config", filepath.Join(t.TempDir(), "missing.toml")}); err == nil ||
		!strings.Contains(err.Error(), "missing.toml") {
		t.Errorf("missing file: %v", err)
	}
}

// TestPrintConfigRoundTrips reads back what WriteTOML printed as a config
// file and gets the same configuration.
func TestPrintConfigRoundTrips(t *testing.T) {
	t.Setenv("CHATD_HISTORY_MAX_AGE", "720h")
	c, err := Parse([]string{"--dev", "--name", `node "one" \ 1`, "--routes", "nats-route://a:1,nats-route://b:2",
		"--cluster", "127.0.0.1:6222", "--max-frame-size", "2048", "--log-level", "debug"})
	if err != nil {
		t.Fatal(err)
	}
	var printed strings.Builder
	if err := c.WriteTOML(&printed); err != nil {
		t.Fatal(err)
	}
	for _, line := range []string{"dev = true", "max-frame-size = 2048", `history-max-age = "720h0m0s"`,
		`name = "node \"one\" \\ 1"`, `routes = "nats-route://a:1,nats-route://b:2"`, `log-format = "text"`,
		`log-level = "debug"`} {
		if !strings.Contains(printed.String(), "\n"+line+"\n") {
			t.Errorf("printed configuration lacks %s:\n%s", line, printed.String())
		}
	}
	_ = os.Unsetenv("CHATD_HISTORY_MAX_AGE") // t.Setenv restores it at the end
	again, err := Parse([]string{"--config", writeFile(t, printed.String())})
	if err != nil {
		t.Fatalf("the printed configuration does not parse: %v\n%s", err, printed.String())
	}
	var reprinted strings.Builder
	if err := again.WriteTOML(&reprinted); err != nil {
		t.Fatal(err)
	}
	body := func(s string) string { return s[strings.Index(s, "\ncluster"):] } // past the comment lines
	if body(reprinted.String()) != body(printed.String()) {
		t.Fatalf("round trip changed the configuration:\n%s\nthen:\n%s", printed.String(), reprinted.String())
	}
}

func TestPrintConfigHidesSecrets(t *testing.T) {
	fs := flag.NewFlagSet("x", flag.ContinueOnError)
	fs.String("nats-token", "", "")
	fs.String("admin-password", "", "")
	fs.String("nats-url", "", "")
	fs.String("postgres-url", "", "")
	fs.String("other-url", "", "")
	for name, value := range map[string]string{"nats-token": "s3cr3t", "nats-url": "nats://h:4222",
		"postgres-url": "postgres://chatd:s3cr3t@db:5432/chatd?sslmode=verify-full",
		"other-url":    "host=db password='s3 cr3t' user=chatd"} {
		if err := fs.Set(name, value); err != nil {
			t.Fatal(err)
		}
	}
	var out strings.Builder
	if err := (Config{settings: snapshot(fs)}).WriteTOML(&out); err != nil {
		t.Fatal(err)
	}
	got := out.String()
	if strings.Contains(got, "s3cr3t") || !strings.Contains(got, "# nats-token = (hidden)\n") {
		t.Errorf("secret shown:\n%s", got)
	}
	if !strings.Contains(got, `postgres-url = "postgres://chatd:xxxxx@db:5432/chatd?sslmode=verify-full"`) ||
		!strings.Contains(got, `other-url = "host=db password=xxxxx user=chatd"`) {
		t.Errorf("connection strings not shown with their passwords hidden:\n%s", got)
	}
	if !strings.Contains(got, "admin-password = \"\"\n") || !strings.Contains(got, `nats-url = "nats://h:4222"`) {
		t.Errorf("empty secret or plain setting not shown:\n%s", got)
	}
}

func TestLogFormat(t *testing.T) {
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--dev"}, "text"},
		{[]string{"--version"}, "json"}, // production
		{[]string{"--dev", "--log-format", "json"}, "json"},
	} {
		c, err := Parse(tc.args)
		if err != nil {
			t.Fatal(err)
		}
		if c.LogFormat != tc.want {
			t.Errorf("%v: log format %q, want %q", tc.args, c.LogFormat, tc.want)
		}
	}
	if _, err := Parse([]string{"--dev", "--log-format", "xml"}); err == nil || !strings.Contains(err.Error(), "--log-format") {
		t.Errorf("--log-format xml: %v", err)
	}
}

// TestEverySettingIsDocumented keeps docs/configuration.md's table of
// settings and the flags the same.
func TestEverySettingIsDocumented(t *testing.T) {
	doc, err := os.ReadFile("../docs/configuration.md")
	if err != nil {
		t.Fatal(err)
	}
	_, table, _ := strings.Cut(string(doc), "## Every setting")
	table, _, _ = strings.Cut(table, "Flags that act on one run only")
	var documented []string
	for _, m := range regexp.MustCompile("(?m)^\\| `([a-z-]+)` \\|").FindAllStringSubmatch(table, -1) {
		documented = append(documented, m[1])
	}
	var c Config
	var flags []string
	c.flags(new(string)).VisitAll(func(f *flag.Flag) {
		if !notInFile(f.Name) {
			flags = append(flags, f.Name)
		}
	})
	slices.Sort(documented)
	if !slices.Equal(documented, flags) {
		t.Fatalf("docs/configuration.md documents %v\nthe flags are %v", documented, flags)
	}
}
