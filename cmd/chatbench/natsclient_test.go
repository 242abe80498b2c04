package main

import (
	"context"
	"errors"
	"net"
	"strconv"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

func TestScanNATS(t *testing.T) {
	cases := []struct {
		name          string
		in            string
		n             int // bytes used; 0: incomplete
		kind          natsKind
		subject, data string
		err           bool
	}{
		{name: "msg", in: "MSG chat.a 1 5\r\nhello\r\nPING\r\n", n: 23, kind: natsMsg, subject: "chat.a", data: "hello"},
		{name: "msg with reply", in: "MSG chat.a 9 _INBOX.x 2\r\nhi\r\n", n: 29, kind: natsMsg, subject: "chat.a", data: "hi"},
		{name: "empty payload", in: "MSG s 1 0\r\n\r\n", n: 13, kind: natsMsg, subject: "s"},
		{name: "payload with CRLF", in: "MSG s 1 4\r\na\r\nb\r\n", n: 17, kind: natsMsg, subject: "s", data: "a\r\nb"},
		{name: "payload incomplete", in: "MSG s 1 5\r\nhel"},
		{name: "trailing CRLF missing yet", in: "MSG s 1 5\r\nhello"},
		{name: "line incomplete", in: "MSG s 1 5"},
		{name: "ping", in: "PING\r\n", n: 6, kind: natsPing},
		{name: "pong", in: "PONG\r\n", n: 6, kind: natsPong},
		{name: "ok", in: "+OK\r\n", n: 5, kind: natsOK},
		{name: "info", in: "INFO {\"a\":1}\r\n", n: 14, kind: natsInfo},
		{name: "err", in: "-ERR 'Slow Consumer'\r\n", n: 22, kind: natsErr, data: "Slow Consumer"},
		{name: "lower case", in: "msg s 1 1\r\nx\r\n", n: 14, kind: natsMsg, subject: "s", data: "x"},
		{name: "bare LF", in: "PING\n", err: true},
		{name: "unknown verb", in: "HELLO\r\n", err: true},
		{name: "msg without sid", in: "MSG s 5\r\nhello\r\n", err: true},
		{name: "bad size", in: "MSG s 1 x\r\n", err: true},
		{name: "negative size", in: "MSG s 1 -1\r\n", err: true},
		{name: "payload not followed by CRLF", in: "MSG s 1 1\r\nxy\r\n", err: true},
		{name: "empty", in: ""},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			op, n, err := scanNATS([]byte(tc.in))
			if tc.err {
				if !errors.Is(err, errNATSProto) {
					t.Fatalf("err %v, want errNATSProto", err)
				}
				return
			}
			if err != nil || n != tc.n {
				t.Fatalf("n %d err %v, want n %d", n, err, tc.n)
			}
			if n == 0 {
				return
			}
			data := string(op.payload)
			if op.kind == natsErr {
				data = string(op.text)
			}
			if op.kind != tc.kind || string(op.subject) != tc.subject || data != tc.data {
				t.Fatalf("op %d %q %q, want %d %q %q", op.kind, op.subject, data, tc.kind, tc.subject, tc.data)
			}
		})
	}
	if _, _, err := scanNATS(make([]byte, maxNATSLine+1)); !errors.Is(err, errNATSProto) {
		t.Errorf("a line without end: %v, want errNATSProto", err)
	}
}

// startNATSInProcess is the serve-nats server inside the test process, for
// benchmarks that compare clients against the same server.
func startNATSInProcess(tb testing.TB) string {
	tb.Helper()
	srv, err := server.NewServer(&server.Options{DontListen: true, NoLog: true, NoSigs: true,
		Websocket: server.WebsocketOpts{Host: "127.0.0.1", Port: server.RANDOM_PORT, NoTLS: true}})
	if err != nil {
		tb.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(10 * time.Second) {
		tb.Fatal("nats-server not ready")
	}
	tb.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	return srv.WebsocketURL()
}

// BenchmarkNATSReceive: 100 subscribers of one subject over WebSockets
// to an in-process nats-server, with chatbench's client and with nats.go
// (a handler per message, as chatbench would use it), fed by the same
// publisher in bursts of 100 messages, each burst delivered to all
// before the next. One op is one delivery; the server's work is in both,
// so the difference is the clients'. The reason chatbench has its own.
func BenchmarkNATSReceive(b *testing.B) {
	const subs, burst = 100, 100
	url := startNATSInProcess(b)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()
	d := newDialer(net.IPv4(127, 0, 0, 1))
	body := appendPayload([]byte(`{"message":"`), "ab12", 0, 1, time.Now().UnixNano(), 0)
	body = append(body, `"}`...)
	pub, err := dialNATS(ctx, d, connectOptions{url: url, login: "pub"})
	if err != nil {
		b.Fatal(err)
	}
	defer pub.close()
	// publish sends n messages in bursts and waits for every subscriber to
	// have each burst (done receives one token per subscriber and burst).
	publish := func(b *testing.B, subject string, done <-chan struct{}) {
		cpu0 := processCPU(b)
		defer func() { b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op") }()
		var wire []byte
		for i := 0; i < b.N; i += subs * burst {
			wire = wire[:0]
			for range burst {
				wire = appendPub(wire, subject, body)
			}
			if err := pub.write(wire); err != nil {
				b.Fatal(err)
			}
			for range subs {
				select {
				case <-done:
				case <-ctx.Done():
					b.Fatal("deliveries did not arrive")
				}
			}
		}
	}
	// counter counts one subscriber's messages and hands in a token per burst.
	counter := func(done chan<- struct{}) func(data []byte) {
		n := 0
		return func(data []byte) {
			if _, ok := parsePayload(data); !ok {
				panic("no payload")
			}
			if n++; n%burst == 0 {
				done <- struct{}{}
			}
		}
	}
	b.Run("chatbench", func(b *testing.B) {
		done := make(chan struct{}, subs)
		var conns []*natsConn
		for i := range subs {
			c, err := dialNATS(ctx, d, connectOptions{url: url, login: "s" + strconv.Itoa(i), readBuffer: 32 << 10})
			if err != nil {
				b.Fatal(err)
			}
			if err := c.subscribe(ctx, "1", "bench.chatbench"); err != nil {
				b.Fatal(err)
			}
			conns = append(conns, c)
			count := counter(done)
			go func() {
				_ = c.serve(func(op *natsOp, _ int64) int {
					if op.kind == natsMsg {
						count(op.payload)
					}
					return 0
				}, nil)
			}()
		}
		defer func() {
			for _, c := range conns {
				c.close()
			}
		}()
		b.ReportAllocs()
		b.ResetTimer()
		publish(b, "bench.chatbench", done)
	})
	b.Run("nats.go", func(b *testing.B) {
		done := make(chan struct{}, subs)
		var lost atomic.Int64
		for i := range subs {
			nc, err := nats.Connect(url, nats.Name("s"+strconv.Itoa(i)), nats.NoReconnect(),
				nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) { lost.Add(1) }))
			if err != nil {
				b.Fatal(err)
			}
			defer nc.Close()
			count := counter(done)
			sub, err := nc.Subscribe("bench.natsgo", func(m *nats.Msg) { count(m.Data) })
			if err != nil {
				b.Fatal(err)
			}
			if err := sub.SetPendingLimits(-1, -1); err != nil {
				b.Fatal(err)
			}
			if err := nc.FlushWithContext(ctx); err != nil {
				b.Fatal(err)
			}
		}
		b.ReportAllocs()
		b.ResetTimer()
		publish(b, "bench.natsgo", done)
		if n := lost.Load(); n > 0 {
			b.Fatalf("%d asynchronous errors", n)
		}
	})
}

// processCPU is the process's user and system time so far: on two cores
// a client's cost shows in CPU more than in elapsed time.
func processCPU(tb testing.TB) time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		tb.Fatal(err)
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
