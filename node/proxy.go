package node

import (
	"net"
	"net/http"
	"net/netip"
	"strings"
)

// forwardedFor makes a request's RemoteAddr the client that
// X-Forwarded-For names, when the request comes from a trusted proxy:
// the client address is only read for logs (the session's, refused
// handshakes and API requests), so that is all it changes. Scanning from
// the right, the first address that is not a trusted proxy is the client:
// anything left of it was written by the client itself and proves nothing.
// X-Forwarded-Proto is not read: nothing in chatd depends on the scheme
// (the WebSocket origin check compares hosts).
func forwardedFor(trusted []netip.Prefix, next http.Handler) http.Handler {
	isTrusted := func(a netip.Addr) bool {
		a = a.Unmap()
		for _, p := range trusted {
			if p.Contains(a) {
				return true
			}
		}
		return false
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		peer, ok := addrOf(r.RemoteAddr)
		values := r.Header.Values("X-Forwarded-For")
		if !ok || len(values) == 0 || !isTrusted(peer) {
			next.ServeHTTP(w, r)
			return
		}
		hops := strings.Split(strings.Join(values, ","), ",")
		client := peer
		for i := len(hops) - 1; i >= 0; i-- {
			a, err := netip.ParseAddr(strings.TrimSpace(hops[i]))
			if err != nil {
				break // garbage: keep the last address known good
			}
			client = a.Unmap()
			if !isTrusted(client) {
				break
			}
		}
		if client != peer {
			r2 := *r
			r2.RemoteAddr = client.String()
			r = &r2
		}
		next.ServeHTTP(w, r)
	})
}

func addrOf(remote string) (netip.Addr, bool) {
	host, _, err := net.SplitHostPort(remote)
	if err != nil {
		host = remote
	}
	a, err := netip.ParseAddr(host)
	return a.Unmap(), err == nil
}
