package e2e_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
)

// chromiumPath is Debian's chromium, which .ci/run installs.
const chromiumPath = "/usr/bin/chromium"

// TestBrowserChat drives the chat page at / in a real headless Chromium:
// two users in two browser contexts chat, unread counts and read receipts
// move, history comes back after a reload, and a user cut off while the
// node restarts gets, once each, the messages the other sent meanwhile.
func TestBrowserChat(t *testing.T) {
	needChromium(t)
	n := startNode(t)
	// Bob reaches the node through a gate the test can shut, as a phone
	// loses its network; alice connects directly.
	gate := newGate(t, n.app.Addr())

	browser := startBrowser(t) // clients_test.go
	alice := newTab(t, browser, "alice", "http://"+n.app.Addr()+"/")
	bob := newTab(t, browser, "bob", "http://"+gate.addr()+"/")

	alice.login()
	alice.join("side")
	alice.join("lobby") // alice looks at lobby
	bob.login()
	bob.join("lobby")
	bob.join("side") // bob looks at side

	// Bob has not opened lobby: the message is unread for him, and his
	// lobby badge says so.
	alice.say("hello bob")
	alice.waitFor(`texts().join("|") === "hello bob"`, "her own message")
	bob.waitFor(`badge("lobby") === "1"`, "an unread badge of 1 on lobby")
	if got := alice.eval(`seen().join("|")`); got != "" {
		t.Fatalf("alice's message reads %q before bob has read it", got)
	}

	// Bob opens lobby: he reads it, and alice sees the receipt.
	bob.click(`#rooms li[data-room="lobby"] button`)
	bob.waitFor(`texts().join("|") === "hello bob"`, "alice's message")
	bob.waitFor(`badge("lobby") === ""`, "no badge on lobby once read")
	alice.waitFor(`seen().join("|") === "seen by 1"`, "bob's read receipt")

	bob.say("hi alice")
	alice.waitFor(`texts().join("|") === "hello bob|hi alice"`, "bob's reply")

	// A reload starts the page afresh: the history comes from the server.
	bob.reload()
	bob.waitFor(`connState() === "connected"`, "reconnected after the reload")
	bob.waitFor(`texts().join("|") === "hello bob|hi alice"`, "the history after a reload")

	// Bob loses his network, then the node restarts. Alice writes once
	// while the node is down (her page keeps it until it is stored) and
	// once while bob is still away.
	gate.shut()
	bob.waitFor(`connState() === "reconnecting"`, "the connection lost")
	n.stop()
	alice.waitFor(`connState() === "reconnecting"`, "the node gone")
	alice.say("sent while the node was down")
	alice.waitFor(`document.getElementById("unsent").textContent === "1 unsent"`, "the message held back")
	n.start()
	alice.waitFor(`connState() === "connected"`, "reconnected to the restarted node")
	alice.say("sent while bob was away")
	want := "hello bob|hi alice|sent while the node was down|sent while bob was away"
	alice.waitFor(`texts().join("|") === `+strconv.Quote(want), "every message, the held one sent once")
	alice.waitFor(`document.getElementById("unsent").hidden`, "nothing left unsent")
	if got := bob.eval(`connState() + " " + texts().join("|")`); got != "reconnecting hello bob|hi alice" {
		t.Fatalf("bob should still be away and have only the old messages, has %q", got)
	}

	gate.open()
	bob.waitFor(`connState() === "connected"`, "back online")
	bob.waitFor(`texts().join("|") === `+strconv.Quote(want), "what he missed, once each and in order")
	// The page resubscribed with since-id and chatd replayed from there.
	if got := scrape(t, n)[`chatd_replays_total{outcome="complete"}`]; got < 1 {
		t.Fatalf("no since-id replay after the reconnect: chatd_replays_total{outcome=\"complete\"} = %v", got)
	}
	if ids := bob.eval(`[...document.querySelectorAll("#messages li.msg")].map(li => li.dataset.id).join(",")`); len(strings.Split(ids, ",")) != 4 {
		t.Fatalf("bob's page shows message ids %s, want 4 distinct", ids)
	}
	// Bob has now read everything: alice sees his receipt on each of her
	// messages, and bob on his own; neither is ever "seen by" oneself.
	alice.waitFor(`seen().join("|") === "seen by 1||seen by 1|seen by 1"`, "bob's receipts on her messages")
	bob.waitFor(`seen().join("|") === "|seen by 1||"`, "alice's receipt on his message")
}

// needChromium skips the test without Debian's chromium, unless
// CHATD_REQUIRE_BROWSER says it must run.
func needChromium(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CHATD_REQUIRE_BROWSER") != "" {
			t.Fatalf("CHATD_REQUIRE_BROWSER is set but %s is missing: %v", chromiumPath, err)
		}
		t.Skipf("SKIPPED: %s not found; install it (apt-get install -y chromium) to run the browser test", chromiumPath)
	}
}

// tab is one user's page in a browser context of its own.
type tab struct {
	t    *testing.T
	ctx  context.Context
	user string
	url  string
}

func newTab(t *testing.T, browser context.Context, user, url string) *tab {
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext())
	t.Cleanup(cancel)
	return &tab{t: t, ctx: ctx, user: user, url: url}
}

// helpers are page-side shorthands the checks use.
const helpers = `
const connState = () => document.getElementById("status").dataset.state;
const texts = () => [...document.querySelectorAll("#messages li .text")].map(e => e.textContent);
const seen = () => [...document.querySelectorAll("#messages li.msg")].map(li => li.querySelector(".seen")?.textContent ?? "");
const badge = (room) => {
  const b = document.querySelector('#rooms li[data-room="' + room + '"] .badge');
  return b && !b.hidden ? b.textContent : "";
};
`

// pageExpr makes expr, which may use the helpers, one JavaScript expression.
func pageExpr(expr string) string { return "(() => {" + helpers + "return (" + expr + ");})()" }

func (tb *tab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %s: %v", tb.user, what, err)
	}
}

func (tb *tab) login() {
	tb.t.Helper()
	tb.do("open the page", chromedp.Navigate(tb.url))
	tb.do("log in",
		chromedp.SendKeys(chromedp.CSS("#name"), tb.user),
		chromedp.Click(chromedp.CSS(`#login button`)),
	)
	tb.waitFor(`connState() === "connected"`, "connected")
}

func (tb *tab) join(room string) {
	tb.t.Helper()
	// Dev mode: creating a room that exists joins it.
	tb.openDetails("#new-room")
	tb.do("join "+room,
		chromedp.SendKeys(chromedp.CSS("#room"), room),
		chromedp.Click(chromedp.CSS(`#create button`)),
	)
	tb.waitFor(`document.querySelector("#rooms li.current")?.dataset.room === `+strconv.Quote(room), "in room "+room)
}

// openDetails opens a <details> (a no-op if it is open).
func (tb *tab) openDetails(sel string) {
	tb.t.Helper()
	tb.eval(`document.querySelector(` + strconv.Quote(sel) + `).open = true`)
}

func (tb *tab) say(text string) {
	tb.t.Helper()
	tb.do("say "+text,
		chromedp.SendKeys(chromedp.CSS("#text"), text),
		chromedp.Click(chromedp.CSS(`#send button`)),
	)
}

// click clicks the element sel finds, in the page in one step: the room
// list is drawn anew as messages and receipts arrive, and an element
// found by one DevTools call may be gone by the next ("Could not find
// node with given id").
func (tb *tab) click(sel string) {
	tb.t.Helper()
	q, err := json.Marshal(sel)
	if err != nil {
		tb.t.Fatal(err)
	}
	_, err = chromedp.Run(tb.ctx, chromedp.Poll[bool](pageExpr(`(e => e ? (e.click(), true) : false)(document.querySelector(`+string(q)+`))`),
		chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		tb.t.Fatalf("%s: click %s: %v", tb.user, sel, err)
	}
}

func (tb *tab) reload() {
	tb.t.Helper()
	tb.do("reload", chromedp.Reload())
}

func (tb *tab) eval(expr string) string {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string](pageExpr("String("+expr+")")))
	if err != nil {
		tb.t.Fatalf("%s: evaluate %s: %v", tb.user, expr, err)
	}
	return v
}

// waitFor polls a condition in the page until it holds, for up to 20s.
func (tb *tab) waitFor(cond, what string) {
	tb.t.Helper()
	_, err := chromedp.Run(tb.ctx, chromedp.Poll[bool](pageExpr(cond),
		chromedp.WithPollingTimeout(20*time.Second), chromedp.WithPollingInterval(50*time.Millisecond)))
	if err != nil {
		page, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](pageExpr(
			`connState() + "\n" + document.body.innerText`)))
		tb.t.Fatalf("%s: waiting for %s (%s): %v\npage:\n%s", tb.user, what, cond, err, page)
	}
}

// gate is a TCP forwarder to the node that the test can shut (cutting
// every connection through it and refusing new ones) and open again.
type gate struct {
	t      *testing.T
	ln     net.Listener
	target string

	mu     sync.Mutex
	closed bool
	conns  map[net.Conn]struct{}
}

func newGate(t *testing.T, target string) *gate {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	g := &gate{t: t, ln: ln, target: target, conns: map[net.Conn]struct{}{}}
	var wg sync.WaitGroup
	t.Cleanup(func() {
		_ = ln.Close()
		g.shut()
		wg.Wait()
	})
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { g.forward(c) })
		}
	})
	return g
}

func (g *gate) addr() string { return g.ln.Addr().String() }

func (g *gate) track(cs ...net.Conn) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed {
		return false
	}
	for _, c := range cs {
		g.conns[c] = struct{}{}
	}
	return true
}

func (g *gate) forward(c net.Conn) {
	defer func() { _ = c.Close() }()
	up, err := net.DialTimeout("tcp", g.target, 5*time.Second)
	if err != nil {
		return // the node is down: the client sees the connection drop
	}
	defer func() { _ = up.Close() }()
	if !g.track(c, up) {
		return
	}
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		_, _ = io.Copy(dst, src)
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	// One side ended: end both, so the other copy returns too.
	_ = c.Close()
	_ = up.Close()
	<-done
	g.mu.Lock()
	delete(g.conns, c)
	delete(g.conns, up)
	g.mu.Unlock()
}

func (g *gate) shut() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = true
	for c := range g.conns {
		_ = c.Close()
	}
}

func (g *gate) open() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.closed = false
}

// scrape reads the node's /metrics into a map from series (name and
// labels, as exposed) to value.
func scrape(t testing.TB, n *node) map[string]float64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+n.app.Addr()+"/metrics", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("scrape /metrics: %v", err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("scrape /metrics: status %d, %v", resp.StatusCode, err)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(body)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("metrics line %q: %v", line, err)
		}
		out[line[:i]] = v
	}
	return out
}
