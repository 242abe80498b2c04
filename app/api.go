package app

import (
	"encoding/json"
	"errors"
	"net/http"
	"strconv"
	"strings"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/stompws"
)

// tokenVerifier maps an HTTP API bearer token to its user.
type tokenVerifier interface {
	Verify(token string) (stompws.Principal, error)
}

// sessionAuth authenticates both STOMP sessions and HTTP API requests.
type sessionAuth interface {
	chat.Authenticator
	tokenVerifier
}

// maxAPIBody bounds an HTTP API request body.
const maxAPIBody = 64 << 10

func (a *App) apiRoutes(mux *http.ServeMux) {
	mux.HandleFunc("GET /api/rooms/{room}/messages", a.apiMessages)
	mux.HandleFunc("POST /api/rooms/{room}/read", a.apiMarkRead)
	mux.HandleFunc("GET /api/rooms/{room}/search", a.apiSearch)
}

// apiCaller authenticates the request's bearer token and checks the room
// id; on failure it has answered.
func (a *App) apiCaller(w http.ResponseWriter, r *http.Request) (user, room string, ok bool) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		a.log.Debug("API request refused", "remote", r.RemoteAddr, "reason", "no bearer token")
		writeAPIError(w, http.StatusUnauthorized, "unauthorized")
		return "", "", false
	}
	p, err := a.verify.Verify(strings.TrimSpace(tok))
	if err != nil {
		a.log.Debug("API request refused", "remote", r.RemoteAddr, "reason", err)
		writeAPIError(w, http.StatusUnauthorized, "unauthorized")
		return "", "", false
	}
	room = r.PathValue("room")
	if !natsbus.ValidName(room) {
		writeAPIError(w, http.StatusBadRequest, "invalid room id: 1 to 64 characters of [A-Za-z0-9_-]")
		return "", "", false
	}
	return p.User, room, true
}

// apiMessages is GET /api/rooms/{room}/messages?before=&limit=.
func (a *App) apiMessages(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.apiCaller(w, r)
	if !ok {
		return
	}
	q := r.URL.Query()
	var before uint64
	if v := q.Get("before"); v != "" {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			writeAPIError(w, http.StatusBadRequest, "invalid before: want a message id")
			return
		}
		before = n
	}
	limit := chat.DefaultLogLimit
	if v := q.Get("limit"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 {
			writeAPIError(w, http.StatusBadRequest, "invalid limit: 1 to "+strconv.Itoa(chat.MaxLogLimit))
			return
		}
		limit = n
	}
	msgs, err := a.chat.History(r.Context(), room, user, before, limit)
	if err != nil {
		a.apiFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, msgs)
}

// apiMarkRead is POST /api/rooms/{room}/read with {"lastReadId":N}.
func (a *App) apiMarkRead(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.apiCaller(w, r)
	if !ok {
		return
	}
	var req struct {
		LastReadID *uint64 `json:"lastReadId"`
	}
	if err := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody)).Decode(&req); err != nil || req.LastReadID == nil || *req.LastReadID == 0 {
		writeAPIError(w, http.StatusBadRequest, `invalid body: want JSON {"lastReadId":<message id>}`)
		return
	}
	pos, err := a.chat.MarkRead(r.Context(), room, user, *req.LastReadID)
	if err != nil {
		a.apiFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, chat.ReadEvent{RoomID: room, UserID: user, LastReadID: pos})
}

// apiFailed answers a failed request: 403 for a room the user may not
// use, 400 for another client error, else 500 (logged).
func (a *App) apiFailed(w http.ResponseWriter, r *http.Request, err error) {
	var ce *stompws.Error
	switch {
	case errors.Is(err, chat.ErrForbidden):
		writeAPIError(w, http.StatusForbidden, err.Error())
	case errors.As(err, &ce):
		writeAPIError(w, http.StatusBadRequest, ce.Message)
	default:
		a.log.Error("API request failed", "path", r.URL.Path, "err", err)
		writeAPIError(w, http.StatusInternalServerError, "internal error")
	}
}

func writeAPIError(w http.ResponseWriter, code int, msg string) {
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="chatd"`)
	}
	writeJSON(w, code, map[string]string{"error": msg})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client may have gone; nothing to do
}
