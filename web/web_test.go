package web_test

import (
	"io"
	"net/http"
	"net/http/httptest"
	"regexp"
	"strings"
	"testing"

	"github.com/chatd/chatd/web"
)

// TestPageIsSelfContained serves the page over real HTTP and follows every
// script and stylesheet it names: all are served from the binary, none
// from another host.
func TestPageIsSelfContained(t *testing.T) {
	srv := httptest.NewServer(web.Handler())
	defer srv.Close()
	get := func(path string) (*http.Response, string) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer func() { _ = resp.Body.Close() }()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, string(b)
	}
	resp, page := get("/")
	if resp.StatusCode != http.StatusOK || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") {
		t.Errorf("Content-Security-Policy %q", csp)
	}
	refs := regexp.MustCompile(`(?:src|href)="([^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 3 {
		t.Fatalf("page names only %d assets", len(refs))
	}
	for _, r := range refs {
		ref := r[1]
		if strings.Contains(ref, "//") {
			t.Errorf("page loads %s from elsewhere", ref)
			continue
		}
		if resp, body := get("/" + ref); resp.StatusCode != http.StatusOK || len(body) == 0 {
			t.Errorf("GET /%s: %d, %d bytes", ref, resp.StatusCode, len(body))
		}
	}
	if _, body := get("/vendor/stompjs/LICENSE"); !strings.Contains(body, "Apache License") {
		t.Error("the vendored stompjs licence is not served")
	}
	if resp, _ := get("/nope.js"); resp.StatusCode != http.StatusNotFound {
		t.Errorf("GET /nope.js: %d", resp.StatusCode)
	}
}
