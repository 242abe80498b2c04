package httpapi_test

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/archiver"
	"github.com/chatd/chatd/auth"
	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/httpapi"
	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/internal/testkit/testlog"
	"github.com/chatd/chatd/natsbus"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/kvstore"
	"github.com/chatd/chatd/storage/postgres"
)

// Where a node keeps rooms and memberships: JetStream KV alone, or
// PostgreSQL (read positions in KV), with or without the message archive.
const (
	kvBackend        = "kvstore"
	pgBackend        = "postgres"
	pgArchiveBackend = "postgres+archive"
)

// apiServer is the rooms API over a chat service on real JetStream and a
// real store, with tokens verified as a node outside dev mode does.
type apiServer struct {
	url    string
	keys   *jwttest.Keys
	verify *auth.JWT
	store  chat.Store
}

func startAPI(t *testing.T, backend string) *apiServer {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	bus, err := natsbus.Start(ctx, natsbus.Options{DataDir: t.TempDir(), ServerName: "apitest", Durability: natsbus.DurabilityReplicated})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = bus.Close(context.Background()) })
	msgs, err := bus.OpenMessageLog(ctx, natsbus.LogConfig{Durability: natsbus.DurabilityReplicated})
	if err != nil {
		t.Fatal(err)
	}
	commit := msgs.NewCommitter(nil)
	t.Cleanup(func() { _ = commit.Close(context.Background()) })

	var store chat.Store
	var archive chat.Archive
	switch backend {
	case kvBackend:
		s, err := kvstore.Open(ctx, bus, kvstore.Config{Logger: testlog.New()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		store = s
	case pgBackend, pgArchiveBackend:
		db, err := postgres.Open(ctx, postgres.Options{URL: pgtest.NewDatabase(t), Logger: testlog.New()})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(db.Close)
		s, err := postgres.NewStore(ctx, db, 0)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = s.Close() })
		store = s
		if backend == pgArchiveBackend {
			ar, err := archiver.New(ctx, db.Archive(), msgs, archiver.Config{Logger: testlog.New()})
			if err != nil {
				t.Fatal(err)
			}
			actx, stop := context.WithCancel(context.Background())
			done := make(chan struct{})
			go func() {
				defer close(done)
				ar.Run(actx)
			}()
			t.Cleanup(func() {
				stop()
				<-done
			})
			archive = ar
		}
	default:
		t.Fatalf("no backend %q", backend)
	}

	svc := chat.NewService(msgs, commit, bus, store, chat.Config{Archive: archive, Logger: testlog.New()})
	t.Cleanup(svc.Close)
	k := jwttest.NewKeys(t)
	verify, err := auth.New(t.Context(), auth.Config{Secret: k.Secret, Issuer: jwttest.Issuer, Audience: jwttest.Audience, ValidUser: chat.ValidUserID})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	httpapi.New(svc, verify, testlog.New()).Routes(mux)
	hs := httptest.NewServer(mux)
	t.Cleanup(hs.Close)
	return &apiServer{url: hs.URL, keys: k, verify: verify, store: store}
}

// call makes a request as user (no token if empty) and returns the status
// and the body.
func (s *apiServer) call(t *testing.T, method, path, user, body string) (int, []byte) {
	t.Helper()
	req, err := http.NewRequest(method, s.url+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if user != "" {
		req.Header.Set("Authorization", "Bearer "+s.keys.HS(t, user))
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// expect makes a request and fails unless it gets code and, for an error,
// the message msg.
func (s *apiServer) expect(t *testing.T, method, path, user, body string, code int, msg string) []byte {
	t.Helper()
	got, b := s.call(t, method, path, user, body)
	var e struct{ Error string }
	if got >= 400 {
		_ = json.Unmarshal(b, &e)
	}
	if got != code || code >= 400 && e.Error != msg {
		t.Fatalf("%s %s as %q: %d %s, want %d %q", method, path, user, got, b, code, msg)
	}
	return b
}

// members lists the room's member ids as the API shows them to user.
func (s *apiServer) members(t *testing.T, room, user string) []string {
	t.Helper()
	var info chat.RoomInfo
	if err := json.Unmarshal(s.expect(t, "GET", "/api/rooms/"+room, user, "", http.StatusOK, ""), &info); err != nil {
		t.Fatal(err)
	}
	ids := make([]string, len(info.Members))
	for i, m := range info.Members {
		ids[i] = m.UserID
	}
	return ids
}

// isMember asks the store itself, behind the API.
func (s *apiServer) isMember(t *testing.T, room, user string) bool {
	t.Helper()
	ok, err := s.store.IsMember(context.Background(), room, user)
	if err != nil {
		t.Fatal(err)
	}
	return ok
}

// userIDCase is a user id and whether the one rule (chat.ValidUserID)
// takes it.
type userIDCase struct {
	name, id string
	valid    bool
}

// userIDCases are ids login refuses, each of which the rooms API used to
// take, and ids both take.
func userIDCases() []userIDCase {
	return []userIDCase{
		{"space", " ", false},
		{"inner space", "a b", false},
		{"newline", "a\nb", false},
		{"NUL", "a\x00b", false},
		{"right-to-left override", "a\u202eb", false},
		{"129 characters", strings.Repeat("u", chat.MaxUserIDLen+1), false},
		{"plain", "bob", true},
		{"128 characters", strings.Repeat("u", chat.MaxUserIDLen), true},
		{"non-ASCII", "zoë", true},
		{"needs path escaping", "x/y?z#%", true},
		{"email", "carol@example.com", true},
	}
}

// invalidUserID is the error every refused user id gets: the rule itself.
const invalidUserID = "invalid user id: " + chat.UserIDRule

// TestAddMemberUserIDRule: the rooms API adds exactly the user ids that
// can log in; any other gets 400 naming the rule, and nothing is stored.
func TestAddMemberUserIDRule(t *testing.T) {
	for _, backend := range []string{kvBackend, pgBackend} {
		t.Run(backend, func(t *testing.T) {
			s := startAPI(t, backend)
			s.expect(t, "POST", "/api/rooms", "alice", `{"id":"team"}`, http.StatusCreated, "")
			for _, tc := range userIDCases() {
				t.Run(tc.name, func(t *testing.T) {
					before := s.members(t, "team", "alice")
					body, _ := json.Marshal(map[string]string{"userId": tc.id})
					_, loginErr := s.verify.Verify(t.Context(), s.keys.HS(t, tc.id))
					if (loginErr == nil) != tc.valid {
						t.Fatalf("login with %q: %v, want valid %v", tc.id, loginErr, tc.valid)
					}
					if !tc.valid {
						s.expect(t, "POST", "/api/rooms/team/members", "alice", string(body), http.StatusBadRequest, invalidUserID)
						if s.isMember(t, "team", tc.id) {
							t.Fatalf("%q stored as a member", tc.id)
						}
						if after := s.members(t, "team", "alice"); !slices.Equal(after, before) {
							t.Fatalf("members %q, were %q", after, before)
						}
						return
					}
					s.expect(t, "POST", "/api/rooms/team/members", "alice", string(body), http.StatusCreated, "")
					if after := s.members(t, "team", "alice"); !slices.Contains(after, tc.id) || len(after) != len(before)+1 {
						t.Fatalf("members %q after adding %q, were %q", after, tc.id, before)
					}
					// The new member can use the room.
					s.expect(t, "GET", "/api/rooms/team", tc.id, "", http.StatusOK, "")
				})
			}
		})
	}
}

// TestRemoveMemberUserIDRule: a user id in the path is held to the same
// rule; a valid one is removed as before.
func TestRemoveMemberUserIDRule(t *testing.T) {
	for _, backend := range []string{kvBackend, pgBackend} {
		t.Run(backend, func(t *testing.T) {
			s := startAPI(t, backend)
			s.expect(t, "POST", "/api/rooms", "alice", `{"id":"team"}`, http.StatusCreated, "")
			cases := append(userIDCases(), userIDCase{"not UTF-8", "a\xffb", false})
			for _, tc := range cases {
				t.Run(tc.name, func(t *testing.T) {
					path := "/api/rooms/team/members/" + url.PathEscape(tc.id)
					if !tc.valid {
						s.expect(t, "DELETE", path, "alice", "", http.StatusBadRequest, invalidUserID)
						return
					}
					body, _ := json.Marshal(map[string]string{"userId": tc.id})
					s.expect(t, "POST", "/api/rooms/team/members", "alice", string(body), http.StatusCreated, "")
					s.expect(t, "DELETE", path, "alice", "", http.StatusNoContent, "")
					if s.isMember(t, "team", tc.id) {
						t.Fatalf("%q still a member", tc.id)
					}
				})
			}
			if got := s.members(t, "team", "alice"); !slices.Equal(got, []string{"alice"}) {
				t.Fatalf("members %q, want alice alone", got)
			}
		})
	}
}

// TestSearchMembersFirst: search tells a non-member what any room request
// does (403, or 404 for no such room) before whether it can search; only a
// member learns that the node has no archive.
func TestSearchMembersFirst(t *testing.T) {
	for _, backend := range []string{kvBackend, pgBackend, pgArchiveBackend} {
		t.Run(backend, func(t *testing.T) {
			s := startAPI(t, backend)
			s.expect(t, "POST", "/api/rooms", "alice", `{"id":"team"}`, http.StatusCreated, "")
			// A membership written to the store by a backend, in a room with
			// no record: its member may search it.
			if _, err := s.store.Join(context.Background(), "handmade", "bob", storage.RoleMember); err != nil {
				t.Fatal(err)
			}
			member := http.StatusNotImplemented
			memberMsg := "search needs the message archive (--postgres-url)"
			if backend == pgArchiveBackend {
				member, memberMsg = http.StatusOK, ""
			}
			for _, tc := range []struct {
				name, path, as string
				code           int
				msg            string
			}{
				{"non-member", "/api/rooms/team/search?q=hello", "mallory", http.StatusForbidden, "forbidden: not a member of room team"},
				{"missing room", "/api/rooms/nope/search?q=hello", "mallory", http.StatusNotFound, "room nope not found"},
				{"no token", "/api/rooms/team/search?q=hello", "", http.StatusUnauthorized, "unauthorized"},
				{"bad room id", "/api/rooms/a.b/search?q=hello", "mallory", http.StatusBadRequest, "invalid room id: 1 to 64 characters of [A-Za-z0-9_-]"},
				{"member", "/api/rooms/team/search?q=hello", "alice", member, memberMsg},
				{"member of a room without a record", "/api/rooms/handmade/search?q=hello", "bob", member, memberMsg},
				{"non-member of a room without a record", "/api/rooms/handmade/search?q=hello", "mallory", http.StatusForbidden, "forbidden: not a member of room handmade"},
			} {
				t.Run(tc.name, func(t *testing.T) {
					s.expect(t, "GET", tc.path, tc.as, "", tc.code, tc.msg)
				})
			}
		})
	}
}
