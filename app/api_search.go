package app

import (
	"errors"
	"net/http"

	"github.com/chatd/chatd/chat"
)

// apiSearch is GET /api/rooms/{room}/search?q=&before=&limit=: the room's
// archived messages matching q, newest first (docs/protocol.md).
func (a *App) apiSearch(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.apiCaller(w, r)
	if !ok {
		return
	}
	before, limit, ok := pageQuery(w, r)
	if !ok {
		return
	}
	msgs, err := a.chat.Search(r.Context(), room, user, r.URL.Query().Get("q"), before, limit)
	if errors.Is(err, chat.ErrNoArchive) {
		writeAPIError(w, http.StatusNotImplemented, err.Error())
		return
	}
	if err != nil {
		a.apiFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, msgs)
}
