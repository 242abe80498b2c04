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
	"github.com/chatd/chatd/storage"
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
	mux.HandleFunc("POST /api/rooms", a.apiCreateRoom)
	mux.HandleFunc("GET /api/rooms", a.apiUserRooms)
	mux.HandleFunc("GET /api/rooms/{room}", a.apiRoom)
	mux.HandleFunc("POST /api/rooms/{room}/members", a.apiAddMember)
	mux.HandleFunc("DELETE /api/rooms/{room}/members/{user}", a.apiRemoveMember)
	mux.HandleFunc("GET /api/rooms/{room}/messages", a.apiMessages)
	mux.HandleFunc("POST /api/rooms/{room}/read", a.apiMarkRead)
	mux.HandleFunc("GET /api/rooms/{room}/search", a.apiSearch)
}

// apiUser authenticates the request's bearer token; on failure it has
// answered.
func (a *App) apiUser(w http.ResponseWriter, r *http.Request) (user string, ok bool) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		a.log.Debug("API request refused", "remote", r.RemoteAddr, "reason", "no bearer token")
		writeAPIError(w, http.StatusUnauthorized, "unauthorized")
		return "", false
	}
	p, err := a.verify.Verify(strings.TrimSpace(tok))
	if err != nil {
		a.log.Debug("API request refused", "remote", r.RemoteAddr, "reason", err)
		writeAPIError(w, http.StatusUnauthorized, "unauthorized")
		return "", false
	}
	return p.User, true
}

// apiCaller authenticates the request and checks the room id in its path;
// on failure it has answered.
func (a *App) apiCaller(w http.ResponseWriter, r *http.Request) (user, room string, ok bool) {
	if user, ok = a.apiUser(w, r); !ok {
		return "", "", false
	}
	room = r.PathValue("room")
	if !natsbus.ValidName(room) {
		writeAPIError(w, http.StatusBadRequest, "invalid room id: 1 to 64 characters of [A-Za-z0-9_-]")
		return "", "", false
	}
	return user, room, true
}

// decodeBody reads a JSON request body into v; on failure it has answered
// 400 with want, the body's expected shape.
func decodeBody(w http.ResponseWriter, r *http.Request, v any, want string) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAPIBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeAPIError(w, http.StatusBadRequest, "invalid body: want JSON "+want)
		return false
	}
	return true
}

// apiCreateRoom is POST /api/rooms with {"id":"...","name":"..."} (both
// optional): the caller becomes the room's owner.
func (a *App) apiCreateRoom(w http.ResponseWriter, r *http.Request) {
	user, ok := a.apiUser(w, r)
	if !ok {
		return
	}
	var req struct {
		ID   string `json:"id"`
		Name string `json:"name"`
	}
	if !decodeBody(w, r, &req, `{"id":"<room id>","name":"<display name>"}`) {
		return
	}
	room, err := a.chat.CreateRoom(r.Context(), user, req.ID, req.Name)
	if err != nil {
		a.apiFailed(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/rooms/"+room.ID)
	writeJSON(w, http.StatusCreated, room)
}

// apiUserRooms is GET /api/rooms: the caller's rooms, most recently
// active first, with unread counts and newest messages.
func (a *App) apiUserRooms(w http.ResponseWriter, r *http.Request) {
	user, ok := a.apiUser(w, r)
	if !ok {
		return
	}
	rooms, err := a.chat.UserRooms(r.Context(), user)
	if err != nil {
		a.apiFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, rooms)
}

// apiRoom is GET /api/rooms/{room}: the room and its members.
func (a *App) apiRoom(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.apiCaller(w, r)
	if !ok {
		return
	}
	info, err := a.chat.Room(r.Context(), user, room)
	if err != nil {
		a.apiFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, info)
}

// apiAddMember is POST /api/rooms/{room}/members with
// {"userId":"...","role":"member"|"admin"}.
func (a *App) apiAddMember(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.apiCaller(w, r)
	if !ok {
		return
	}
	var req struct {
		UserID string       `json:"userId"`
		Role   storage.Role `json:"role"`
	}
	if !decodeBody(w, r, &req, `{"userId":"<user id>","role":"member"|"admin"}`) {
		return
	}
	m, err := a.chat.AddMember(r.Context(), user, room, req.UserID, req.Role)
	if err != nil {
		a.apiFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusCreated, m)
}

// apiRemoveMember is DELETE /api/rooms/{room}/members/{user}; the user
// is path-escaped.
func (a *App) apiRemoveMember(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.apiCaller(w, r)
	if !ok {
		return
	}
	if err := a.chat.RemoveMember(r.Context(), user, room, r.PathValue("user")); err != nil {
		a.apiFailed(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// apiMessages is GET /api/rooms/{room}/messages?before=&limit=.
func (a *App) apiMessages(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.apiCaller(w, r)
	if !ok {
		return
	}
	before, limit, ok := pageQuery(w, r)
	if !ok {
		return
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
	const want = `{"lastReadId":<message id>}`
	if !decodeBody(w, r, &req, want) {
		return
	}
	if req.LastReadID == nil || *req.LastReadID == 0 {
		writeAPIError(w, http.StatusBadRequest, "invalid body: want JSON "+want)
		return
	}
	pos, err := a.chat.MarkRead(r.Context(), room, user, *req.LastReadID)
	if err != nil {
		a.apiFailed(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, chat.ReadEvent{RoomID: room, UserID: user, LastReadID: pos})
}

// apiFailed answers a failed request: 403, 404 or 409 for the refusals
// chat names, 400 for another client error, else 500 (logged).
func (a *App) apiFailed(w http.ResponseWriter, r *http.Request, err error) {
	var ce *stompws.Error
	switch {
	case errors.Is(err, chat.ErrForbidden):
		writeAPIError(w, http.StatusForbidden, err.Error())
	case errors.Is(err, chat.ErrNotFound):
		writeAPIError(w, http.StatusNotFound, err.Error())
	case errors.Is(err, chat.ErrConflict):
		writeAPIError(w, http.StatusConflict, err.Error())
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

// pageQuery reads a page's before and limit from the query string; on
// failure it has answered.
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
