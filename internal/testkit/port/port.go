// Package port finds ports for tests whose servers bind them later
// (NATS routes, HTTP listeners named in a configuration).
package port

import (
	"math/rand/v2"
	"net"
	"strconv"
	"sync/atomic"
	"testing"
)

// next walks 20000-31999 from a random start, so that parallel tests of
// one run never get the same port (a random pick could coincide before
// either server binds it). Test-only state.
var next atomic.Int32

// Free finds a port for a server that binds it itself later. It looks
// below Linux's ephemeral range (32768 and up), so that outgoing
// connections made meanwhile cannot take it.
func Free(t testing.TB) int {
	t.Helper()
	next.CompareAndSwap(0, int32(rand.IntN(12000)))
	for range 12000 {
		port := 20000 + int(next.Add(1))%12000
		ln, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port))
		if err == nil {
			_ = ln.Close()
			return port
		}
	}
	t.Fatal("no free port in 20000-31999")
	return 0
}
