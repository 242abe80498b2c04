package e2e_test

import (
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/internal/testkit/jwttest"
	"github.com/chatd/chatd/storage"
)

// roomCall is one rooms API request and the answer it must get.
type roomCall struct {
	name, method, path, as, body string
	code                         int
	msg                          string // prefix of the JSON error, for error codes
}

func (tc roomCall) run(t *testing.T, n *node, tokens map[string]string) {
	t.Helper()
	var e struct{ Error string }
	if code := api(t, n, tc.method, tc.path, tokens[tc.as], tc.body, &e); code != tc.code || tc.code >= 400 && !strings.HasPrefix(e.Error, tc.msg) {
		t.Fatalf("%s: %s %s as %q: %d %q, want %d %q", tc.name, tc.method, tc.path, tc.as, code, e.Error, tc.code, tc.msg)
	}
}

func roleOf(info chat.RoomInfo, user string) storage.Role {
	for _, m := range info.Members {
		if m.UserID == user {
			return m.Role
		}
	}
	return ""
}

// TestRoomsAPI walks the room lifecycle through the HTTP API with real
// signed tokens: create, read, add and remove members under the role
// rules, with every refusal's status.
func TestRoomsAPI(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k)
	const odd = "x/y?z#" // a user id that needs path escaping
	tokens := map[string]string{"": ""}
	for _, u := range []string{"alice", "bob", "carol", "dave", "mallory", odd} {
		tokens[u] = k.HS(t, u)
	}

	var created chat.RoomInfo
	if code := api(t, n, "POST", "/api/rooms", tokens["alice"], `{"id":"team","name":"The Team"}`, &created); code != 201 ||
		created.ID != "team" || created.Name != "The Team" || created.CreatedBy != "alice" ||
		len(created.Members) != 1 || roleOf(created, "alice") != storage.RoleOwner {
		t.Fatalf("create: %d %+v", code, created)
	}
	var anon chat.RoomInfo
	if code := api(t, n, "POST", "/api/rooms", tokens["bob"], `{}`, &anon); code != 201 ||
		!regexp.MustCompile(`^[A-Za-z0-9_-]{16}$`).MatchString(anon.ID) || anon.Name != anon.ID || roleOf(anon, "bob") != storage.RoleOwner {
		t.Fatalf("create without id: %d %+v", code, anon)
	}

	for _, tc := range []roomCall{
		{"no token", "POST", "/api/rooms", "", `{"id":"x"}`, 401, "unauthorized"},
		{"no token, list", "GET", "/api/rooms", "", "", 401, "unauthorized"},
		{"no token, get", "GET", "/api/rooms/team", "", "", 401, "unauthorized"},
		{"taken id", "POST", "/api/rooms", "bob", `{"id":"team"}`, 409, "room team exists already"},
		{"bad id", "POST", "/api/rooms", "bob", `{"id":"a.b"}`, 400, "invalid room id"},
		{"long name", "POST", "/api/rooms", "bob", `{"id":"long","name":"` + strings.Repeat("n", 201) + `"}`, 400, "invalid room name"},
		{"unknown field", "POST", "/api/rooms", "bob", `{"id":"x","owner":"bob"}`, 400, "invalid body"},
		{"not JSON", "POST", "/api/rooms", "bob", `id=x`, 400, "invalid body"},
		{"missing room", "GET", "/api/rooms/nope", "alice", "", 404, "room nope not found"},
		{"non-member get", "GET", "/api/rooms/team", "mallory", "", 403, "forbidden: not a member of room team"},
		{"non-member adds", "POST", "/api/rooms/team/members", "mallory", `{"userId":"mallory"}`, 403, "forbidden: not a member of room team"},
		{"add to missing room", "POST", "/api/rooms/nope/members", "alice", `{"userId":"bob"}`, 404, "room nope not found"},
		{"owner adds admin", "POST", "/api/rooms/team/members", "alice", `{"userId":"bob","role":"admin"}`, 201, ""},
		{"add twice", "POST", "/api/rooms/team/members", "alice", `{"userId":"bob"}`, 409, "bob is a member of room team already"},
		{"admin adds member", "POST", "/api/rooms/team/members", "bob", `{"userId":"carol"}`, 201, ""},
		{"admin adds admin", "POST", "/api/rooms/team/members", "bob", `{"userId":"dave","role":"admin"}`, 403, "forbidden: only the owner of room team may add admins"},
		{"role owner", "POST", "/api/rooms/team/members", "alice", `{"userId":"dave","role":"owner"}`, 400, "invalid role"},
		{"no user", "POST", "/api/rooms/team/members", "alice", `{"role":"member"}`, 400, "invalid user id"},
		{"member adds", "POST", "/api/rooms/team/members", "carol", `{"userId":"dave"}`, 403, "forbidden: only the owner or an admin of room team may manage members"},
		{"user id login refuses", "POST", "/api/rooms/team/members", "alice", `{"userId":"x/y z"}`, 400, "invalid user id: " + chat.UserIDRule},
		{"remove id login refuses", "DELETE", "/api/rooms/team/members/" + url.PathEscape("x/y z"), "alice", "", 400, "invalid user id: " + chat.UserIDRule},
		{"odd user added", "POST", "/api/rooms/team/members", "alice", `{"userId":"x/y?z#"}`, 201, ""},
		{"member removes", "DELETE", "/api/rooms/team/members/" + url.PathEscape(odd), "carol", "", 403, "forbidden: only the owner or an admin"},
		{"admin leaves", "DELETE", "/api/rooms/team/members/bob", "bob", "", 204, ""},
		{"owner re-adds admin", "POST", "/api/rooms/team/members", "alice", `{"userId":"bob","role":"admin"}`, 201, ""},
		{"admin removes owner", "DELETE", "/api/rooms/team/members/alice", "bob", "", 409, "the owner of room team cannot be removed"},
		{"owner leaves", "DELETE", "/api/rooms/team/members/alice", "alice", "", 409, "the owner of room team cannot be removed"},
		{"remove non-member", "DELETE", "/api/rooms/team/members/dave", "bob", "", 404, "dave is not a member of room team"},
		{"non-member removes", "DELETE", "/api/rooms/team/members/carol", "mallory", "", 403, "forbidden: not a member of room team"},
		{"admin removes odd user", "DELETE", "/api/rooms/team/members/" + url.PathEscape(odd), "bob", "", 204, ""},
		{"owner adds dave", "POST", "/api/rooms/team/members", "alice", `{"userId":"dave"}`, 201, ""},
		{"dave leaves", "DELETE", "/api/rooms/team/members/dave", "dave", "", 204, ""},
	} {
		tc.run(t, n, tokens)
	}
	// Removing an admin is the owner's to do: add one and let another try.
	roomCall{"owner adds 2nd admin", "POST", "/api/rooms/team/members", "alice", `{"userId":"dave","role":"admin"}`, 201, ""}.run(t, n, tokens)
	roomCall{"admin removes other admin", "DELETE", "/api/rooms/team/members/dave", "bob", "", 403, "forbidden: only the owner of room team may remove admins"}.run(t, n, tokens)

	var info chat.RoomInfo
	if code := api(t, n, "GET", "/api/rooms/team", tokens["carol"], "", &info); code != 200 || info.Name != "The Team" {
		t.Fatalf("get: %d %+v", code, info)
	}
	got := map[string]storage.Role{}
	for _, m := range info.Members {
		got[m.UserID] = m.Role
	}
	want := map[string]storage.Role{"alice": storage.RoleOwner, "bob": storage.RoleAdmin, "carol": storage.RoleMember, "dave": storage.RoleAdmin}
	if len(got) != len(want) {
		t.Fatalf("members %v, want %v", got, want)
	}
	for u, r := range want {
		if got[u] != r {
			t.Fatalf("members %v, want %v", got, want)
		}
	}
}

// TestRoomsAPIMembersMatter: members added through the API may use the room
// over STOMP; removal through the API ends a live subscription at once.
func TestRoomsAPIMembersMatter(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k)
	alice, carol := k.HS(t, "alice"), k.HS(t, "carol")
	roomCall{"create", "POST", "/api/rooms", "alice", `{"id":"team"}`, 201, ""}.run(t, n, map[string]string{"alice": alice})

	r := dialRaw(t, n)
	expectConnected(t, r.ConnectWith("passcode:"+carol), "carol")
	r.Send("SUBSCRIBE\nid:s\ndestination:/topic/chat.team\n\n\x00")
	r.ExpectError("forbidden: not a member of room team")

	roomCall{"add", "POST", "/api/rooms/team/members", "alice", `{"userId":"carol"}`, 201, ""}.run(t, n, map[string]string{"alice": alice})
	r = dialRaw(t, n)
	expectConnected(t, r.ConnectWith("passcode:"+carol), "carol")
	r.Send("SUBSCRIBE\nid:s\ndestination:/topic/chat.team\nreceipt:s\n\n\x00")
	if f := r.Frame(); f.Command != "RECEIPT" {
		t.Fatalf("member SUBSCRIBE: %s %v", f.Command, f.Header)
	}
	roomCall{"remove", "DELETE", "/api/rooms/team/members/carol", "alice", "", 204, ""}.run(t, n, map[string]string{"alice": alice})
	r.ExpectError("forbidden: no longer a member of room team")
}

// TestRoomsAPIList: GET /api/rooms lists the caller's rooms, the most
// recently active first, with unread counts, read positions and the
// newest message.
func TestRoomsAPIList(t *testing.T) {
	k := jwttest.NewKeys(t)
	n := startJWTNode(t, k)
	tokens := map[string]string{"alice": k.HS(t, "alice"), "bob": k.HS(t, "bob"), "mallory": k.HS(t, "mallory")}
	for _, room := range []string{"team", "quiet", "later"} {
		roomCall{"create " + room, "POST", "/api/rooms", "alice", `{"id":"` + room + `","name":"Room ` + room + `"}`, 201, ""}.run(t, n, tokens)
		roomCall{"add bob to " + room, "POST", "/api/rooms/" + room + "/members", "alice", `{"userId":"bob"}`, 201, ""}.run(t, n, tokens)
	}
	a := dialRaw(t, n)
	expectConnected(t, a.ConnectWith("passcode:"+tokens["alice"]), "alice")
	for i := range 3 {
		if f := sendFrame(a, "/app/chat.team", msgBody("m"+strconv.Itoa(i))); f.Command != "RECEIPT" {
			t.Fatalf("SEND: %s %v", f.Command, f.Header)
		}
	}
	var page []chat.Message
	if code := api(t, n, "GET", "/api/rooms/team/messages", tokens["bob"], "", &page); code != 200 || len(page) != 3 {
		t.Fatalf("history: %d %+v", code, page)
	}
	roomCall{"bob reads m0", "POST", "/api/rooms/team/read", "bob", `{"lastReadId":` + strconv.FormatUint(page[0].ID, 10) + `}`, 200, ""}.run(t, n, tokens)
	if f := sendFrame(a, "/app/chat.later", msgBody("newest")); f.Command != "RECEIPT" {
		t.Fatalf("SEND: %s %v", f.Command, f.Header)
	}

	var rooms []chat.RoomSummary
	if code := api(t, n, "GET", "/api/rooms", tokens["bob"], "", &rooms); code != 200 || len(rooms) != 3 {
		t.Fatalf("list: %d %+v", code, rooms)
	}
	later, team, quiet := rooms[0], rooms[1], rooms[2]
	if later.ID != "later" || later.Name != "Room later" || later.UnreadCount != 1 || later.LastMessage == nil || later.LastMessage.Message != "newest" {
		t.Fatalf("first: %+v", later)
	}
	if team.ID != "team" || team.Role != storage.RoleMember || team.UnreadCount != 2 || team.LastReadID != page[0].ID ||
		team.LastMessage == nil || team.LastMessage.ID != page[2].ID || team.LastMessage.UserID != "alice" {
		t.Fatalf("second: %+v", team)
	}
	if quiet.ID != "quiet" || quiet.UnreadCount != 0 || quiet.LastMessage != nil {
		t.Fatalf("third: %+v", quiet)
	}
	if code := api(t, n, "GET", "/api/rooms", tokens["alice"], "", &rooms); code != 200 || len(rooms) != 3 || rooms[0].Role != storage.RoleOwner {
		t.Fatalf("alice's list: %d %+v", code, rooms)
	}
	if code := api(t, n, "GET", "/api/rooms", tokens["mallory"], "", &rooms); code != 200 || len(rooms) != 0 {
		t.Fatalf("mallory's list: %d %+v", code, rooms)
	}
}

// TestRoomsAPIDevMode: in dev mode a room used over STOMP exists, owned by
// its first user, and later users are members.
func TestRoomsAPIDevMode(t *testing.T) {
	n := startNode(t)
	dial(t, n, "alice").post("lobby", "hello")
	dial(t, n, "bob").post("lobby", "hi")
	var info chat.RoomInfo
	if code := api(t, n, "GET", "/api/rooms/lobby", "bob", "", &info); code != 200 || info.CreatedBy != "alice" ||
		roleOf(info, "alice") != storage.RoleOwner || roleOf(info, "bob") != storage.RoleMember {
		t.Fatalf("dev room: %d %+v", code, info)
	}
	var rooms []chat.RoomSummary
	if code := api(t, n, "GET", "/api/rooms", "bob", "", &rooms); code != 200 || len(rooms) != 1 || rooms[0].LastMessage == nil || rooms[0].LastMessage.Message != "hi" {
		t.Fatalf("dev list: %d %+v", code, rooms)
	}
}
