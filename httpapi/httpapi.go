// Package httpapi is chat over HTTP: the rooms API (docs/protocol.md, HTTP
// API) as handlers on a mux, with bearer tokens checked by a Verifier and
// the domain's errors mapped to statuses.
package httpapi

import (
	"context"
	"encoding/json"
	"log/slog"
	"net/http"
	"strconv"
	"strings"

	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/storage"
)

// Verifier maps a bearer token to its user (auth.JWT, or auth.Dev).
type Verifier interface {
	Verify(ctx context.Context, token string) (auth.Identity, error)
}

// API serves the rooms API.
type API struct {
	chat   *chat.Service
	verify Verifier
	log    *slog.Logger
}

// New returns the API of svc for callers verify lets in.
func New(svc *chat.Service, verify Verifier, log *slog.Logger) *API {
	if log == nil {
		log = slog.Default()
	}
	return &API{chat: svc, verify: verify, log: log}
}

// maxAPIBody bounds an HTTP API request body.
const maxAPIBody = 64 << 10

// Routes registers the API's handlers on mux.
func (a *API) Routes(mux *http.ServeMux) {
	mux.HandleFunc("POST /api/rooms", a.createRoom)
	mux.HandleFunc("GET /api/rooms", a.userRooms)
	mux.HandleFunc("GET /api/rooms/{room}", a.room)
	mux.HandleFunc("POST /api/rooms/{room}/members", a.addMember)
	mux.HandleFunc("DELETE /api/rooms/{room}/members/{user}", a.removeMember)
	mux.HandleFunc("GET /api/rooms/{room}/messages", a.messages)
	mux.HandleFunc("POST /api/rooms/{room}/read", a.markRead)
	mux.HandleFunc("GET /api/rooms/{room}/search", a.search)
}

// apiUser authenticates the request's bearer token; on failure it has
// answered.
func (a *API) caller(w http.ResponseWriter, r *http.Request) (user string, ok bool) {
	scheme, tok, _ := strings.Cut(r.Header.Get("Authorization"), " ")
	if !strings.EqualFold(scheme, "Bearer") || strings.TrimSpace(tok) == "" {
		a.log.Debug("API request refused", "remote", r.RemoteAddr, "reason", "no bearer token")
		writeAPIError(w, http.StatusUnauthorized, "unauthorized")
		return "", false
	}
	id, err := a.verify.Verify(r.Context(), strings.TrimSpace(tok))
	if err != nil {
		a.log.Debug("API request refused", "remote", r.RemoteAddr, "reason", err)
		writeAPIError(w, http.StatusUnauthorized, "unauthorized")
		return "", false
	}
	return id.User, true
}

// roomCaller authenticates the request and checks the room id in its path;
// on failure it has answered.
func (a *API) roomCaller(w http.ResponseWriter, r *http.Request) (user, room string, ok bool) {
	if user, ok = a.caller(w, r); !ok {
		return "", "", false
	}
	room = r.PathValue("room")
	if !chat.ValidRoomID(room) {
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

// createRoom is POST /api/rooms with {"id":"...","name":"..."} (both
// optional): the caller becomes the room's owner.
func (a *API) createRoom(w http.ResponseWriter, r *http.Request) {
	user, ok := a.caller(w, r)
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
		a.failed(w, r, err)
		return
	}
	w.Header().Set("Location", "/api/rooms/"+room.ID)
	writeJSON(w, http.StatusCreated, room)
}

// userRooms is GET /api/rooms: the caller's rooms, most recently
// active first, with unread counts and newest messages.
func (a *API) userRooms(w http.ResponseWriter, r *http.Request) {
	user, ok := a.caller(w, r)
	if !ok {
		return
	}
	rooms, err := a.chat.UserRooms(r.Context(), user)
	a.reply(w, r, http.StatusOK, rooms, err)
}

// room is GET /api/rooms/{room}: the room and its members.
func (a *API) room(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.roomCaller(w, r)
	if !ok {
		return
	}
	info, err := a.chat.Room(r.Context(), user, room)
	a.reply(w, r, http.StatusOK, info, err)
}

// addMember is POST /api/rooms/{room}/members with
// {"userId":"...","role":"member"|"admin"}.
func (a *API) addMember(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.roomCaller(w, r)
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
	a.reply(w, r, http.StatusCreated, m, err)
}

// removeMember is DELETE /api/rooms/{room}/members/{user}; the user
// is path-escaped.
func (a *API) removeMember(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.roomCaller(w, r)
	if !ok {
		return
	}
	if err := a.chat.RemoveMember(r.Context(), user, room, r.PathValue("user")); err != nil {
		a.failed(w, r, err)
		return
	}
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(http.StatusNoContent)
}

// messages is GET /api/rooms/{room}/messages?before=&limit=.
func (a *API) messages(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.roomCaller(w, r)
	if !ok {
		return
	}
	before, limit, ok := pageQuery(w, r)
	if !ok {
		return
	}
	msgs, err := a.chat.History(r.Context(), user, room, before, limit)
	a.reply(w, r, http.StatusOK, msgs, err)
}

// markRead is POST /api/rooms/{room}/read with {"lastReadId":N}.
func (a *API) markRead(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.roomCaller(w, r)
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
	ev, err := a.chat.MarkRead(r.Context(), user, room, *req.LastReadID)
	a.reply(w, r, http.StatusOK, ev, err)
}

// reply answers with v as JSON and code, or, if err is set, as failed does.
func (a *API) reply(w http.ResponseWriter, r *http.Request, code int, v any, err error) {
	if err != nil {
		a.failed(w, r, err)
		return
	}
	writeJSON(w, code, v)
}

// failed answers a failed request with the status of the domain error's
// kind; anything else is a 500, logged.
func (a *API) failed(w http.ResponseWriter, r *http.Request, err error) {
	ce, ok := chat.AsError(err)
	if !ok || ce.Kind == chat.Internal {
		a.log.Error("API request failed", "path", r.URL.Path, "err", err)
		writeAPIError(w, http.StatusInternalServerError, "internal error")
		return
	}
	writeAPIError(w, status(ce.Kind), ce.Error())
}

// status is the HTTP status of an error kind.
func status(k chat.Kind) int {
	switch k {
	case chat.Invalid:
		return http.StatusBadRequest
	case chat.Forbidden:
		return http.StatusForbidden
	case chat.NotFound:
		return http.StatusNotFound
	case chat.Conflict:
		return http.StatusConflict
	case chat.TooLarge:
		return http.StatusRequestEntityTooLarge
	case chat.Unavailable:
		return http.StatusServiceUnavailable
	case chat.Unsupported:
		return http.StatusNotImplemented
	}
	return http.StatusInternalServerError
}

// retryAfter is what a 503 tells a client to wait before trying again:
// about a stream leader election, the usual cause.
const retryAfter = "5"

func writeAPIError(w http.ResponseWriter, code int, msg string) {
	switch code {
	case http.StatusUnauthorized:
		w.Header().Set("WWW-Authenticate", `Bearer realm="chatd"`)
	case http.StatusServiceUnavailable:
		w.Header().Set("Retry-After", retryAfter)
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

// search is GET /api/rooms/{room}/search?q=&before=&limit=: the room's
// archived messages matching q, newest first (docs/protocol.md).
func (a *API) search(w http.ResponseWriter, r *http.Request) {
	user, room, ok := a.roomCaller(w, r)
	if !ok {
		return
	}
	before, limit, ok := pageQuery(w, r)
	if !ok {
		return
	}
	msgs, err := a.chat.Search(r.Context(), user, room, r.URL.Query().Get("q"), before, limit)
	a.reply(w, r, http.StatusOK, msgs, err)
}
