package app_test

import (
	"context"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/config"
)

// TestPprofOnlyOnItsOwnAddress checks that --pprof serves the profiles on
// its own listener and that the client-facing address never does.
func TestPprofOnlyOnItsOwnAddress(t *testing.T) {
	n := startNode(t, func(c *config.Config) { c.PprofAddr = "127.0.0.1:0" })
	get := func(url string) (int, string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", url, err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	addr := n.app.PprofAddr()
	if addr == "" || addr == n.app.Addr() {
		t.Fatalf("pprof address %q, http %q", addr, n.app.Addr())
	}
	if code, body := get("http://" + addr + "/debug/pprof/goroutine?debug=1"); code != 200 || !strings.Contains(body, "goroutine profile") {
		t.Fatalf("pprof goroutine profile: %d %.200s", code, body)
	}
	if code, body := get("http://" + n.app.Addr() + "/debug/pprof/goroutine?debug=1"); strings.Contains(body, "goroutine profile") {
		t.Fatalf("client address serves profiles: %d", code)
	}
}

func TestPprofOffByDefault(t *testing.T) {
	n := startNode(t)
	if addr := n.app.PprofAddr(); addr != "" {
		t.Fatalf("pprof on %s without --pprof", addr)
	}
}
