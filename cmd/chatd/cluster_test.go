package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"net"
	"os/exec"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/go-stomp/stomp/v3"
)

type proc struct {
	cmd  *exec.Cmd
	http string
}

// freeAddr finds an address for a process that binds it itself later,
// below Linux's ephemeral range so outgoing connections cannot take it.
func freeAddr(t *testing.T) string {
	t.Helper()
	for range 100 {
		addr := "127.0.0.1:" + strconv.Itoa(20000+rand.IntN(12000))
		ln, err := net.Listen("tcp", addr)
		if err == nil {
			_ = ln.Close()
			return addr
		}
	}
	t.Fatal("no free port in 20000-31999")
	return ""
}

// startClusterProcs runs three chatd processes routed to each other.
func startClusterProcs(t *testing.T, bin string) []*proc {
	t.Helper()
	var routes []string
	cluster := make([]string, 3)
	for i := range cluster {
		cluster[i] = freeAddr(t)
		routes = append(routes, "nats-route://"+cluster[i])
	}
	ready := regexp.MustCompile(`msg="chatd ready" http=(\S+)`)
	procs := make([]*proc, 3)
	addrs := make(chan [2]string, 3)
	for i := range procs {
		cmd := exec.Command(bin, "--dev", "--name", "p"+strconv.Itoa(i), "--http", "127.0.0.1:0",
			"--data-dir", t.TempDir(), "--cluster", cluster[i], "--routes", strings.Join(routes, ","))
		stderr, err := cmd.StderrPipe()
		if err != nil {
			t.Fatal(err)
		}
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs[i] = &proc{cmd: cmd}
		t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
		var mu sync.Mutex
		var logs []string
		t.Cleanup(func() {
			if t.Failed() {
				mu.Lock()
				defer mu.Unlock()
				for _, l := range logs {
					if !strings.Contains(l, "level=DEBUG") {
						t.Logf("p%d: %s", i, l)
					}
				}
			}
		})
		go func() {
			sc := bufio.NewScanner(stderr)
			for sc.Scan() {
				mu.Lock()
				logs = append(logs, sc.Text())
				mu.Unlock()
				if m := ready.FindStringSubmatch(sc.Text()); m != nil {
					addrs <- [2]string{strconv.Itoa(i), m[1]}
				}
			}
		}()
	}
	timeout := time.After(90 * time.Second)
	for range procs {
		select {
		case a := <-addrs:
			i, _ := strconv.Atoi(a[0])
			procs[i].http = a[1]
		case <-timeout:
			t.Fatal("cluster not ready within 90s")
		}
	}
	return procs
}

func stompDial(addr, user string) (*stomp.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws://"+addr+"/ws", &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		return nil, err
	}
	ws.SetReadLimit(-1)
	return stomp.Connect(websocket.NetConn(context.Background(), ws, websocket.MessageText),
		stomp.ConnOpt.Login(user, ""), stomp.ConnOpt.Host("/"), stomp.ConnOpt.ReadChannelCapacity(4096))
}

type chatMsg struct {
	ID      uint64 `json:"id"`
	Message string `json:"message"`
}

// TestKillNodeLosesNothing kills -9 one node of three during a steady
// stream of sends. Every SEND that got a RECEIPT is in history exactly
// once, and a subscriber of the dead node that resumes with since-id on a
// survivor receives every message once, in order.
func TestKillNodeLosesNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("3-process cluster: skipped with -short")
	}
	procs := startClusterProcs(t, buildChatd(t))
	victim, pubNode, survivor := procs[0], procs[1], procs[2]

	sub, err := stompDial(victim.http, "sub")
	if err != nil {
		t.Fatal(err)
	}
	s, err := sub.Subscribe("/topic/chat.k9", stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	// A receipted SEND after SUBSCRIBE: frames are handled in order.
	if err := sub.Send("/app/chat.k9", "application/json", []byte(`{"message":"hello"}`), stomp.SendOpt.Receipt); err != nil {
		t.Fatal(err)
	}

	const total = 300
	receipted := make(chan int, total)
	go func() {
		defer close(receipted)
		nodes := []string{pubNode.http, survivor.http}
		var pub *stomp.Conn
		for i := 0; i < total; i++ {
			for attempt := 0; ; attempt++ {
				if pub == nil {
					if pub, err = stompDial(nodes[attempt%2], "pub"); err != nil {
						pub = nil
						time.Sleep(100 * time.Millisecond)
						continue
					}
				}
				body := fmt.Sprintf(`{"message":"m%d"}`, i)
				// The same client-msg-id on every attempt: stored once.
				if err := pub.Send("/app/chat.k9", "application/json", []byte(body), stomp.SendOpt.Receipt,
					stomp.SendOpt.Header("client-msg-id", "m"+strconv.Itoa(i))); err != nil {
					_ = pub.MustDisconnect()
					pub = nil
					if attempt > 100 {
						t.Errorf("message %d: no receipt after %d attempts: %v", i, attempt, err)
						return
					}
					continue
				}
				receipted <- i
				break
			}
			time.Sleep(2 * time.Millisecond)
		}
		_ = pub.Disconnect()
	}()

	var got []chatMsg
	read := func(c <-chan *stomp.Message, until func() bool) {
		for !until() {
			select {
			case m, ok := <-c:
				if !ok || m.Err != nil {
					return
				}
				var cm chatMsg
				if err := json.Unmarshal(m.Body, &cm); err != nil {
					t.Fatal(err)
				}
				got = append(got, cm)
			case <-time.After(30 * time.Second):
				t.Fatalf("no message for 30s; have %d", len(got))
			}
		}
	}
	read(s.C, func() bool { return len(got) >= 80 })
	if err := victim.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	read(s.C, func() bool { return false }) // drain what was in flight until the connection dies

	resumed, err := stompDial(survivor.http, "sub")
	if err != nil {
		t.Fatal(err)
	}
	rs, err := resumed.Subscribe("/topic/chat.k9", stomp.AckAuto,
		stomp.SubscribeOpt.Header("since-id", strconv.FormatUint(got[len(got)-1].ID, 10)))
	if err != nil {
		t.Fatal(err)
	}
	var sent int
	for range receipted {
		sent++
	}
	if sent != total {
		t.Fatalf("only %d of %d sends got a receipt", sent, total)
	}
	read(rs.C, func() bool { return len(got) >= total+1 })

	seen := map[string]int{}
	for i, m := range got {
		if i > 0 && m.ID <= got[i-1].ID {
			t.Fatalf("out of order or repeated at %d: id %d after %d", i, m.ID, got[i-1].ID)
		}
		seen[m.Message]++
	}
	for i := range total {
		if n := seen["m"+strconv.Itoa(i)]; n != 1 {
			t.Fatalf("subscriber got m%d %d times", i, n)
		}
	}

	// History on a survivor holds every receipted message exactly once.
	hc, err := stompDial(survivor.http, "auditor")
	if err != nil {
		t.Fatal(err)
	}
	logs, err := hc.Subscribe("/user/queue/chat.log", stomp.AckAuto)
	if err != nil {
		t.Fatal(err)
	}
	stored := map[string]int{}
	before := uint64(0)
	for {
		req := `{"limit":100}`
		if before > 0 {
			req = fmt.Sprintf(`{"limit":100,"before":%d}`, before)
		}
		if err := hc.Send("/app/chat.k9.log", "application/json", []byte(req), stomp.SendOpt.Receipt); err != nil {
			t.Fatal(err)
		}
		m := <-logs.C
		var page []chatMsg
		if m.Err != nil || json.Unmarshal(m.Body, &page) != nil {
			t.Fatalf("history page: %v %q", m.Err, m.Body)
		}
		if len(page) == 0 {
			break
		}
		for _, p := range page {
			stored[p.Message]++
		}
		before = page[0].ID
	}
	for i := range total {
		if n := stored["m"+strconv.Itoa(i)]; n != 1 {
			t.Fatalf("history holds m%d %d times", i, n)
		}
	}
	if len(stored) != total+1 {
		t.Fatalf("history holds %d distinct messages, want %d", len(stored), total+1)
	}
}
