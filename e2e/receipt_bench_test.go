package e2e_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/chatd/chatd/config"
	"github.com/coder/websocket"
)

// BenchmarkSendReceipt is SEND-to-RECEIPT on real nodes in each
// durability: receipted SENDs from many sessions, each keeping a few in
// flight, over loopback WebSockets; no subscribers, so the work is
// storing. One op is one SEND whose RECEIPT came back. It reports
// receipted msgs/s and the p50 and p99 of SEND-to-RECEIPT latency.
// Results and the commands: docs/benchmarks.md, Durable receipts.
func BenchmarkSendReceipt(b *testing.B) {
	for _, nodes := range []int{1, 3} {
		for _, d := range []string{config.DurabilityFsync, config.DurabilityReplicated, config.DurabilityFast} {
			if nodes > 1 && d == config.DurabilityFast {
				continue // one replica only
			}
			b.Run(fmt.Sprintf("nodes=%d/durability=%s", nodes, d), func(b *testing.B) { benchSendReceipt(b, nodes, d) })
		}
	}
}

// Sessions and SENDs in flight per session: 64 × 8, about a thousand
// users typing at once.
const (
	benchSessions = 64
	benchWindow   = 8
)

func benchSendReceipt(b *testing.B, nodes int, durability string) {
	set := func(c *config.Config) { c.Durability = durability }
	var url string
	if nodes == 1 {
		url = startNode(b, set).wsURL()
	} else {
		url = startCluster(b, nodes, set)[0].wsURL()
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	pubs := make([]*receiptPub, benchSessions)
	for i := range pubs {
		p, err := dialReceiptPub(ctx, url, "pub"+strconv.Itoa(i), "bench"+strconv.Itoa(i%16))
		if err != nil {
			b.Fatal(err)
		}
		defer p.close()
		pubs[i] = p
	}
	// One message each first: joining the rooms is not what is measured.
	for _, p := range pubs {
		if err := p.send(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range pubs {
		if err := p.drain(ctx); err != nil {
			b.Fatal(err)
		}
	}
	for _, p := range pubs {
		p.reset()
	}

	b.ReportAllocs()
	i := 0
	for b.Loop() {
		if err := pubs[i%len(pubs)].send(ctx); err != nil {
			b.Fatal(err)
		}
		i++
	}
	// A closed loop: each SEND waited for a slot that an earlier RECEIPT
	// freed, so ops per second is the receipted rate, to within the
	// window still in flight (drained untimed).
	rate := float64(b.N) / b.Elapsed().Seconds()
	for _, p := range pubs {
		if err := p.drain(ctx); err != nil {
			b.Fatal(err)
		}
	}
	var lat []time.Duration
	for _, p := range pubs {
		lat = append(lat, p.latencies()...)
	}
	slices.Sort(lat)
	b.ReportMetric(rate, "msgs/s")
	b.ReportMetric(float64(quantile(lat, 0.50).Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(quantile(lat, 0.99).Microseconds())/1000, "p99-ms")
}

func quantile(sorted []time.Duration, q float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	return sorted[min(len(sorted)-1, int(q*float64(len(sorted))))]
}

// receiptPub is one session sending receipted SENDs, at most benchWindow
// awaiting their RECEIPT; a reader matches RECEIPTs to SENDs in order,
// as the server answers frames in order.
type receiptPub struct {
	ws    *websocket.Conn
	frame []byte
	slots chan struct{} // a token per SEND in flight

	mu      sync.Mutex
	sent    []time.Time // send times awaiting a RECEIPT, in order
	lat     []time.Duration
	readErr error
	done    chan struct{}
}

func dialReceiptPub(ctx context.Context, url, login, room string) (*receiptPub, error) {
	ws, _, err := websocket.Dial(ctx, url, &websocket.DialOptions{Subprotocols: []string{"v12.stomp"}})
	if err != nil {
		return nil, fmt.Errorf("dial: %w", err)
	}
	ws.SetReadLimit(-1)
	if err := ws.Write(ctx, websocket.MessageText, []byte("CONNECT\naccept-version:1.2\nhost:bench\nlogin:"+login+"\nheart-beat:0,0\n\n\x00")); err != nil {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("write CONNECT: %w", err)
	}
	if _, msg, err := ws.Read(ctx); err != nil || !bytes.HasPrefix(msg, []byte("CONNECTED")) {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("CONNECTED: %q %v", msg, err)
	}
	p := &receiptPub{
		ws:    ws,
		frame: []byte("SEND\ndestination:/app/chat." + room + "\ncontent-type:application/json\nreceipt:r\n\n{\"message\":\"hello there, a chat message of ordinary length\"}\x00"),
		slots: make(chan struct{}, benchWindow),
		done:  make(chan struct{}),
	}
	go p.read()
	return p, nil
}

// send waits for a free slot and sends one SEND.
func (p *receiptPub) send(ctx context.Context) error {
	select {
	case p.slots <- struct{}{}:
	case <-p.done:
		return p.err()
	case <-ctx.Done():
		return ctx.Err()
	}
	p.mu.Lock()
	p.sent = append(p.sent, time.Now())
	p.mu.Unlock()
	return p.ws.Write(ctx, websocket.MessageText, p.frame)
}

// drain waits until every SEND has its RECEIPT.
func (p *receiptPub) drain(ctx context.Context) error {
	for range benchWindow {
		select {
		case p.slots <- struct{}{}:
		case <-p.done:
			return p.err()
		case <-ctx.Done():
			return fmt.Errorf("RECEIPTs outstanding: %w", ctx.Err())
		}
	}
	for range benchWindow {
		<-p.slots
	}
	return nil
}

func (p *receiptPub) read() {
	defer close(p.done)
	for {
		_, r, err := p.ws.Reader(context.Background())
		if err != nil {
			p.fail(err)
			return
		}
		msg, err := io.ReadAll(r)
		if err != nil {
			p.fail(err)
			return
		}
		if bytes.HasPrefix(msg, []byte("ERROR")) {
			p.fail(fmt.Errorf("server: %q", msg))
			return
		}
		now := time.Now()
		n := bytes.Count(msg, []byte("RECEIPT"))
		p.mu.Lock()
		for range n {
			p.lat = append(p.lat, now.Sub(p.sent[0]))
			p.sent = p.sent[1:]
		}
		p.mu.Unlock()
		for range n {
			<-p.slots
		}
	}
}

func (p *receiptPub) fail(err error) {
	p.mu.Lock()
	if p.readErr == nil {
		p.readErr = err
	}
	p.mu.Unlock()
}

func (p *receiptPub) err() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.readErr == nil {
		return errors.New("connection closed")
	}
	return p.readErr
}

func (p *receiptPub) reset() {
	p.mu.Lock()
	p.lat = p.lat[:0]
	p.mu.Unlock()
}

func (p *receiptPub) latencies() []time.Duration {
	p.mu.Lock()
	defer p.mu.Unlock()
	return slices.Clone(p.lat)
}

func (p *receiptPub) close() { _ = p.ws.CloseNow() }
