package postgres_test

import (
	"bytes"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/chatd/chatd/storage"
	"github.com/chatd/chatd/storage/postgres"
)

func TestArchiveReads(t *testing.T) {
	db := openDB(t, pgtest.NewDatabase(t))
	arch := db.Archive()
	c := ctx(t)
	var ids []uint64
	bodies := map[uint64][]byte{}
	words := []string{"alpha beta", "Gamma delta", "beta gamma", "epsilon", "the beta release", "zeta"}
	var rows []postgres.Row
	for i, w := range words {
		id := uint64(1000 + 2*i)
		ids = append(ids, id)
		bodies[id] = []byte(fmt.Sprintf(`{"message":%q}`, w))
		rows = append(rows,
			postgres.Row{ID: id, Room: "r", User: "alice", Text: w, CreatedAt: time.Now(), StoredAt: time.Now(), Data: bodies[id]},
			// another room's, with the same id (another partition's), never returned
			postgres.Row{ID: id, Room: "other", User: "bob", Text: w, CreatedAt: time.Now(), StoredAt: time.Now(), Data: []byte("x")})
	}
	if n, err := arch.Insert(c, rows); err != nil || n != int64(len(rows)) {
		t.Fatalf("Insert: %d rows, %v", n, err)
	}
	// Again, as a redelivered batch is: nothing twice.
	if n, err := arch.Insert(c, rows[:3]); err != nil || n != 0 {
		t.Fatalf("Insert again: %d rows, %v", n, err)
	}
	seqs := func(msgs []storage.Message, err error) []uint64 {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		out := make([]uint64, len(msgs))
		for i, m := range msgs {
			if m.Room != "r" || m.Time.IsZero() || !bytes.Equal(m.Data, bodies[m.ID]) {
				t.Fatalf("archived message %+v", m)
			}
			out[i] = m.ID
		}
		return out
	}
	if got := seqs(arch.Before(c, "r", 0, 4)); !slices.Equal(got, ids[2:]) {
		t.Fatalf("newest 4: %v, want %v", got, ids[2:])
	}
	if got := seqs(arch.Before(c, "r", ids[3], 10)); !slices.Equal(got, ids[:3]) {
		t.Fatalf("before %d: %v, want %v", ids[3], got, ids[:3])
	}
	if got := seqs(arch.Between(c, "r", ids[0], ids[4], 2)); !slices.Equal(got, ids[1:3]) {
		t.Fatalf("between: %v, want %v", got, ids[1:3])
	}
	for q, want := range map[string][]uint64{
		"beta":            {ids[4], ids[2], ids[0]},
		"GAMMA":           {ids[2], ids[1]},
		"beta gamma":      {ids[2]},
		`"gamma delta"`:   {ids[1]},
		"beta -gamma":     {ids[4], ids[0]},
		"beta OR epsilon": {ids[4], ids[3], ids[2], ids[0]},
		"bet":             nil, // words, not prefixes
	} {
		if got := seqs(arch.Search(c, "r", q, 0, 10)); !slices.Equal(got, want) {
			t.Fatalf("search %q: %v, want %v", q, got, want)
		}
	}
	if got := seqs(arch.Search(c, "r", "beta", ids[4], 1)); !slices.Equal(got, []uint64{ids[2]}) {
		t.Fatalf("second page of beta: %v", got)
	}
}

// TestArchiveKeepsAnyText: text PostgreSQL refuses (NUL, invalid UTF-8)
// is stored readable, the row's data keeping the original bytes.
func TestArchiveKeepsAnyText(t *testing.T) {
	url := pgtest.NewDatabase(t)
	db := openDB(t, url)
	c := ctx(t)
	raw := []byte("nul\x00byte and bad utf-8 \xff")
	row := postgres.Row{ID: 7, Room: "r", User: "mal\x00lory", Text: string(raw), CreatedAt: time.Now(), StoredAt: time.Now(), Data: raw}
	if _, err := db.Archive().Insert(c, []postgres.Row{row}); err != nil {
		t.Fatal(err)
	}
	var user, text string
	var data []byte
	if err := sqlConn(t, url).QueryRow(c, "SELECT user_id, message, data FROM messages WHERE id = 7").Scan(&user, &text, &data); err != nil {
		t.Fatal(err)
	}
	if user != "mallory" || text != "nulbyte and bad utf-8 \uFFFD" || !bytes.Equal(data, raw) {
		t.Fatalf("archived as %q by %q with data %q", text, user, data)
	}
}

// TestArchiveCount: each span counts its own room's archived ids in it,
// up to the limit, in the order asked.
func TestArchiveCount(t *testing.T) {
	db := openDB(t, pgtest.NewDatabase(t))
	arch := db.Archive()
	c := ctx(t)
	var rows []postgres.Row
	for i := range 40 {
		// r: ids 10, 20, ..., 400; other: the same ids and more between.
		rows = append(rows, postgres.Row{ID: uint64(10 * (i + 1)), Room: "r", CreatedAt: time.Now(), StoredAt: time.Now(), Data: []byte("{}")},
			postgres.Row{ID: uint64(10 * (i + 1)), Room: "other", CreatedAt: time.Now(), StoredAt: time.Now(), Data: []byte("{}")},
			postgres.Row{ID: uint64(10*(i+1) + 5), Room: "other", CreatedAt: time.Now(), StoredAt: time.Now(), Data: []byte("{}")})
	}
	if _, err := arch.Insert(c, rows); err != nil {
		t.Fatal(err)
	}
	spans := []storage.RoomSpan{
		{Room: "r", After: 0, UpTo: 400},     // all 40
		{Room: "r", After: 10, UpTo: 20},     // 20
		{Room: "r", After: 15, UpTo: 55},     // 20, 30, 40, 50
		{Room: "other", After: 15, UpTo: 55}, // 20, 25, ..., 55
		{Room: "r", After: 400, UpTo: 1000},  // none
		{Room: "nobody", After: 0, UpTo: 1000},
		{Room: "r", After: 0, UpTo: 9},
	}
	got, err := arch.Count(c, spans, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if want := []int{40, 1, 4, 8, 0, 0, 0}; !slices.Equal(got, want) {
		t.Fatalf("counts %v, want %v", got, want)
	}
	// The limit stops a count, not the others.
	if got, err = arch.Count(c, spans, 5); err != nil || !slices.Equal(got, []int{5, 1, 4, 5, 0, 0, 0}) {
		t.Fatalf("counts up to 5: %v %v", got, err)
	}
	if got, err = arch.Count(c, nil, 5); err != nil || len(got) != 0 {
		t.Fatalf("no spans: %v %v", got, err)
	}
}

// TestArchiveHas: a message is held by its room and id.
func TestArchiveHas(t *testing.T) {
	db := openDB(t, pgtest.NewDatabase(t))
	arch := db.Archive()
	c := ctx(t)
	if _, err := arch.Insert(c, []postgres.Row{{ID: 7, Room: "r", CreatedAt: time.Now(), StoredAt: time.Now(), Data: []byte("{}")}}); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		room string
		id   uint64
		want bool
	}{{"r", 7, true}, {"r", 8, false}, {"other", 7, false}} {
		if got, err := arch.Has(c, tc.room, tc.id); err != nil || got != tc.want {
			t.Fatalf("Has(%s, %d) = %v %v, want %v", tc.room, tc.id, got, err, tc.want)
		}
	}
}
