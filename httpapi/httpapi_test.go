package httpapi

import (
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/chatd/chatd/chat"
)

// TestStatus: each kind of domain error has its HTTP status; anything
// else is a 500.
func TestStatus(t *testing.T) {
	for kind, want := range map[chat.Kind]int{
		chat.Invalid:     http.StatusBadRequest,
		chat.Forbidden:   http.StatusForbidden,
		chat.NotFound:    http.StatusNotFound,
		chat.Conflict:    http.StatusConflict,
		chat.TooLarge:    http.StatusRequestEntityTooLarge,
		chat.Unavailable: http.StatusServiceUnavailable,
		chat.Unsupported: http.StatusNotImplemented,
		chat.Internal:    http.StatusInternalServerError,
	} {
		if got := status(kind); got != want {
			t.Errorf("%s: %d, want %d", kind, got, want)
		}
	}
}

// TestUnavailableSaysWhenToRetry: a 503 (the store cannot serve for the
// moment) carries Retry-After; other errors do not.
func TestUnavailableSaysWhenToRetry(t *testing.T) {
	for code, want := range map[int]string{http.StatusServiceUnavailable: retryAfter, http.StatusBadRequest: "", http.StatusInternalServerError: ""} {
		w := httptest.NewRecorder()
		writeAPIError(w, code, "x")
		if got := w.Header().Get("Retry-After"); got != want || w.Code != code {
			t.Errorf("%d: Retry-After %q (status %d), want %q", code, got, w.Code, want)
		}
	}
}
