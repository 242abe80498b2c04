package metrics

import (
	"io"
	"net/http/httptest"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/stompws"
)

// TestErrorKinds: every kind stompws and stompapi give an ERROR frame is
// counted in a series of its own, so chatd_errors_total{kind="other"}
// stays for the unforeseen, and a kind nobody declared lands there.
func TestErrorKinds(t *testing.T) {
	m := New("n", "test")
	for i, k := range errorKinds {
		for range i + 1 {
			m.ErrorSent(k)
		}
	}
	m.ErrorSent("never-declared")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for i, k := range errorKinds {
		want := i + 1
		if k == stompws.KindOther {
			want++ // and the undeclared one
		}
		line := `chatd_errors_total{kind="` + k + `"} ` + strconv.Itoa(want)
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("want %q in the exposition", line)
		}
	}
	if strings.Contains(string(body), "never-declared") {
		t.Error("an undeclared kind got a series of its own")
	}
}

// TestCutReasons: every reason stompws cuts a connection for is counted in
// a series of its own.
func TestCutReasons(t *testing.T) {
	m := New("n", "test")
	for i, r := range cutReasons {
		for range i + 1 {
			m.SessionCut(r)
		}
	}
	m.SessionCut("never-declared")
	rec := httptest.NewRecorder()
	m.Handler().ServeHTTP(rec, httptest.NewRequest("GET", "/metrics", nil))
	body, _ := io.ReadAll(rec.Body)
	for i, r := range cutReasons {
		line := `chatd_sessions_cut_total{reason="` + r + `"} ` + strconv.Itoa(i+1)
		if !strings.Contains(string(body), line+"\n") {
			t.Errorf("want %q in the exposition", line)
		}
	}
	if strings.Contains(string(body), "never-declared") {
		t.Error("an undeclared reason got a series of its own")
	}
}

// TestMetricsHotPathsDoNotAllocate: the observer methods run per frame and
// per delivery, so they must cost no allocation.
func TestMetricsHotPathsDoNotAllocate(t *testing.T) {
	m := New("n", "test")
	cmd := string([]byte("SEND")) // as the decoder makes it, not a constant
	kind := string([]byte(stompws.KindSubscription))
	allocs := testing.AllocsPerRun(1000, func() {
		m.FrameIn(cmd)
		m.FrameIn("WHATEVER")
		m.FramesOut("MESSAGE", 3)
		m.LiveReceived()
		m.Delivered(chat.DeliveryLive, 5)
		m.Delivered(chat.DeliveryReplay, 1)
		m.Dropped(1)
		m.Subscribed()
		m.Unsubscribed()
		m.MessageStored(3 * time.Millisecond)
		m.BatchCommitted(40, true)
		m.BatchCommitted(3, false)
		m.ErrorSent(kind)
	})
	if allocs != 0 {
		t.Fatalf("%v allocations per round", allocs)
	}
}
