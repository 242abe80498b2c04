// The STOMP commands: CONNECT (version negotiation, authentication) and
// SEND, SUBSCRIBE, UNSUBSCRIBE, ACK, NACK, BEGIN, COMMIT, ABORT and
// DISCONNECT, with receipts and errors kept in frame order (finish,
// complete) while SENDs complete asynchronously.

package stompws

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/stompws/frame"
)

// handle dispatches one client frame.
func (s *Session) handle(f *frame.Frame) error {
	s.cfg.Observer.FrameIn(f.Command)
	if !s.connected.Load() {
		if f.Command == "CONNECT" || f.Command == "STOMP" {
			return s.onConnect(f)
		}
		s.fail(&Error{Kind: KindConnect, Message: "expected CONNECT frame, got " + f.Command}, "", closePolicy, false)
		return errStop
	}
	if s.halted.Load() {
		return nil
	}
	switch f.Command {
	case "SEND":
		s.onSend(f, false)
	case "SUBSCRIBE":
		s.onSubscribe(f)
	case "UNSUBSCRIBE":
		s.onUnsubscribe(f)
	case "ACK":
		s.onAck(f, false)
	case "NACK":
		s.onAck(f, true)
	case "BEGIN":
		s.onBegin(f)
	case "COMMIT":
		s.onCommit(f)
	case "ABORT":
		s.onAbort(f)
	case "DISCONNECT":
		// The close (1000) follows the receipts of earlier frames, SENDs
		// still being stored included; until then the read loop goes on, so
		// that ending it does not cut the session short.
		s.halted.Store(true)
		s.finish(f.Value("receipt"), nil, s.closeGracefully)
	case "CONNECT", "STOMP":
		s.reject(f, KindConnect, "already connected")
	default:
		s.reject(f, KindMalformed, "unknown command "+f.Command)
	}
	if s.isClosing() {
		return errStop
	}
	return nil
}

// reject answers a bad frame with an ERROR (after earlier receipts) and
// ends the session.
func (s *Session) reject(f *frame.Frame, kind, msg string) {
	s.finish(f.Value("receipt"), &Error{Kind: kind, Message: msg}, nil)
}

func (s *Session) onConnect(f *frame.Frame) error {
	v, ok := negotiate(f.Value("accept-version"))
	if !ok {
		s.failWith(&Error{Kind: KindConnect, Message: "unsupported STOMP version", Detail: "supported versions are 1.0, 1.1 and 1.2"},
			[]frame.Header{{Name: "version", Value: "1.2,1.1,1.0"}}, closePolicy)
		return errStop
	}
	hbHeader, hbPresent := f.Get("heart-beat")
	cx, cy, ok := parseHeartBeat(hbHeader)
	if !ok {
		s.fail(&Error{Kind: KindConnect, Message: "invalid heart-beat header"}, "", closePolicy, false)
		return errStop
	}
	actx, cancel := context.WithTimeout(s.ctx, s.cfg.ConnectTimeout)
	p, err := s.srv.h.Authenticate(actx, &ConnectRequest{Frame: f, Request: s.req, Version: v})
	cancel()
	s.req = nil // only CONNECT needs the handshake; an idle session should not keep it
	if err != nil {
		s.fail(s.clientError(err), "", closePolicy, false)
		return errStop
	}
	if p.User == "" {
		s.fail(s.clientError(errors.New("authenticator returned no user")), "", closePolicy, false)
		return errStop
	}
	if !s.srv.admitUser(p.User) {
		s.fail(Errorf(KindLimit, "too many connections for this user (limit %d)", s.cfg.MaxSessionsPerUser), "", closePolicy, false)
		return errStop
	}
	s.principal, s.counted = p, s.cfg.MaxSessionsPerUser > 0
	out, in := agreeHeartBeats(v, hbPresent, cx, cy, s.cfg.HeartBeat, s.cfg.HeartBeatMin)
	s.version = v
	s.log = s.log.With("user", p.User)
	s.dec = frame.Decoder{Limits: s.cfg.Limits, Version: v}
	every := out
	if every == 0 && s.sockjsBeat > 0 {
		every = s.sockjsBeat
		s.sockjsH.Store(true)
	}
	s.sendEvery.Store(int64(every))
	if every > 0 {
		s.heartBeat.Store(time.AfterFunc(every, s.beat))
	}
	if in > 0 {
		s.recvLimit.Store(int64(in + s.cfg.HeartBeatGrace))
	}
	s.connected.Store(true)
	s.cfg.Observer.SessionConnected()
	if in > 0 {
		// Watch the agreed interval from now on: the watchdog was set for
		// the CONNECT timeout, which may be longer.
		s.watchdog.Reset(in + s.cfg.HeartBeatGrace)
	}
	hb := strconv.FormatInt(out.Milliseconds(), 10) + "," + strconv.FormatInt(in.Milliseconds(), 10)
	connected := frame.AppendFrame(nil, v, "CONNECTED", []frame.Header{
		{Name: "version", Value: v.String()},
		{Name: "heart-beat", Value: hb},
		{Name: "server", Value: s.cfg.ServerName},
		{Name: "session", Value: s.id},
		{Name: "user-name", Value: p.User},
	}, nil)
	s.enqueueRaw(connected)
	if !p.Expires.IsZero() {
		s.expiry = time.AfterFunc(time.Until(p.Expires), func() {
			s.fail(&Error{Kind: KindConnect, Message: "credentials expired"}, "", closePolicy, false)
		})
	}
	s.log.Debug("session connected", "version", v.String(), "heartbeat_out", out, "heartbeat_in", in)
	return nil
}

func negotiate(accept string) (frame.Version, bool) {
	if accept == "" {
		return frame.V10, true
	}
	best := frame.Version(0)
	for _, a := range strings.Split(accept, ",") {
		var v frame.Version
		switch strings.TrimSpace(a) {
		case "1.0":
			v = frame.V10
		case "1.1":
			v = frame.V11
		case "1.2":
			v = frame.V12
		}
		best = max(best, v)
	}
	return best, best != 0
}

func (s *Session) onSend(f *frame.Frame, committing bool) {
	if f.Value("destination") == "" {
		s.reject(f, KindMalformed, "SEND without destination")
		return
	}
	// Counted as they arrive; a committed transaction's SENDs were already.
	if !committing && s.sendLimit != nil && !s.sendLimit.Allow() {
		s.reject(f, KindLimit, fmt.Sprintf("SEND rate limit exceeded (limit %g per second, burst %d)", s.cfg.SendRate, s.sendLimit.Burst()))
		return
	}
	if tx := f.Value("transaction"); tx != "" && !committing {
		s.addToTx(tx, f)
		return
	}
	receipt := f.Value("receipt")
	if committing {
		receipt = "" // acknowledged when the transaction took it
	}
	select {
	case s.inflight <- struct{}{}:
	default:
		// Back-pressure: reading stops until a SEND completes, which may
		// take the store's whole timeout in an outage. Heart-beats the
		// client sends meanwhile wait unread, so its silence is not held
		// against it, from now until reading goes on.
		s.heldBack.Store(true)
		stopped := false
		select {
		case s.inflight <- struct{}{}:
		case <-s.stop:
			stopped = true
		}
		s.lastRead.Store(time.Now().UnixNano())
		s.heldBack.Store(false)
		if stopped {
			return
		}
	}
	o := &op{receipt: receipt, async: true}
	s.mu.Lock()
	s.ops = append(s.ops, o)
	s.mu.Unlock()
	var once atomic.Bool
	s.srv.h.Send(s.ctx, s, f, func(err error) {
		if once.CompareAndSwap(false, true) {
			s.complete(o, err)
		}
	})
}

// finish records a frame handled synchronously: its receipt (or error)
// goes out after those of earlier frames.
func (s *Session) finish(receipt string, err error, after func()) {
	o := &op{receipt: receipt, after: after}
	s.mu.Lock()
	s.ops = append(s.ops, o)
	s.mu.Unlock()
	s.complete(o, err)
}

func (s *Session) complete(o *op, err error) {
	if o.async {
		<-s.inflight
	}
	if err != nil {
		// The ERROR waits for earlier SENDs' receipts; nothing the client
		// sent after the failed frame may take effect meanwhile.
		s.halted.Store(true)
	}
	var after []func()
	s.mu.Lock()
	o.done, o.err = true, err
	for len(s.ops) > 0 && s.ops[0].done {
		h := s.ops[0]
		s.ops[0] = nil
		s.ops = s.ops[1:]
		if h.err != nil {
			s.failLocked(s.clientError(h.err), nil, h.receipt, closePolicy, false)
			s.ops = nil
			break
		}
		if h.receipt != "" && !s.closing {
			s.pushLocked(outItem{raw: frame.AppendFrame(nil, s.version, "RECEIPT", []frame.Header{{Name: "receipt-id", Value: h.receipt}}, nil)})
		}
		if h.after != nil {
			after = append(after, h.after)
		}
	}
	if len(s.ops) == 0 {
		s.ops = nil
	}
	s.mu.Unlock()
	s.flush()
	for _, f := range after {
		f()
	}
}

func (s *Session) onSubscribe(f *frame.Frame) {
	dest := f.Value("destination")
	if dest == "" {
		s.reject(f, KindMalformed, "SUBSCRIBE without destination")
		return
	}
	id, ok := f.Get("id")
	if !ok {
		if s.version != frame.V10 {
			s.reject(f, KindMalformed, "SUBSCRIBE without id")
			return
		}
		id = dest // STOMP 1.0: the destination names the subscription
	}
	mode, ok := parseAck(f.Value("ack"), s.version)
	if !ok {
		s.reject(f, KindRequest, "invalid ack mode "+strconv.Quote(f.Value("ack")))
		return
	}
	s.mu.Lock()
	_, dup := s.subs[id]
	n := len(s.subs)
	s.mu.Unlock()
	switch {
	case dup:
		s.reject(f, KindSubscription, "subscription id "+strconv.Quote(id)+" already in use")
		return
	case n >= s.cfg.MaxSubscriptions:
		s.reject(f, KindLimit, "too many subscriptions (limit "+strconv.Itoa(s.cfg.MaxSubscriptions)+")")
		return
	}
	sub := newSubscription(s, id, dest, mode, f)
	if err := s.srv.h.Subscribe(s.ctx, sub); err != nil {
		s.finish(f.Value("receipt"), err, nil)
		return
	}
	s.mu.Lock()
	if s.closing {
		s.mu.Unlock()
		s.srv.h.Unsubscribe(sub)
		return
	}
	s.subs[id] = sub
	s.mu.Unlock()
	s.cfg.Observer.Subscribed()
	s.finish(f.Value("receipt"), nil, nil)
}

func parseAck(a string, v frame.Version) (AckMode, bool) {
	switch a {
	case "", "auto":
		return AckAuto, true
	case "client":
		return AckClient, true
	case "client-individual":
		return AckClientIndividual, v >= frame.V11
	}
	return 0, false
}

func (s *Session) onUnsubscribe(f *frame.Frame) {
	id, ok := f.Get("id")
	if !ok && s.version == frame.V10 {
		id, ok = f.Get("destination")
	}
	if !ok {
		s.reject(f, KindMalformed, "UNSUBSCRIBE without id")
		return
	}
	s.mu.Lock()
	sub := s.subs[id]
	if sub != nil {
		delete(s.subs, id)
		sub.closed = true
		sub.unacked = nil
	}
	s.mu.Unlock()
	if sub == nil {
		s.reject(f, KindSubscription, "no subscription "+strconv.Quote(id))
		return
	}
	s.srv.h.Unsubscribe(sub)
	s.cfg.Observer.Unsubscribed()
	s.finish(f.Value("receipt"), nil, nil)
}

func (s *Session) onAck(f *frame.Frame, nack bool) {
	if tx := f.Value("transaction"); tx != "" {
		s.addToTx(tx, f)
		return
	}
	if !s.applyAck(f) {
		name := "ACK"
		if nack {
			name = "NACK"
		}
		s.reject(f, KindAck, name+" for an unknown message")
		return
	}
	s.finish(f.Value("receipt"), nil, nil)
}

// applyAck settles one ACK or NACK. Topics do not redeliver, so NACK and ACK
// both release the message; what they bound is how many messages a
// client-ack subscriber may leave unsettled.
func (s *Session) applyAck(f *frame.Frame) bool {
	key := "message-id"
	if s.version == frame.V12 {
		key = "id"
	}
	n, err := strconv.ParseUint(f.Value(key), 10, 64)
	if err != nil {
		return false
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if subID, ok := f.Get("subscription"); ok && s.version == frame.V11 {
		sub := s.subs[subID]
		return sub != nil && sub.settle(n)
	}
	for _, sub := range s.subs {
		if sub.settle(n) {
			return true
		}
	}
	return false
}

func (s *Session) onBegin(f *frame.Frame) {
	name := f.Value("transaction")
	switch {
	case name == "":
		s.reject(f, KindMalformed, "BEGIN without transaction")
		return
	case s.txs[name] != nil:
		s.reject(f, KindAck, "transaction "+strconv.Quote(name)+" already begun")
		return
	case len(s.txs) >= s.cfg.MaxTransactions:
		s.reject(f, KindLimit, "too many open transactions (limit "+strconv.Itoa(s.cfg.MaxTransactions)+")")
		return
	}
	if s.txs == nil {
		s.txs = map[string]*transaction{}
	}
	s.txs[name] = &transaction{}
	s.finish(f.Value("receipt"), nil, nil)
}

func (s *Session) addToTx(name string, f *frame.Frame) {
	t := s.txs[name]
	switch {
	case t == nil:
		s.reject(f, KindAck, "unknown transaction "+strconv.Quote(name))
		return
	case len(t.frames) >= s.cfg.MaxTxFrames:
		s.reject(f, KindLimit, "transaction too large (limit "+strconv.Itoa(s.cfg.MaxTxFrames)+" frames)")
		return
	}
	t.frames = append(t.frames, f)
	s.finish(f.Value("receipt"), nil, nil)
}

func (s *Session) onCommit(f *frame.Frame) {
	name := f.Value("transaction")
	t := s.txs[name]
	if t == nil {
		s.reject(f, KindAck, "unknown transaction "+strconv.Quote(name))
		return
	}
	delete(s.txs, name)
	for _, tf := range t.frames {
		switch tf.Command {
		case "SEND":
			s.onSend(tf, true)
		default:
			if !s.applyAck(tf) {
				s.reject(tf, KindAck, tf.Command+" for an unknown message")
				return
			}
		}
		if s.isClosing() {
			return
		}
	}
	s.finish(f.Value("receipt"), nil, nil)
}

func (s *Session) onAbort(f *frame.Frame) {
	name := f.Value("transaction")
	if s.txs[name] == nil {
		s.reject(f, KindAck, "unknown transaction "+strconv.Quote(name))
		return
	}
	delete(s.txs, name)
	s.finish(f.Value("receipt"), nil, nil)
}
