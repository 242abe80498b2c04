package app

import (
	"errors"
	"net/http"
	"strconv"

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

// pageQuery reads a page's before and limit from the query string, as
// apiMessages does; on failure it has answered.
func pageQuery(w http.ResponseWriter, r *http.Request) (before uint64, limit int, ok bool) {
	q := r.URL.Query()
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, "invalid before: want a message id")
			return 0, 0, false
		}
		before = n
	}
	limit = chat.DefaultLogLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeAPIError(w, http.StatusBadRequest, "invalid limit: 1 to "+strconv.Itoa(chat.MaxLogLimit))
			return 0, 0, false
		}
		limit = n
	}
	return before, limit, true
}
