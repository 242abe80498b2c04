package node

import (
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
)

func TestForwardedFor(t *testing.T) {
	trusted := []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8"), netip.MustParsePrefix("192.168.1.7/32")}
	var got string
	h := forwardedFor(trusted, http.HandlerFunc(func(_ http.ResponseWriter, r *http.Request) { got = r.RemoteAddr }))
	cases := []struct {
		remote string
		xff    []string
		want   string
	}{
		{"10.1.1.1:5000", []string{"203.0.113.9"}, "203.0.113.9"},                            // from a trusted proxy
		{"203.0.113.50:5000", []string{"198.51.100.1"}, "203.0.113.50:5000"},                 // from anyone else: ignored
		{"10.1.1.1:5000", []string{"198.51.100.1, 203.0.113.9, 192.168.1.7"}, "203.0.113.9"}, // a chain of proxies; the client's own claim skipped
		{"10.1.1.1:5000", []string{"198.51.100.1", "203.0.113.9"}, "203.0.113.9"},            // several headers are one list
		{"10.1.1.1:5000", []string{"junk"}, "10.1.1.1:5000"},                                 // garbage: the peer
		{"10.1.1.1:5000", nil, "10.1.1.1:5000"},                                              // no header
		{"[::ffff:10.1.1.1]:5000", []string{"::ffff:203.0.113.9"}, "203.0.113.9"},            // IPv4 in IPv6
	}
	for _, tc := range cases {
		r := httptest.NewRequest("GET", "/", nil)
		r.RemoteAddr = tc.remote
		for _, v := range tc.xff {
			r.Header.Add("X-Forwarded-For", v)
		}
		got = ""
		h.ServeHTTP(httptest.NewRecorder(), r)
		if got != tc.want {
			t.Errorf("from %s, X-Forwarded-For %q: client %s, want %s", tc.remote, tc.xff, got, tc.want)
		}
	}
}
