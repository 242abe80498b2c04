package e2e_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/chat"
	"github.com/chatd/chatd/config"
	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/coder/websocket"
)

// The client tests drive the STOMP clients that Spring apps use, unchanged,
// against a real node: sockjs-client 1.6.1 with stompjs 2.3.3, and
// @stomp/stompjs 7 over SockJS and over the raw WebSocket, under Node
// (e2e/clients/run.js) and in headless Chromium (e2e/clients/page.html).
// e2e/clients/scenario.js plays the same scenario in both and reports what
// happened; these tests judge it.

// clientsDir holds the scripts and, once `npm ci` ran there, the libraries.
const clientsDir = "clients"

// clientPackages are what e2e/clients/package.json installs.
var clientPackages = []string{"sockjs-client", "stompjs", "@stomp/stompjs", "ws"}

// clientCombos are every client library with every transport it can use.
var clientCombos = []struct{ client, transport string }{
	{"stompjs2-sockjs", "websocket"},
	{"stompjs2-sockjs", "xhr-streaming"},
	{"stompjs2-sockjs", "xhr-polling"},
	{"stompjs7-sockjs", "websocket"},
	{"stompjs7-sockjs", "xhr-streaming"},
	{"stompjs7-sockjs", "xhr-polling"},
	{"stompjs7-ws", "raw"},
}

// needClientLibs skips the test, saying how to install them, when the
// client libraries are not installed; with CHATD_REQUIRE_NODE set (as in
// CI) it fails instead.
func needClientLibs(t *testing.T) {
	t.Helper()
	const fix = "install the client libraries with `cd e2e/clients && npm ci`"
	if _, err := os.Stat(filepath.Join(clientsDir, "node_modules")); err != nil {
		missing(t, "e2e/clients/node_modules is missing; "+fix)
	}
	for _, p := range clientPackages {
		if _, err := os.Stat(filepath.Join(clientsDir, "node_modules", p, "package.json")); err != nil {
			missing(t, "e2e/clients/node_modules/"+p+" is missing; "+fix)
		}
	}
}

// needNode is needClientLibs, and the node binary, whose path it returns.
func needNode(t *testing.T) string {
	t.Helper()
	bin, err := exec.LookPath("node")
	if err != nil {
		missing(t, "node is not in PATH; install Node.js 20 or later, then the client libraries with `cd e2e/clients && npm ci`")
	}
	needClientLibs(t)
	return bin
}

func missing(t *testing.T, why string) {
	t.Helper()
	if os.Getenv("CHATD_REQUIRE_NODE") != "" {
		t.Fatalf("CHATD_REQUIRE_NODE is set but %s", why)
	}
	t.Skipf("SKIPPED: %s", why)
}

// TestClientsNode runs every client library with every transport under
// Node against one node: each connects, sends and receives, disconnects,
// and after a reconnect gets exactly what another client sent meanwhile.
func TestClientsNode(t *testing.T) {
	bin := needNode(t)
	n := startNode(t)
	for _, c := range clientCombos {
		t.Run(c.client+"/"+c.transport, func(t *testing.T) {
			t.Parallel()
			playScenario(t, n, "n-", c.client, c.transport, func(p scenarioParams) scenarioRun {
				return startNodeRun(t, bin, p)
			})
		})
	}
}

// TestClientsBrowser runs the same in headless Chromium, from a page on
// another origin than the node's, which the node allows; and checks that
// a page from an origin it does not allow cannot connect.
func TestClientsBrowser(t *testing.T) {
	needBrowser(t)
	needClientLibs(t)
	allowed, refused := servePage(t)
	n := startNode(t, func(c *config.Config) {
		c.AllowedOrigins = []string{allowed.Host}
	})
	browser := startBrowser(t)

	t.Run("refused origin", func(t *testing.T) {
		t.Parallel()
		checkRefusedOrigin(t, n, allowed, refused, browser)
	})
	for _, c := range clientCombos {
		t.Run(c.client+"/"+c.transport, func(t *testing.T) {
			t.Parallel()
			playScenario(t, n, "b-", c.client, c.transport, func(p scenarioParams) scenarioRun {
				tb := openClientsPage(t, browser, allowed.String())
				tb.eval("start the scenario", "window.startRun("+mustJSON(t, p)+")")
				return tb
			})
		})
	}
}

// scenarioParams are scenario.js's parameters.
type scenarioParams struct {
	Client    string `json:"client"`
	Transport string `json:"transport"`
	URL       string `json:"url"` // SockJS's URL; the raw WebSocket's is its ws:// twin
	User      string `json:"user"`
	Room      string `json:"room"`
	Text      string `json:"text"`   // of the first message
	Marker    string `json:"marker"` // of the message sent after resubscribing
}

// scenarioReport is what scenario.js reports, at the end and, without
// Second, once the first session is closed.
type scenarioReport struct {
	Phase     string         `json:"phase"`
	Client    string         `json:"client"`
	Transport string         `json:"transport"`
	First     *sessionReport `json:"first"`
	FirstID   uint64         `json:"firstId"`
	Second    *sessionReport `json:"second"`
	Error     string         `json:"error"`
}

type sessionReport struct {
	Connected struct {
		Version   string `json:"version"`
		UserName  string `json:"userName"`
		Server    string `json:"server"`
		HeartBeat string `json:"heartBeat"`
		Transport string `json:"transport"` // the SockJS transport in use, or "raw"
	} `json:"connected"`
	Errors   []string      `json:"errors"` // ERROR frames and lost connections while connected
	Messages []frameReport `json:"messages"`
}

type frameReport struct {
	Headers map[string]string `json:"headers"`
	Body    string            `json:"body"`
}

// scenarioRun is one run of scenario.js, under Node or in a browser tab.
type scenarioRun interface {
	// waitPhase waits for the run to report phase ("disconnected", then
	// "done") and returns the report; it fails the test if the run ends
	// first.
	waitPhase(phase string) scenarioReport
	// proceed tells a run waiting in "disconnected" to go on.
	proceed()
}

// playScenario runs the scenario with one client and transport: the
// client connects, subscribes to its room, sends a message with fields of
// its own and receives it, and disconnects; a go-stomp client then sends
// three messages; the client reconnects, resubscribes with since-id, and
// sends one more. It must get the three and its own, each once, in order.
func playScenario(t *testing.T, n *node, prefix, client, transport string, start func(scenarioParams) scenarioRun) {
	tag := client + "-" + transport
	p := scenarioParams{
		Client: client, Transport: transport,
		URL:  "http://" + n.app.Addr() + "/ws",
		User: "u-" + tag, Room: prefix + tag,
		Text:   `grüße ✓ 💬 <b>&amp;</b> "quoted" \ from ` + tag,
		Marker: "back, " + tag,
	}
	dest := "/topic/chat." + p.Room
	other := dial(t, n, "go-"+tag)
	watch := other.subscribe(dest)
	t.Cleanup(func() { _ = watch.Unsubscribe() }) // before the disconnect: go-stomp logs a live one

	run := start(p)
	rep := run.waitPhase("disconnected")
	checkSession(t, "first session", rep.First, p)
	if len(rep.First.Messages) != 1 {
		t.Fatalf("first session: want exactly its own message, got %d: %+v", len(rep.First.Messages), rep.First.Messages)
	}
	got := decodeFrame(t, rep.First.Messages[0], p)
	want := nextChat(t, watch) // the go-stomp client saw it too
	if want.ID != rep.FirstID || want.UserID != p.User || want.Message != p.Text {
		t.Fatalf("go-stomp saw %+v, the client reported id %d from %s", want, rep.FirstID, p.User)
	}
	got.check(t, "first message", want, p.User, p.Text, "7")

	// Meanwhile, another client writes.
	var wants []chat.Message
	for i := range 3 {
		other.post(p.Room, fmt.Sprintf("meanwhile %d ✓ <&>, %s", i, tag))
		wants = append(wants, nextChat(t, watch))
	}
	run.proceed()
	rep = run.waitPhase("done")
	if rep.Error != "" {
		t.Fatalf("the client failed: %s\nreport: %s", rep.Error, mustJSON(t, rep))
	}
	checkSession(t, "second session", rep.Second, p)
	wants = append(wants, nextChat(t, watch)) // its own, after the replay

	var texts []string
	for _, f := range rep.Second.Messages {
		texts = append(texts, f.Body)
	}
	if len(rep.Second.Messages) != len(wants) {
		t.Fatalf("after resubscribing with since-id:%d: want the %d messages after it, once each, got %d:\n%s",
			rep.FirstID, len(wants), len(rep.Second.Messages), strings.Join(texts, "\n"))
	}
	for i, f := range rep.Second.Messages {
		m := decodeFrame(t, f, p)
		what := fmt.Sprintf("replayed message %d of %d", i+1, len(wants))
		if i < len(wants)-1 {
			m.check(t, what, wants[i], other.user, wants[i].Message, "")
		} else {
			m.check(t, "its own message after the replay", wants[i], p.User, p.Marker, "8")
		}
	}
}

func checkSession(t *testing.T, what string, s *sessionReport, p scenarioParams) {
	t.Helper()
	if s == nil {
		t.Fatalf("%s: no report", what)
	}
	c := s.Connected
	wantVersion := "1.2"
	if p.Client == "stompjs2-sockjs" {
		wantVersion = "1.1" // stompjs 2.3.3 offers 1.1 and 1.0
	}
	if c.Version != wantVersion || c.UserName != p.User || !strings.HasPrefix(c.Server, "chatd/") || c.Transport != p.Transport {
		t.Errorf("%s: CONNECTED %+v, want version %s, user-name %s, server chatd/..., over %s", what, c, wantVersion, p.User, p.Transport)
	}
	if len(s.Errors) > 0 {
		t.Errorf("%s: errors while connected: %q", what, s.Errors)
	}
}

// clientMessage is a room MESSAGE as the client library handed it over.
type clientMessage struct {
	fields map[string]any // the body, numbers as json.Number
}

func decodeFrame(t *testing.T, f frameReport, p scenarioParams) clientMessage {
	t.Helper()
	d := json.NewDecoder(strings.NewReader(f.Body))
	d.UseNumber()
	var fields map[string]any
	if err := d.Decode(&fields); err != nil {
		t.Fatalf("MESSAGE body %q is not a JSON object: %v", f.Body, err)
	}
	if dest := f.Headers["destination"]; dest != "/topic/chat."+p.Room {
		t.Errorf("MESSAGE destination %q, want /topic/chat.%s", dest, p.Room)
	}
	if ct := f.Headers["content-type"]; ct != "application/json" {
		t.Errorf("MESSAGE content-type %q, want application/json", ct)
	}
	return clientMessage{fields: fields}
}

// check compares m with the message the go-stomp client saw; with n, it
// also wants the sender's own fields back: "type" the string "TALK" and
// "n" that number.
func (m clientMessage) check(t *testing.T, what string, want chat.Message, user, text, n string) {
	t.Helper()
	id, _ := m.fields["id"].(json.Number)
	if id.String() != fmt.Sprint(want.ID) || m.fields["userId"] != user || m.fields["message"] != text || m.fields["roomId"] != want.RoomID {
		t.Fatalf("%s: got %v, want id %d from %s in %s saying %q", what, m.fields, want.ID, user, want.RoomID, text)
	}
	if n == "" {
		return
	}
	if typ, ok := m.fields["type"].(string); !ok || typ != "TALK" {
		t.Errorf(`%s: "type" is %#v, want the string "TALK"`, what, m.fields["type"])
	}
	if num, ok := m.fields["n"].(json.Number); !ok || num.String() != n {
		t.Errorf(`%s: "n" is %#v, want the number %s`, what, m.fields["n"], n)
	}
}

func mustJSON(t *testing.T, v any) string {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// clientWait bounds every wait for a client: a scenario takes about a
// second, more on a busy machine.
const clientWait = 20 * time.Second

// nodeRun is run.js in a Node process, ended when the test ends.
type nodeRun struct {
	t      *testing.T
	stdin  io.WriteCloser
	out    *lineWriter
	stderr *lineWriter
	exited chan struct{} // closed once the process ended
	err    error         // its exit status, once exited
	seen   int           // stdout lines read
}

func startNodeRun(t *testing.T, bin string, p scenarioParams) *nodeRun {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cmd := exec.CommandContext(ctx, bin, "run.js", mustJSON(t, p))
	cmd.Dir = clientsDir
	cmd.WaitDelay = 5 * time.Second
	r := &nodeRun{t: t, out: newLineWriter(), stderr: newLineWriter(), exited: make(chan struct{})}
	cmd.Stdout, cmd.Stderr = r.out, r.stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		cancel()
		t.Fatal(err)
	}
	r.stdin = stdin
	if err := cmd.Start(); err != nil {
		cancel()
		t.Fatalf("start node run.js: %v", err)
	}
	go func() {
		r.err = cmd.Wait()
		close(r.exited)
	}()
	t.Cleanup(func() {
		// A run waiting for the go-ahead ends when stdin closes; one
		// that does not end soon is killed.
		_ = stdin.Close()
		select {
		case <-r.exited:
		case <-time.After(5 * time.Second):
		}
		cancel()
		<-r.exited
		if t.Failed() {
			t.Logf("node run.js %s/%s: %v; stderr:\n%s", p.Client, p.Transport, r.err, r.stderr.String())
		}
	})
	return r
}

func (r *nodeRun) waitPhase(phase string) scenarioReport {
	r.t.Helper()
	deadline := time.NewTimer(clientWait)
	defer deadline.Stop()
	ended := false
	for {
		for _, line := range r.out.all()[r.seen:] {
			r.seen++
			var rep scenarioReport
			if err := json.Unmarshal([]byte(line), &rep); err != nil {
				r.t.Fatalf("run.js printed %q: %v", line, err)
			}
			if rep.Phase == phase {
				return rep
			}
			if rep.Phase == "done" {
				r.t.Fatalf("run.js ended before %s: %s", phase, line)
			}
		}
		if ended {
			r.t.Fatalf("run.js exited (%v) before %s; stderr:\n%s", r.err, phase, r.stderr.String())
		}
		select {
		case <-r.out.more:
		case <-r.exited:
			ended = true // read what it printed last, then fail
		case <-deadline.C:
			r.t.Fatalf("run.js reported no %s within %v", phase, clientWait)
		}
	}
}

func (r *nodeRun) proceed() {
	r.t.Helper()
	if _, err := io.WriteString(r.stdin, "go\n"); err != nil {
		r.t.Fatalf("tell run.js to go on: %v", err)
	}
}

// lineWriter keeps what a process writes, by lines, and says when more came.
type lineWriter struct {
	mu    sync.Mutex
	lines []string
	part  []byte
	more  chan struct{} // a token when lines were added
}

func newLineWriter() *lineWriter { return &lineWriter{more: make(chan struct{}, 1)} }

func (w *lineWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	w.part = append(w.part, p...)
	added := false
	for {
		i := bytes.IndexByte(w.part, '\n')
		if i < 0 {
			break
		}
		w.lines = append(w.lines, string(w.part[:i]))
		w.part = w.part[i+1:]
		added = true
	}
	w.mu.Unlock()
	if added {
		select {
		case w.more <- struct{}{}:
		default:
		}
	}
	return len(p), nil
}

// all returns the complete lines so far.
func (w *lineWriter) all() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.lines)
}

// String returns everything so far, an unfinished last line included.
func (w *lineWriter) String() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	return strings.Join(append(slices.Clone(w.lines), string(w.part)), "\n")
}

// needBrowser skips, or with CHATD_REQUIRE_BROWSER fails, as
// TestBrowserChat does, when Chromium is missing.
func needBrowser(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(chromiumPath); err != nil {
		if os.Getenv("CHATD_REQUIRE_BROWSER") != "" {
			t.Fatalf("CHATD_REQUIRE_BROWSER is set but %s is missing: %v", chromiumPath, err)
		}
		t.Skipf("SKIPPED: %s not found; install it (apt-get install -y chromium) to run the browser client tests", chromiumPath)
	}
}

// pageFiles are what the test page may load, by URL path.
var pageFiles = map[string]string{
	"/":            "page.html",
	"/page.js":     "page.js",
	"/scenario.js": "scenario.js",
	"/node_modules/sockjs-client/dist/sockjs.min.js":        "node_modules/sockjs-client/dist/sockjs.min.js",
	"/node_modules/stompjs/lib/stomp.min.js":                "node_modules/stompjs/lib/stomp.min.js",
	"/node_modules/@stomp/stompjs/bundles/stomp.umd.min.js": "node_modules/@stomp/stompjs/bundles/stomp.umd.min.js",
}

// servePage serves the test page on two origins of its own: the node
// under test allows the first and not the second.
func servePage(t *testing.T) (allowed, refused *pageOrigin) {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		f, ok := pageFiles[r.URL.Path]
		if !ok {
			http.NotFound(w, r)
			return
		}
		w.Header().Set("Cache-Control", "no-store")
		http.ServeFile(w, r, filepath.Join(clientsDir, f))
	})
	listen := func() *pageOrigin {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		srv := &http.Server{Handler: h, ReadHeaderTimeout: 10 * time.Second}
		done := make(chan struct{})
		go func() {
			defer close(done)
			_ = srv.Serve(ln)
		}()
		t.Cleanup(func() {
			_ = srv.Close()
			<-done
		})
		return &pageOrigin{Host: ln.Addr().String()}
	}
	return listen(), listen()
}

// pageOrigin is one origin the test page is served from.
type pageOrigin struct{ Host string }

func (o *pageOrigin) String() string { return "http://" + o.Host }

func startBrowser(t *testing.T) context.Context {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // the whole test
	t.Cleanup(cancel)
	alloc, cancelAlloc := chromedp.NewExecAllocator(ctx,
		chromedp.ExecPath(chromiumPath),
		chromedp.Headless,
		chromedp.NoSandbox, // root in CI containers
		chromedp.DisableGPU,
		chromedp.NoFirstRun,
		chromedp.NoDefaultBrowserCheck,
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-dev-shm-usage", true),
		chromedp.Flag("disable-background-timer-throttling", true),
		chromedp.Flag("disable-renderer-backgrounding", true),
		chromedp.Flag("disable-backgrounding-occluded-windows", true),
		chromedp.UserDataDir(t.TempDir()),
	)
	t.Cleanup(cancelAlloc) // runs before TempDir's cleanup: the browser exits first
	browser, cancelBrowser := chromedp.NewContext(alloc)
	t.Cleanup(cancelBrowser)
	if err := chromedp.Do(browser); err != nil {
		t.Fatalf("start chromium: %v", err)
	}
	return browser
}

// clientsTab is the test page in a tab of its own browser context (so its
// own connection pool and cookies).
type clientsTab struct {
	t   *testing.T
	ctx context.Context

	mu       sync.Mutex
	urls     map[network.RequestID]string // of every request
	statuses map[network.RequestID]int64  // of every response, CORS-blocked ones included
	failures map[network.RequestID]string // why a request failed
	console  []string                     // console messages and uncaught exceptions
}

// responses lists "status URL (failure)" of the page's requests so far.
func (tb *clientsTab) responses() []string {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	var out []string
	for id, url := range tb.urls {
		r := fmt.Sprintf("%d %s", tb.statuses[id], url)
		if f, ok := tb.failures[id]; ok {
			r += " (" + f + ")"
		}
		out = append(out, r)
	}
	slices.Sort(out)
	return out
}

func openClientsPage(t *testing.T, browser context.Context, origin string) *clientsTab {
	t.Helper()
	tb := &clientsTab{t: t, urls: map[network.RequestID]string{}, statuses: map[network.RequestID]int64{}, failures: map[network.RequestID]string{}}
	ctx, cancel := chromedp.NewContext(browser, chromedp.WithNewBrowserContext(), chromedp.WithListener(tb.listen))
	t.Cleanup(cancel)
	tb.ctx = ctx
	t.Cleanup(func() {
		if t.Failed() {
			responses := tb.responses()
			tb.mu.Lock()
			t.Logf("page console:\n%s\nrequests:\n%s", strings.Join(tb.console, "\n"), strings.Join(responses, "\n"))
			tb.mu.Unlock()
		}
	})
	tb.do("open the page", chromedp.Navigate(origin+"/"))
	tb.poll(`window.state && window.state.phase !== undefined`, "the page's script")
	if got := tb.eval("read the page's state", `window.state.phase + " " + JSON.stringify(window.state.libraries)`); !strings.HasPrefix(got, "ready ") {
		t.Fatalf("the page did not load the libraries: %s", got)
	}
	return tb
}

func (tb *clientsTab) listen(ev any) {
	tb.mu.Lock()
	defer tb.mu.Unlock()
	switch ev := ev.(type) {
	case *network.EventRequestWillBeSent:
		tb.urls[ev.RequestID] = ev.Request.URL
	case *network.EventWebSocketCreated:
		tb.urls[ev.RequestID] = ev.URL
	case *network.EventResponseReceivedExtraInfo:
		tb.statuses[ev.RequestID] = ev.StatusCode
	case *network.EventWebSocketHandshakeResponseReceived:
		tb.statuses[ev.RequestID] = ev.Response.Status
	case *network.EventWebSocketFrameError:
		tb.failures[ev.RequestID] = ev.ErrorMessage
	case *network.EventLoadingFailed:
		f := ev.ErrorText
		if ev.CorsErrorStatus != nil {
			f += ", CORS " + string(ev.CorsErrorStatus.CorsError)
		}
		tb.failures[ev.RequestID] = f
	case *runtime.EventConsoleAPICalled:
		var args []string
		for _, a := range ev.Args {
			args = append(args, string(a.Value)+a.Description)
		}
		tb.console = append(tb.console, string(ev.Type)+": "+strings.Join(args, " "))
	case *runtime.EventExceptionThrown:
		d := ev.ExceptionDetails
		msg := d.Text
		if d.Exception != nil {
			msg += " " + d.Exception.Description
		}
		tb.console = append(tb.console, "exception: "+msg)
	}
}

func (tb *clientsTab) do(what string, actions ...chromedp.Action[chromedp.Void]) {
	tb.t.Helper()
	if err := chromedp.Do(tb.ctx, actions...); err != nil {
		tb.t.Fatalf("%s: %v", what, err)
	}
}

func (tb *clientsTab) eval(what, expr string) string {
	tb.t.Helper()
	v, err := chromedp.Run(tb.ctx, chromedp.Evaluate[string]("String("+expr+")"))
	if err != nil {
		tb.t.Fatalf("%s: evaluate %s: %v", what, expr, err)
	}
	return v
}

// poll waits until cond holds in the page.
func (tb *clientsTab) poll(cond, what string) {
	tb.t.Helper()
	_, err := chromedp.Run(tb.ctx, chromedp.Poll[bool](cond,
		chromedp.WithPollingTimeout(clientWait), chromedp.WithPollingInterval(20*time.Millisecond)))
	if err != nil {
		state, _ := chromedp.Run(tb.ctx, chromedp.Evaluate[string](`JSON.stringify(window.state)`))
		tb.t.Fatalf("waiting for %s (%s): %v\nstate: %s", what, cond, err, state)
	}
}

func (tb *clientsTab) waitPhase(phase string) scenarioReport {
	tb.t.Helper()
	tb.poll(fmt.Sprintf(`window.state.phase === %q || window.state.phase === "done"`, phase), "phase "+phase)
	var rep scenarioReport
	s := tb.eval("read the report", `JSON.stringify(Object.assign({phase: window.state.phase}, window.state.report))`)
	if err := json.Unmarshal([]byte(s), &rep); err != nil {
		tb.t.Fatalf("the page's report %s: %v", s, err)
	}
	if rep.Phase != phase {
		tb.t.Fatalf("the page ended before %s: %s", phase, s)
	}
	return rep
}

func (tb *clientsTab) proceed() {
	tb.t.Helper()
	tb.eval("tell the page to go on", `window.proceed()`)
}

// checkRefusedOrigin checks that chatd refuses a page on an origin it was
// not told to allow: SockJS's /info and xhr requests get 403, the
// WebSocket handshakes too, and no client library connects from there,
// while the allowed origin gets in.
func checkRefusedOrigin(t *testing.T, n *node, allowed, refused *pageOrigin, browser context.Context) {
	base := "http://" + n.app.Addr() + "/ws"
	for _, c := range []struct {
		method, path string
		origin       *pageOrigin
		want         int
	}{
		{"GET", "/info", allowed, http.StatusOK},
		{"GET", "/info", refused, http.StatusForbidden},
		{"POST", "/000/refused1/xhr", refused, http.StatusForbidden},
		{"POST", "/000/refused2/xhr_streaming", refused, http.StatusForbidden},
		{"POST", "/000/refused1/xhr_send", refused, http.StatusForbidden},
	} {
		req, err := http.NewRequest(c.method, base+c.path, strings.NewReader(`["x"]`))
		if err != nil {
			t.Fatal(err)
		}
		req.Header.Set("Origin", c.origin.String())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("%s %s: %v", c.method, c.path, err)
		}
		_ = resp.Body.Close()
		if resp.StatusCode != c.want {
			t.Errorf("%s /ws%s from %s: status %d, want %d", c.method, c.path, c.origin, resp.StatusCode, c.want)
		}
		if c.want == http.StatusOK {
			if got := resp.Header.Get("Access-Control-Allow-Origin"); got != c.origin.String() {
				t.Errorf("%s /ws%s from %s: Access-Control-Allow-Origin %q, want the origin", c.method, c.path, c.origin, got)
			}
		}
	}
	for _, path := range []string{"", "/websocket", "/000/refused3/websocket"} {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, resp, err := websocket.Dial(ctx, "ws://"+n.app.Addr()+"/ws"+path, &websocket.DialOptions{
			HTTPHeader: http.Header{"Origin": {refused.String()}},
		})
		cancel()
		if err == nil {
			_ = c.CloseNow()
			t.Errorf("WebSocket /ws%s from %s: accepted", path, refused)
			continue
		}
		if resp == nil || resp.StatusCode != http.StatusForbidden {
			t.Errorf("WebSocket /ws%s from %s: %v, want 403", path, refused, err)
		}
	}

	// In the browser: every client fails to connect from there.
	for _, client := range []string{"stompjs2-sockjs", "stompjs7-sockjs", "stompjs7-ws"} {
		tb := openClientsPage(t, browser, refused.String())
		p := scenarioParams{Client: client, Transport: "websocket", URL: base, User: "refused-" + client}
		if client == "stompjs7-ws" {
			p.Transport = "raw"
		}
		tb.eval("try to connect", "window.startConnect("+mustJSON(t, p)+")")
		tb.poll(`window.state.phase === "done"`, "the connection attempt")
		var outcome struct {
			Connected bool   `json:"connected"`
			Error     string `json:"error"`
		}
		s := tb.eval("read the outcome", `JSON.stringify(window.state.outcome)`)
		if err := json.Unmarshal([]byte(s), &outcome); err != nil {
			t.Fatalf("outcome %s: %v", s, err)
		}
		if outcome.Connected || outcome.Error == "" {
			t.Errorf("%s from the refused origin %s: %s, want a failure", client, refused, s)
			continue
		}
		// The browser saw the 403: for SockJS, of /info (the page is told
		// no more than that it failed, for want of CORS headers); for the
		// raw WebSocket, of the handshake.
		want := "403 http://" + n.app.Addr() + "/ws/info?"
		if client == "stompjs7-ws" {
			want = "ws://" + n.app.Addr() + "/ws (Error during WebSocket handshake: Unexpected response code: 403)"
		}
		if responses := tb.responses(); !slices.ContainsFunc(responses, func(r string) bool { return strings.Contains(r, want) }) {
			t.Errorf("%s from the refused origin: the browser saw no %q; requests:\n%s", client, want, strings.Join(responses, "\n"))
		}
		t.Logf("%s from the refused origin: %s", client, outcome.Error)
	}
}
