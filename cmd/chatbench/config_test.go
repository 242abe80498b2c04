package main

import (
	"context"
	"io"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestParseSources(t *testing.T) {
	cases := []struct {
		in   string
		want []string
		err  bool
	}{
		{in: "127.0.0.1", want: []string{"127.0.0.1"}},
		{in: "127.0.0.1,127.0.0.3-127.0.0.5", want: []string{"127.0.0.1", "127.0.0.3", "127.0.0.4", "127.0.0.5"}},
		{in: "127.0.0.254-127.0.1.1", want: []string{"127.0.0.254", "127.0.0.255", "127.0.1.0", "127.0.1.1"}},
		{in: "10.0.0.1", err: true},
		{in: "127.0.0.5-127.0.0.1", err: true},
		{in: "::1", err: true},
		{in: "127.0.0.1-10.0.0.1", err: true},
		{in: "localhost", err: true},
		{in: "", err: true},
	}
	for _, tc := range cases {
		got, err := parseSources(tc.in)
		if (err != nil) != tc.err {
			t.Errorf("parseSources(%q) error %v, want error %v", tc.in, err, tc.err)
			continue
		}
		var s []string
		for _, a := range got {
			s = append(s, a.String())
		}
		if !tc.err && !slices.Equal(s, tc.want) {
			t.Errorf("parseSources(%q) = %v, want %v", tc.in, s, tc.want)
		}
	}
}

func TestCheckLoopbackURL(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	for _, u := range []string{"ws://127.0.0.1:8080/ws", "ws://127.9.8.7/ws", "ws://[::1]:80/ws", "ws://localhost:1/ws", "http://127.0.0.1/ws"} {
		if err := checkLoopbackURL(ctx, u); err != nil {
			t.Errorf("%s refused: %v", u, err)
		}
	}
	for _, u := range []string{"ws://10.0.0.1/ws", "ws://192.168.1.1:8080/ws", "ws://[2001:db8::1]/ws", "wss://127.0.0.1/ws", "ws:///ws", "ws://0.0.0.0/ws"} {
		if err := checkLoopbackURL(ctx, u); err == nil {
			t.Errorf("%s accepted", u)
		}
	}
}

func TestParseConfigPresets(t *testing.T) {
	c, err := parseConfig([]string{"--scenario", "fanout", "--rate", "5", "--url", "ws://127.0.0.1:1/ws"}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	// The preset fills what was not given; the explicit --rate wins.
	if c.Rooms != 10 || c.Members != 100 || c.Publishers != 1 || !c.SeparatePublishers || c.Rate != 5 || c.Duration != 20*time.Second {
		t.Fatalf("fanout preset: %+v", c)
	}
	if c.Run == "" || !strings.Contains(c.RoomPrefix, c.Run) || c.Sources[0] != netip.MustParseAddr("127.0.0.1") {
		t.Fatalf("defaults: run %q room prefix %q sources %v", c.Run, c.RoomPrefix, c.Sources)
	}
	for _, bad := range [][]string{
		{"--scenario", "nope"},
		{"--url", "ws://10.1.1.1/ws"},
		{"--scenario", "chat", "--publishers", "6"},
		{"--scenario", "chat", "--body", "no token"},
		{"--scenario", "chat", "--send-dest", "/app/fixed"},
		{"--scenario", "custom"},
		{"--scenario", "idle", "--sources", "10.0.0.1"},
		{"--scenario", "chat", "--rate", "-1"},
		{"--scenario", "chat", "extra"},
	} {
		if _, err := parseConfig(bad, io.Discard); err == nil {
			t.Errorf("%v accepted", bad)
		}
	}
}
