// Package wait lets tests wait for state that converges on its own: KV and
// PostgreSQL mirrors on other nodes, replicas and archives catching up.
package wait

import (
	"testing"
	"time"
)

// Timeout bounds Until: long enough for a cluster to settle on a busy
// two-core machine.
const Timeout = 15 * time.Second

// Until calls check until it returns nil, failing t with what and the last
// error if Timeout passes first. It polls the condition itself, every
// 10 ms.
func Until(t testing.TB, what string, check func() error) {
	t.Helper()
	deadline := time.Now().Add(Timeout)
	for {
		err := check()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: %v", what, err)
		}
		time.Sleep(10 * time.Millisecond)
	}
}
