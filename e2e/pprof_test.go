package e2e_test

import (
	"context"
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/config"
	"github.com/chatd/chatd/internal/testkit/port"
)

// TestPprofOnlyOnItsOwnAddress checks that --pprof serves the profiles on
// its own listener and that the client-facing address never does.
func TestPprofOnlyOnItsOwnAddress(t *testing.T) {
	addr := "127.0.0.1:" + strconv.Itoa(port.Free(t))
	n := startNode(t, func(c *config.Config) { c.PprofAddr = addr })
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
		defer func() { _ = resp.Body.Close() }()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
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
	if n.cfg.PprofAddr != "" {
		t.Fatalf("--pprof defaults to %s", n.cfg.PprofAddr)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.app.Addr()+"/debug/pprof/", nil)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_ = resp.Body.Close()
	if resp.StatusCode == http.StatusOK {
		t.Fatal("the client address serves /debug/pprof/")
	}
}
