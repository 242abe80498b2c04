package chat

import (
	"cmp"
	"context"
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"time"
	"unicode/utf8"

	"github.com/chatd/chatd/storage"
)

// maxRoomName bounds a room's display name, in bytes.
const maxRoomName = 200

// RoomInfo is a room as the rooms API shows it.
type RoomInfo struct {
	ID        string       `json:"id"`
	Name      string       `json:"name"`
	CreatedBy string       `json:"createdBy"`
	CreatedAt string       `json:"createdAt"`
	Members   []MemberInfo `json:"members"`
}

// MemberInfo is one membership as the rooms API shows it.
type MemberInfo struct {
	UserID   string       `json:"userId"`
	Role     storage.Role `json:"role"`
	JoinedAt string       `json:"joinedAt"`
}

// RoomSummary is one entry of a user's room list.
type RoomSummary struct {
	ID   string       `json:"id"`
	Name string       `json:"name"`
	Role storage.Role `json:"role"`
	// UnreadCount is how many of the room's messages have ids above
	// LastReadID (the user's own included).
	UnreadCount uint64   `json:"unreadCount"`
	LastReadID  uint64   `json:"lastReadId"`
	LastMessage *Message `json:"lastMessage"`
}

func memberInfo(m storage.Member) MemberInfo {
	return MemberInfo{UserID: m.User, Role: m.Role, JoinedAt: formatTime(m.JoinedAt)}
}

// CreateRoom creates a room with user as its owner. An empty id gets a
// random one; an empty name is the id.
func (s *Service) CreateRoom(ctx context.Context, user, id, name string) (RoomInfo, error) {
	// The owner is the room's first member: held to the rule like any other.
	if err := checkUserID(user); err != nil {
		return RoomInfo{}, err
	}
	if id == "" {
		var b [12]byte
		_, _ = rand.Read(b[:]) // crypto/rand.Read never fails
		id = base64.RawURLEncoding.EncodeToString(b[:])
	}
	if !ValidRoomID(id) {
		return RoomInfo{}, errInvalidRoom
	}
	if name == "" {
		name = id
	}
	if !utf8.ValidString(name) || len(name) > maxRoomName {
		return RoomInfo{}, errorf(Invalid, "invalid room name: at most %d bytes of UTF-8", maxRoomName)
	}
	rm := storage.Room{ID: id, Name: name, CreatedBy: user, CreatedAt: time.Now().UTC()}
	err := s.store.CreateRoom(ctx, rm)
	if errors.Is(err, storage.ErrExists) {
		return RoomInfo{}, errorf(Conflict, "room %s exists already", id)
	}
	if err != nil {
		return RoomInfo{}, fmt.Errorf("create room: %w", err)
	}
	return s.roomInfo(ctx, rm)
}

// Room returns a room and its members; only members may see it.
func (s *Service) Room(ctx context.Context, user, id string) (RoomInfo, error) {
	if !ValidRoomID(id) {
		return RoomInfo{}, errInvalidRoom
	}
	rm, err := s.room(ctx, id)
	if err != nil {
		return RoomInfo{}, err
	}
	if err := s.authorize(ctx, id, user); err != nil {
		return RoomInfo{}, err
	}
	return s.roomInfo(ctx, rm)
}

func (s *Service) room(ctx context.Context, id string) (storage.Room, error) {
	rm, err := s.store.Room(ctx, id)
	if errors.Is(err, storage.ErrNotFound) {
		return rm, errorf(NotFound, "room %s not found", id)
	}
	if err != nil {
		return rm, fmt.Errorf("room %s: %w", id, err)
	}
	return rm, nil
}

func (s *Service) roomInfo(ctx context.Context, rm storage.Room) (RoomInfo, error) {
	members, err := s.store.Members(ctx, rm.ID)
	if err != nil {
		return RoomInfo{}, fmt.Errorf("members of %s: %w", rm.ID, err)
	}
	info := RoomInfo{ID: rm.ID, Name: rm.Name, CreatedBy: rm.CreatedBy, CreatedAt: formatTime(rm.CreatedAt),
		Members: make([]MemberInfo, len(members))}
	for i, m := range members {
		info.Members[i] = memberInfo(m)
	}
	return info, nil
}

// AddMember makes user a member of room with role, on behalf of actor, who
// must be its owner or an admin; only the owner makes admins. user must be
// a valid user id (ValidUserID): a member who could never log in would
// still be counted in every unread count.
func (s *Service) AddMember(ctx context.Context, actor, room, user string, role storage.Role) (MemberInfo, error) {
	if role == "" {
		role = storage.RoleMember
	}
	if role != storage.RoleMember && role != storage.RoleAdmin {
		return MemberInfo{}, errorf(Invalid, "invalid role: member or admin")
	}
	if err := checkUserID(user); err != nil {
		return MemberInfo{}, err
	}
	if !ValidRoomID(room) {
		return MemberInfo{}, errInvalidRoom
	}
	if _, err := s.room(ctx, room); err != nil {
		return MemberInfo{}, err
	}
	by, err := s.manager(ctx, actor, room)
	if err != nil {
		return MemberInfo{}, err
	}
	if role == storage.RoleAdmin && by.Role != storage.RoleOwner {
		return MemberInfo{}, errorf(Forbidden, "forbidden: only the owner of room %s may add admins", room)
	}
	added, err := s.store.Join(ctx, room, user, role)
	if err != nil {
		return MemberInfo{}, fmt.Errorf("add member: %w", err)
	}
	if !added {
		return MemberInfo{}, errorf(Conflict, "%s is a member of room %s already", user, room)
	}
	m, ok, err := s.store.Membership(ctx, room, user)
	if err != nil || !ok {
		return MemberInfo{}, fmt.Errorf("read back membership of %s in %s: %w", user, room, cmp.Or(err, errors.New("gone")))
	}
	return memberInfo(m), nil
}

// RemoveMember ends user's membership of room, on behalf of actor: anyone
// may leave; the owner or an admin may remove a member, and only the owner
// an admin. The owner stays. The user's live subscriptions to the room end
// on every node (storage.LeaveNotifier). user must be a valid user id, as
// for AddMember; a membership stored under any other (written to the store
// by hand) is for the store's own tools to remove.
func (s *Service) RemoveMember(ctx context.Context, actor, room, user string) error {
	if !ValidRoomID(room) {
		return errInvalidRoom
	}
	if err := checkUserID(user); err != nil {
		return err
	}
	if _, err := s.room(ctx, room); err != nil {
		return err
	}
	target, ok, err := s.store.Membership(ctx, room, user)
	if err != nil {
		return fmt.Errorf("membership of %s in %s: %w", user, room, err)
	}
	if actor != user {
		by, err := s.manager(ctx, actor, room)
		if err != nil {
			return err
		}
		if ok && target.Role == storage.RoleAdmin && by.Role != storage.RoleOwner {
			return errorf(Forbidden, "forbidden: only the owner of room %s may remove admins", room)
		}
	}
	if !ok {
		return errorf(NotFound, "%s is not a member of room %s", user, room)
	}
	if target.Role == storage.RoleOwner {
		return errorf(Conflict, "the owner of room %s cannot be removed", room)
	}
	if err := s.store.Leave(ctx, room, user); err != nil {
		return fmt.Errorf("remove member: %w", err)
	}
	return nil
}

// authorizeRoom is authorize that tells a non-member whether the room
// exists: Forbidden if it does, NotFound if not, as the other room
// requests answer.
func (s *Service) authorizeRoom(ctx context.Context, room, user string) error {
	err := s.authorize(ctx, room, user)
	if KindOf(err) != Forbidden {
		return err
	}
	_, rerr := s.room(ctx, room)
	if KindOf(rerr) != NotFound {
		return cmp.Or(rerr, err)
	}
	// A backend may make a room by writing its memberships to the store,
	// with no record: it exists while it has members.
	members, merr := s.store.Members(ctx, room)
	if merr != nil {
		return fmt.Errorf("members of %s: %w", room, merr)
	}
	if len(members) > 0 {
		return err
	}
	return rerr
}

// manager returns actor's membership of room if it lets them manage
// members.
func (s *Service) manager(ctx context.Context, actor, room string) (storage.Member, error) {
	m, ok, err := s.store.Membership(ctx, room, actor)
	if err != nil {
		return m, fmt.Errorf("membership of %s in %s: %w", actor, room, err)
	}
	if !ok {
		return m, notMember(room)
	}
	if m.Role != storage.RoleOwner && m.Role != storage.RoleAdmin {
		return m, errorf(Forbidden, "forbidden: only the owner or an admin of room %s may manage members", room)
	}
	return m, nil
}

// UserRooms lists user's rooms, the most recently active first, each with
// its unread count and newest message. The rooms' names, the user's roles
// and read positions come from the store in one call, their newest
// messages and unread counts from the log in one call, for all of them.
func (s *Service) UserRooms(ctx context.Context, user string) ([]RoomSummary, error) {
	rooms, err := s.store.UserRooms(ctx, user)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", user, err)
	}
	out := make([]RoomSummary, len(rooms))
	marks := make([]storage.RoomMark, len(rooms))
	for i, r := range rooms {
		out[i] = RoomSummary{ID: r.ID, Name: cmp.Or(r.Name, r.ID), Role: r.Role, LastReadID: r.Read}
		marks[i] = storage.RoomMark{Room: r.ID, Read: r.Read}
	}
	tails, err := s.roomTails(ctx, marks)
	if err != nil {
		return nil, fmt.Errorf("rooms of %s: %w", user, err)
	}
	for i, t := range tails {
		out[i].UnreadCount = t.Unread
		if t.Latest == nil {
			continue
		}
		msgs, _, err := s.chatMessages(ctx, out[i].ID, []storage.Message{*t.Latest})
		if err != nil {
			return nil, err
		}
		if len(msgs) == 1 {
			out[i].LastMessage = &msgs[0]
		}
	}
	// Newest message first, by the time the log stored it (ids of rooms
	// in different partitions do not compare); rooms without messages
	// after, by name.
	at := make(map[string]time.Time, len(tails))
	for i, t := range tails {
		if t.Latest != nil {
			at[rooms[i].ID] = t.Latest.Time
		}
	}
	slices.SortStableFunc(out, func(a, b RoomSummary) int {
		return cmp.Or(at[b.ID].Compare(at[a.ID]), cmp.Compare(a.Name, b.Name))
	})
	return out, nil
}

// archiveCountLimit bounds a room's unread count in the archive, which
// walks one index entry per message: a room further behind is counted by
// the log, whose count adds whole blocks' totals.
const archiveCountLimit = 256

// roomTails is the log's RoomTails, with the unread messages that the
// archive reaches counted there, by its index of each room's ids; the log
// counts only those above the reach (normally the last moments'), whose
// count walks the blocks the room shares with every other. The log's
// newest messages come first, so that the archive counts only the rooms
// that have unread messages. Without the archive, or when it cannot
// answer, the log counts them all.
func (s *Service) roomTails(ctx context.Context, marks []storage.RoomMark) ([]storage.RoomTail, error) {
	if s.cfg.Archive == nil || len(marks) == 0 {
		return s.msgs.RoomTails(ctx, marks)
	}
	rooms := make([]string, len(marks))
	for i, m := range marks {
		rooms[i] = m.Room
	}
	reach, err := s.cfg.Archive.Reach(ctx, rooms)
	if err != nil {
		s.log.Debug("archive reach unknown; unread counts from the log", "err", err)
		return s.msgs.RoomTails(ctx, marks)
	}
	above := make([]storage.RoomMark, len(marks))
	for i, m := range marks {
		above[i] = storage.RoomMark{Room: m.Room, Read: max(m.Read, reach[i])}
	}
	tails, err := s.msgs.RoomTails(ctx, above)
	if err != nil {
		return nil, err
	}
	// The archive counts (mark, reach] where the room has messages there:
	// its newest is above the mark, or the log holds none of it any more.
	var spans []storage.RoomSpan
	var spanOf []int
	for i, m := range marks {
		latest := tails[i].Latest
		if reach[i] > m.Read && (latest == nil || latest.ID > m.Read) {
			upTo := reach[i]
			if latest != nil {
				upTo = min(upTo, latest.ID)
			}
			spans = append(spans, storage.RoomSpan{Room: m.Room, After: m.Read, UpTo: upTo})
			spanOf = append(spanOf, i)
		}
	}
	if len(spans) == 0 {
		return tails, nil
	}
	counts, err := s.cfg.Archive.Count(ctx, spans, archiveCountLimit)
	if err != nil {
		s.log.Warn("archive count failed; unread counts from the log", "err", err)
		return s.msgs.RoomTails(ctx, marks)
	}
	var far []storage.RoomMark
	var farOf []int
	for j, i := range spanOf {
		if counts[j] >= archiveCountLimit {
			far, farOf = append(far, marks[i]), append(farOf, i)
			continue
		}
		tails[i].Unread += uint64(counts[j])
		if tails[i].Latest == nil && counts[j] > 0 {
			// The log has dropped all of the room: its newest is archived.
			newest, err := s.cfg.Archive.Before(ctx, marks[i].Room, 0, 1)
			if err != nil {
				return nil, fmt.Errorf("newest archived message of %s: %w", marks[i].Room, err)
			}
			if len(newest) == 1 {
				tails[i].Latest = &newest[0]
			}
		}
	}
	if len(far) > 0 {
		counted, err := s.msgs.RoomTails(ctx, far)
		if err != nil {
			return nil, err
		}
		for j, i := range farOf {
			tails[i].Unread = counted[j].Unread
		}
	}
	return tails, nil
}
