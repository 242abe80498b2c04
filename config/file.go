package config

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/peterbourgon/ff/v3/fftoml"
)

// A config file (--config, CHATD_CONFIG) is TOML whose keys are the flags'
// names (docs/configuration.md):
//
//	dev = true
//	http = "0.0.0.0:8080"
//	history-max-age = "720h"
//
// It is read after the flags and the environment, and sets only what
// neither of them set. Every key is checked all the same, so a mistake in
// the file is never hidden by an override.

// notInFile reports flags that act on this one run rather than configure
// chatd, so a file may not set them and --print-config leaves them out.
func notInFile(name string) bool {
	switch name {
	case "config", "print-config", "version":
		return true
	}
	return false
}

// applyFile sets, from the TOML file at path, every flag of fs that was not
// set on the command line or in the environment.
func applyFile(fs *flag.FlagSet, path string) error {
	if path == "" {
		return nil
	}
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("config: --config: %w", err)
	}
	defer func() { _ = f.Close() }() // read only: nothing to lose
	values := map[string][]string{}
	err = fftoml.Parser(f, func(key, value string) error {
		values[key] = append(values[key], value) // an array gives several
		return nil
	})
	if err != nil {
		return fmt.Errorf("config: %s: %w", path, err)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	var scratch Config
	check := scratch.flags(new(string)) // to try values that are overridden
	for _, key := range slices.Sorted(maps.Keys(values)) {
		fl := fs.Lookup(key)
		switch {
		case fl == nil:
			return fmt.Errorf("config: %s: unknown key %q (keys are the flag names, as in data-dir = \"/var/lib/chatd\")", path, key)
		case notInFile(key):
			return fmt.Errorf("config: %s: key %q cannot be set in a config file", path, key)
		}
		value := strings.Join(values[key], ",")
		target := fs
		if set[key] {
			target = check
		}
		if err := target.Set(key, value); err != nil {
			return fmt.Errorf("config: %s: invalid value %q for key %q: %s", path, value, key, want(fl, err))
		}
	}
	return nil
}

// want explains a value a flag refused.
func want(fl *flag.Flag, err error) string {
	switch kindOf(fl.Value) {
	case kindBool:
		return "want true or false"
	case kindDuration:
		return `want a duration such as "10s", "5m" or "24h"`
	case kindNumber:
		return "want a whole number"
	}
	return err.Error()
}

type valueKind int

const (
	kindString valueKind = iota
	kindBool
	kindNumber
	kindDuration
)

func kindOf(v flag.Value) valueKind {
	g, ok := v.(flag.Getter)
	if !ok {
		return kindString
	}
	switch g.Get().(type) {
	case bool:
		return kindBool
	case time.Duration:
		return kindDuration
	case int, int64, uint, uint64, float64:
		return kindNumber
	}
	return kindString
}

// recorder keeps the text a flag was last set to, for values (fs.Func)
// whose String does not tell it, so --print-config can show them.
type recorder struct {
	flag.Value
	text string
	set  bool
}

func (r *recorder) Set(s string) error {
	if err := r.Value.Set(s); err != nil {
		return err
	}
	r.text, r.set = s, true
	return nil
}

func (r *recorder) String() string {
	switch {
	case r == nil || r.Value == nil:
		return "" // the zero value flag.PrintDefaults makes
	case r.set:
		return r.text
	}
	return r.Value.String()
}

func (r *recorder) IsBoolFlag() bool {
	b, ok := r.Value.(interface{ IsBoolFlag() bool })
	return ok && b.IsBoolFlag()
}

// record wraps every flag value of fs that cannot report its own text.
func record(fs *flag.FlagSet) {
	fs.VisitAll(func(f *flag.Flag) {
		if _, ok := f.Value.(flag.Getter); !ok {
			f.Value = &recorder{Value: f.Value}
		}
	})
}

// setting is one line of the effective configuration.
type setting struct {
	name, value string
	kind        valueKind
	secret      bool
}

// isSecret reports settings whose values --print-config hides: by their
// names, so that a new secret flag is hidden without being listed here.
func isSecret(name string) bool {
	for _, s := range []string{"password", "token", "secret", "credentials", "nkey"} {
		if name == s || strings.HasSuffix(name, "-"+s) {
			return true
		}
	}
	return false
}

// passwordKV is a password in a keyword/value connection string, plain or
// quoted (host=db password='it”s').
var passwordKV = regexp.MustCompile(`(?i)(\bpassword\s*=\s*)('(?:[^'\\]|\\.|'')*'|\S+)`)

// hidePasswords hides the passwords in a setting that holds connection
// URLs (comma-separated, as --nats-url takes) or a keyword/value
// connection string (as --postgres-url may be), keeping the rest readable.
func hidePasswords(v string) string {
	v = passwordKV.ReplaceAllString(v, "${1}xxxxx")
	parts := strings.Split(v, ",")
	for i, p := range parts {
		if u, err := url.Parse(strings.TrimSpace(p)); err == nil && u.User != nil {
			if _, ok := u.User.Password(); ok {
				parts[i] = u.Redacted()
			}
		}
	}
	return strings.Join(parts, ",")
}

func snapshot(fs *flag.FlagSet) []setting {
	var out []setting
	fs.VisitAll(func(f *flag.Flag) {
		if notInFile(f.Name) {
			return
		}
		value := f.Value.String()
		if strings.HasSuffix(f.Name, "-url") || strings.HasSuffix(f.Name, "-remote") {
			value = hidePasswords(value)
		}
		out = append(out, setting{name: f.Name, value: value, kind: kindOf(f.Value), secret: isSecret(f.Name)})
	})
	return out
}

// WriteTOML writes the effective configuration as a config file would
// say it, with secrets hidden (--print-config).
func (c Config) WriteTOML(w io.Writer) error {
	if c.settings == nil {
		return errors.New("config: no effective configuration: use Parse")
	}
	var b strings.Builder
	b.WriteString("# chatd's effective configuration (defaults < config file < CHATD_* environment < flags)\n")
	if c.ConfigFile != "" {
		b.WriteString("# config file: " + strings.ReplaceAll(c.ConfigFile, "\n", " ") + "\n")
	}
	for _, s := range c.settings {
		switch {
		case s.secret && s.value != "":
			fmt.Fprintf(&b, "# %s = (hidden)\n", s.name)
		case s.kind == kindBool || s.kind == kindNumber:
			fmt.Fprintf(&b, "%s = %s\n", s.name, s.value)
		default:
			fmt.Fprintf(&b, "%s = %s\n", s.name, tomlString(s.value))
		}
	}
	_, err := io.WriteString(w, b.String())
	if err != nil {
		return fmt.Errorf("config: print: %w", err)
	}
	return nil
}

// tomlString quotes s as a TOML basic string.
func tomlString(s string) string {
	s = strings.ToValidUTF8(s, string(utf8.RuneError))
	var b strings.Builder
	b.WriteByte('"')
	for _, r := range s {
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteRune(r)
		case r < 0x20 || r == 0x7f:
			b.WriteString(`\u` + fmt.Sprintf("%04X", r))
		default:
			b.WriteRune(r)
		}
	}
	b.WriteByte('"')
	return b.String()
}

// resolveLogFormat sets the default log format, text in dev mode and JSON
// otherwise, and checks a given one.
func (c *Config) resolveLogFormat(fs *flag.FlagSet) error {
	switch c.LogFormat {
	case "text", "json":
		return nil
	case "":
		format := "json"
		if c.Dev {
			format = "text"
		}
		return fs.Set("log-format", format) // so --print-config shows it
	}
	return fmt.Errorf("config: invalid --log-format %s: want text or json", strconv.Quote(c.LogFormat))
}
