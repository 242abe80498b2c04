package e2e_test

import (
	"io"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"
)

// readyz is the node's /readyz status and body.
func readyz(t *testing.T, n *node) (int, string) {
	t.Helper()
	c := http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + n.cfg.HTTPAddr + "/readyz")
	if err != nil {
		return 0, err.Error()
	}
	defer func() { _ = resp.Body.Close() }()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func waitReadyz(t *testing.T, n *node, code int, says string) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		got, body := readyz(t, n)
		if got == code && strings.Contains(body, says) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("/readyz: %d %q, want %d saying %q", got, body, code, says)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// TestMajorityLoss: a three-node cluster, one node leading the messages
// stream (chatd_messages_stream_leader), loses two nodes. The survivor's
// /readyz turns 503 and its leader gauge 0 (JetStream has no majority); a
// sender's SEND gets ERROR unavailable, and the SENDs it sent after it are
// not stored;
// once a second node is back /readyz is 200 again, and the documented
// resend (the unreceipted SENDs again, in order, with the same
// client-msg-ids) stores everything in the order it was first sent.
func TestMajorityLoss(t *testing.T) {
	t.Parallel()
	ns := startCluster(t, 3)
	survivor := ns[0]
	send := func(i int) string { return resendable("majority", i) }
	alice := dialRaw(t, survivor)
	alice.ConnectAs("alice", "1.2")
	alice.Send(send(0))
	if f := alice.Frame(); f.Command != "RECEIPT" {
		t.Fatalf("before the loss: %s %v", f.Command, f.Header)
	}
	waitReadyz(t, survivor, http.StatusOK, "ready")
	leaders := 0.0
	for _, n := range ns {
		leaders += scrape(t, n)["chatd_messages_stream_leader"]
	}
	if leaders != 1 {
		t.Fatalf("%v nodes say they lead the messages stream, want 1", leaders)
	}

	ns[1].stop()
	ns[2].stop()
	waitReadyz(t, survivor, http.StatusServiceUnavailable, "not ready")
	// A leader that lost its followers steps down once it notices (Raft's
	// lost-quorum check), which may be after /readyz has seen the stream
	// without a leader.
	for deadline := time.Now().Add(45 * time.Second); ; time.Sleep(200 * time.Millisecond) {
		l := scrape(t, survivor)["chatd_messages_stream_leader"]
		if l == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the survivor without a majority still says it leads (%v) 45 s on", l)
		}
	}

	// The first waits for a leader, then fails (after 20 s); the next two
	// queue behind it meanwhile, with time to spare after it fails: had
	// they been written once a leader is back, the resend would put the
	// first after them.
	alice.Send(send(1))
	time.Sleep(8 * time.Second)
	alice.Send(send(2) + send(3))
	f, err := alice.Read(60 * time.Second)
	if err != nil {
		t.Fatal(err)
	}
	if f.Command != "ERROR" || !strings.HasPrefix(f.Header.Get("message"), "unavailable") || f.Header.Get("receipt-id") != "r1" {
		t.Fatalf("a SEND while the majority is lost: %s %v, want ERROR unavailable for r1", f.Command, f.Header)
	}

	ns[1].start()
	waitReadyz(t, survivor, http.StatusOK, "ready")
	again := dialRaw(t, survivor)
	again.ConnectAs("alice", "1.2")
	again.Send(send(1) + send(2) + send(3))
	for i := 1; i <= 3; i++ {
		if f := again.Frame(); f.Command != "RECEIPT" || f.Header.Get("receipt-id") != "r"+strconv.Itoa(i) {
			t.Fatalf("the resend: %s %v, want RECEIPT r%d", f.Command, f.Header, i)
		}
	}
	bob := dial(t, survivor, "bob")
	got := texts(history(t, bob, bob.subscribe("/user/queue/chat.log"), "majority", ""))
	if strings.Join(got, " ") != "m0 m1 m2 m3" {
		t.Fatalf("the room holds %q, want m0 m1 m2 m3: each once, in the order sent", got)
	}
}
