package httpapi

import (
	"net/http"
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
