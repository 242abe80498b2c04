package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/chatd/chatd/stompws/frame"
)

// runner holds one run's connections and counters.
type runner struct {
	cfg     config
	auth    *auth // nil: a chatd in dev mode, where the login is the user
	stderr  io.Writer
	dialers []*dialer
	nextSrc atomic.Uint64

	bodyPre, bodySuf string

	conns     connStats
	delivered atomic.Int64 // progress: deliveries so far
	secMax    atomic.Int64 // highest latency (ns) since the timeline's last tick
	phase     atomic.Value // string, for progress lines

	mu      sync.Mutex
	clients []*client // every connection held open, for closing
	wg      sync.WaitGroup
}

// client is one connection and what it does: subscribe, publish, or idle.
type client struct {
	conn loadConn
	sub  *subscriber
	pub  *publisher
	err  string // the server's ERROR message, if it sent one; read once ended is
	// replay, with since, follows a storm connection's replay (--storm-since).
	replay *replayCount
	since  int64
	ended  chan struct{} // closed when the connection's reading ends; nil: not kept
}

// connStats counts connection attempts.
type connStats struct {
	mu        sync.Mutex
	attempted int
	made      int
	failed    map[string]int // by stage
	errs      []string       // the first few distinct errors
	hist      latencyHist    // dial to CONNECTED (and RECEIPT when subscribing)
	dropped   atomic.Int64
	dropErrs  []string
}

func (s *connStats) note(errs *[]string, msg string) {
	if len(*errs) >= 5 {
		return
	}
	for _, e := range *errs {
		if e == msg {
			return
		}
	}
	*errs = append(*errs, msg)
}

func (s *connStats) result(d time.Duration, err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.attempted++
	if err == nil {
		s.made++
		s.hist.record(d)
		return
	}
	stage := "other"
	var ce *connectError
	if errors.As(err, &ce) {
		stage = ce.stage
	}
	if s.failed == nil {
		s.failed = map[string]int{}
	}
	s.failed[stage]++
	s.note(&s.errs, err.Error())
}

func (s *connStats) drop(reason string) {
	s.dropped.Add(1)
	s.mu.Lock()
	s.note(&s.dropErrs, reason)
	s.mu.Unlock()
}

func newRunner(cfg config, stderr io.Writer) *runner {
	r := &runner{cfg: cfg, stderr: stderr}
	for _, a := range cfg.Sources {
		r.dialers = append(r.dialers, newDialer(net.IP(a.AsSlice())))
	}
	r.bodyPre, r.bodySuf, _ = strings.Cut(cfg.Body, "{payload}")
	r.phase.Store("start")
	return r
}

func (r *runner) dialer() *dialer {
	return r.dialers[(r.nextSrc.Add(1)-1)%uint64(len(r.dialers))]
}

// open opens one connection (and its subscription, if dest is set) within
// the connect timeout, and starts reading from it.
func (r *runner) open(ctx context.Context, login, dest string, cl *client) error {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.ConnectTimeout)
	defer cancel()
	t0 := time.Now()
	o := connectOptions{url: r.cfg.URL, sockjs: r.cfg.Transport == transportSockJS, login: login, host: r.cfg.Host,
		heartBeat: r.cfg.HeartBeat, readBuffer: 1024}
	if cl.sub != nil {
		o.readBuffer = 32 << 10
	}
	var serve func() error
	var err error
	if r.cfg.Target == targetNATS {
		serve, err = r.openNATS(ctx, o, dest, cl)
	} else {
		serve, err = r.openSTOMP(ctx, o, dest, cl)
	}
	r.conns.result(time.Since(t0), err)
	if err != nil {
		return err
	}
	r.mu.Lock()
	r.clients = append(r.clients, cl)
	r.mu.Unlock()
	r.wg.Add(1)
	go func() {
		defer r.wg.Done()
		err := serve()
		if cl.sub != nil {
			cl.sub.leave() // its publishers wait for it no longer
		}
		if cl.ended != nil {
			defer close(cl.ended)
		}
		if !cl.conn.closedByUs() {
			reason := err.Error()
			if cl.err != "" {
				reason = "ERROR " + cl.err
			}
			r.conns.drop(reason)
		}
	}()
	return nil
}

// openSTOMP connects and subscribes over STOMP, and returns the read loop.
func (r *runner) openSTOMP(ctx context.Context, o connectOptions, dest string, cl *client) (func() error, error) {
	if r.auth != nil {
		tok, err := r.auth.token(o.login)
		if err != nil {
			return nil, &connectError{"connect", err}
		}
		o.passcode = tok
	}
	c, err := dialSTOMP(ctx, r.dialer(), o)
	if err == nil && dest != "" {
		var extra []frame.Header
		if cl.replay != nil {
			extra = append(extra, frame.Header{Name: "since-id", Value: strconv.FormatInt(cl.since, 10)})
		}
		var early int
		if early, err = c.subscribe(ctx, "0", dest, extra...); err != nil {
			c.close()
		} else if cl.replay != nil {
			cl.replay.add(int64(early), time.Now().UnixNano())
		}
	}
	if err != nil {
		return nil, err
	}
	cl.conn = c
	return func() error { return c.serve(cl.handle, &r.delivered) }, nil
}

// openNATS connects and subscribes over NATS, and returns the read loop.
func (r *runner) openNATS(ctx context.Context, o connectOptions, subject string, cl *client) (func() error, error) {
	c, err := dialNATS(ctx, r.dialer(), o)
	if err == nil && subject != "" {
		if err = c.subscribe(ctx, "1", subject); err != nil {
			c.close()
		}
	}
	if err != nil {
		return nil, err
	}
	cl.conn = c
	return func() error { return c.serve(cl.handleNATS, &r.delivered) }, nil
}

// openAll runs n connection attempts, at most conc at a time, within the
// setup timeout. It returns how many failed.
func (r *runner) openAll(ctx context.Context, n, conc int, open func(ctx context.Context, i int) error) int {
	ctx, cancel := context.WithTimeout(ctx, r.cfg.SetupTimeout)
	defer cancel()
	var next, failed atomic.Int64
	var wg sync.WaitGroup
	for range min(conc, n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1) - 1)
				if i >= n || ctx.Err() != nil {
					return
				}
				if open(ctx, i) != nil {
					failed.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	return int(failed.Load())
}

// handle is the read loop's callback: it returns 1 for a counted delivery.
func (cl *client) handle(f *frame.View, now int64) int {
	switch string(f.Command()) {
	case "MESSAGE":
		if cl.replay != nil {
			cl.replay.add(1, now)
		}
		if cl.sub != nil {
			return cl.sub.onMessage(f.Body(), now)
		}
	case "RECEIPT":
		if cl.pub != nil {
			cl.pub.onReceipt(now)
		}
	case "ERROR":
		msg, _ := f.Header("message")
		cl.err = msg
	}
	return 0
}

// handleNATS is handle for the NATS target.
func (cl *client) handleNATS(op *natsOp, now int64) int {
	switch op.kind {
	case natsMsg:
		if cl.sub != nil {
			return cl.sub.onMessage(op.payload, now)
		}
	case natsErr:
		cl.err = string(op.text)
	}
	return 0
}

// closeAll closes every connection and waits for the read loops to end.
func (r *runner) closeAll() {
	r.mu.Lock()
	cls := r.clients
	r.clients = nil
	r.mu.Unlock()
	for _, cl := range cls {
		cl.conn.close()
	}
	done := make(chan struct{})
	go func() { r.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		_, _ = fmt.Fprintln(r.stderr, "chatbench: read loops still running 30s after closing")
	}
}

// sleep waits d or until ctx ends; it reports whether ctx is still live.
func sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return false
	case <-t.C:
		return true
	}
}

// report is a run's result.
type report struct {
	Config     config     `json:"config"`
	Started    time.Time  `json:"started"`
	ElapsedS   float64    `json:"elapsed_s"`
	Interruped bool       `json:"interrupted,omitempty"`
	LoadAvg    string     `json:"load_avg,omitempty"` // /proc/loadavg's 1, 5 and 15 minute averages at the start
	Conns      connReport `json:"connections"`

	Traffic *trafficReport `json:"traffic,omitempty"`
	Idle    *idleReport    `json:"idle,omitempty"`
	Storm   []stormWave    `json:"storm,omitempty"`

	Server *procReport `json:"server,omitempty"` // over the whole run
	Client *procReport `json:"client,omitempty"` // chatbench itself
}

type connReport struct {
	Attempted      int            `json:"attempted"`
	Made           int            `json:"made"`
	Failed         int            `json:"failed"`
	FailedByStage  map[string]int `json:"failed_by_stage,omitempty"`
	Dropped        int64          `json:"dropped"` // closed by the server or the network during the run
	Errors         []string       `json:"errors,omitempty"`
	DropReasons    []string       `json:"drop_reasons,omitempty"`
	ConnectLatency latencySummary `json:"connect_latency"`
}

type trafficReport struct {
	Rooms           int            `json:"rooms"`
	Subscribers     int            `json:"subscribers"`
	Publishers      int            `json:"publishers"`
	PublishS        float64        `json:"publish_s"`
	DeliverS        float64        `json:"deliver_s"` // publish start to last delivery
	Counts          deliveryCounts `json:"messages"`
	SentPerSec      float64        `json:"sent_per_s"`
	DeliveredPerSec float64        `json:"delivered_per_s"`
	Latency         latencySummary `json:"latency"`
	Receipts        *receiptReport `json:"receipts,omitempty"`
	BehindMaxMS     float64        `json:"publisher_behind_max_ms"` // fixed rate: worst lag behind schedule
	Timeline        []tick         `json:"timeline"`                // per second from the start of publishing
	Server          *procReport    `json:"server,omitempty"`        // during publishing
	Client          *procReport    `json:"client,omitempty"`
	// From publishing's start until every delivery is in (or the drain's
	// bound), per delivery: the server's and chatbench's own.
	ServerCost *deliveryCost `json:"server_cost,omitempty"`
	ClientCost *deliveryCost `json:"client_cost,omitempty"`
	// OtherCPUPercent is the user-mode CPU other processes took over the
	// same window (100: one core), with --server-pid or --target nats.
	OtherCPUPercent float64 `json:"other_cpu_percent"`
	Ahead           int     `json:"ahead,omitempty"` // --ahead
}

type receiptReport struct {
	Acked   uint64         `json:"acked"`
	Latency latencySummary `json:"latency"`
}

type idleReport struct {
	Connections      int         `json:"connections"`
	HoldS            float64     `json:"hold_s"`
	ServerRSSBaseMiB float64     `json:"server_rss_base_mib"`
	ServerRSSHeldMiB float64     `json:"server_rss_held_mib"`
	ServerKiBPerConn float64     `json:"server_kib_per_conn"`
	Server           *procReport `json:"server,omitempty"` // while held
}

type stormWave struct {
	Wave           int            `json:"wave"`
	Attempted      int            `json:"attempted"`
	Made           int            `json:"made"`
	Failed         int            `json:"failed"`
	OpenS          float64        `json:"open_s"`
	ConnsPerSec    float64        `json:"conns_per_s"`
	ConnectLatency latencySummary `json:"connect_latency"`
	Dropped        int64          `json:"dropped"`
	CloseS         float64        `json:"close_s"`
	Server         *procReport    `json:"server,omitempty"`
	// With --storm-since: the replays, and the bystander's SENDs meanwhile.
	Replay    *replayReport    `json:"replay,omitempty"`
	Bystander *bystanderReport `json:"bystander,omitempty"`
}

// run carries out the configured phases: storm waves, then idle
// connections, then traffic (or, without traffic, holding the idle ones).
func run(ctx context.Context, cfg config, stderr io.Writer) (*report, error) {
	ctx, cancel := context.WithTimeout(ctx, cfg.Timeout)
	defer cancel()
	if cfg.Target == targetNATS && cfg.URL == "" {
		srv, err := startNATSChild(ctx, cfg.HeartBeat, stderr)
		if err != nil {
			return nil, err
		}
		defer func() {
			if err := srv.stop(); err != nil {
				_, _ = fmt.Fprintln(stderr, "chatbench:", err)
			}
		}()
		cfg.URL, cfg.ServerPID = srv.url, srv.pid
	}
	r := newRunner(cfg, stderr)
	rep := &report{Config: cfg, Started: time.Now(), LoadAvg: loadAvg()}
	if cfg.JWTSecret != "" {
		a, err := newAuth(&cfg)
		if err != nil {
			return nil, err
		}
		r.auth = a
		if err := a.ensureRooms(ctx, r.roomMembers(), cfg.DialConcurrency); err != nil {
			return nil, fmt.Errorf("set up rooms through chatd's API: %w", err)
		}
	}

	var server *sampler
	if cfg.ServerPID > 0 {
		if _, err := readProc(cfg.ServerPID); err != nil {
			return nil, fmt.Errorf("--server-pid: %w", err)
		}
		server = newSampler(cfg.ServerPID, cfg.SampleEvery)
	}
	sctx, stopSampling := context.WithCancel(ctx)
	var samplers sync.WaitGroup
	if server != nil {
		samplers.Go(func() { server.run(sctx) })
	}
	self := newSampler(os.Getpid(), cfg.SampleEvery)
	samplers.Go(func() { self.run(sctx) })
	defer func() { stopSampling(); samplers.Wait() }()
	window := func(s *sampler, from, to time.Time) *procReport {
		if s == nil {
			return nil
		}
		w := s.window(from, to)
		return &w
	}
	if !cfg.Quiet {
		pctx, stopProgress := context.WithCancel(ctx)
		var pwg sync.WaitGroup
		pwg.Go(func() { r.progress(pctx) })
		defer func() { stopProgress(); pwg.Wait() }()
	}

	if cfg.Storm > 0 {
		rep.Storm = r.storm(ctx, server)
	}
	if cfg.Idle > 0 && ctx.Err() == nil {
		rep.Idle = r.openIdle(ctx, server)
	}
	if cfg.Rooms > 0 && ctx.Err() == nil {
		rep.Traffic = r.traffic(ctx, server, self)
	} else if rep.Idle != nil && ctx.Err() == nil {
		r.phase.Store("hold")
		from := time.Now()
		sleep(ctx, cfg.Hold)
		if server != nil {
			held := server.sample()
			rep.Idle.ServerRSSHeldMiB = mib(held.RSS)
			if n := rep.Idle.Connections; n > 0 && held.RSS > 0 {
				base := int64(rep.Idle.ServerRSSBaseMiB * (1 << 20))
				rep.Idle.ServerKiBPerConn = float64((held.RSS-base)*10/int64(n)/1024) / 10
			}
		}
		rep.Idle.HoldS = time.Since(from).Seconds()
		rep.Idle.Server = window(server, from, time.Now())
	}
	r.phase.Store("close")
	r.closeAll()
	rep.Interruped = ctx.Err() != nil

	end := time.Now()
	if server != nil {
		server.sample()
	}
	self.sample()
	rep.ElapsedS = end.Sub(rep.Started).Seconds()
	rep.Server = window(server, rep.Started, time.Now())
	rep.Client = window(self, rep.Started, time.Now())
	rep.Conns = r.conns.report()
	return rep, nil
}

func (s *connStats) report() connReport {
	s.mu.Lock()
	defer s.mu.Unlock()
	cr := connReport{
		Attempted: s.attempted, Made: s.made, Failed: s.attempted - s.made,
		FailedByStage: s.failed, Dropped: s.dropped.Load(),
		Errors: s.errs, DropReasons: s.dropErrs, ConnectLatency: s.hist.summary(),
	}
	return cr
}

func (r *runner) progress(ctx context.Context) {
	t := time.NewTicker(time.Second)
	defer t.Stop()
	start := time.Now()
	var last int64
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		d := r.delivered.Load()
		r.conns.mu.Lock()
		made, attempted := r.conns.made, r.conns.attempted
		r.conns.mu.Unlock()
		_, _ = fmt.Fprintf(r.stderr, "%5.0fs %-8s conns %d/%d dropped %d  delivered %d (%d/s)\n",
			time.Since(start).Seconds(), r.phase.Load(), made, attempted, r.conns.dropped.Load(), d, d-last)
		last = d
	}
}

// roomMembers lists, room by room, the logins the run's phases will use
// there, in the names traffic, openIdle and storm give them; the first
// of each room owns it.
func (r *runner) roomMembers() map[string][]string {
	cfg := r.cfg
	rooms := map[string][]string{}
	for room := range cfg.Rooms {
		name := cfg.roomName(room)
		base := cfg.UserPrefix + "r" + strconv.Itoa(room)
		for m := range cfg.Members {
			rooms[name] = append(rooms[name], base+"m"+strconv.Itoa(m))
		}
		if cfg.SeparatePublishers {
			for j := range cfg.Publishers {
				rooms[name] = append(rooms[name], base+"p"+strconv.Itoa(j))
			}
		}
	}
	if cfg.IdleRooms > 0 {
		for i := range cfg.Idle {
			name := cfg.roomName(i % cfg.IdleRooms)
			rooms[name] = append(rooms[name], cfg.UserPrefix+"idle"+strconv.Itoa(i))
		}
	}
	if cfg.StormRooms > 0 {
		for i := range cfg.Storm {
			name := cfg.roomName(i % cfg.StormRooms)
			rooms[name] = append(rooms[name], cfg.UserPrefix+"s"+strconv.Itoa(i))
		}
		if cfg.StormSince >= 0 {
			for room := range cfg.StormRooms {
				name := cfg.roomName(room)
				rooms[name] = append([]string{cfg.UserPrefix + "prefill" + strconv.Itoa(room)}, rooms[name]...)
			}
		}
		if cfg.StormBystander > 0 {
			rooms[cfg.roomName(cfg.StormRooms)] = []string{cfg.UserPrefix + "bystander"}
		}
	}
	return rooms
}

// openIdle opens the idle connections and reports the server's memory.
func (r *runner) openIdle(ctx context.Context, server *sampler) *idleReport {
	r.phase.Store("idle")
	rep := &idleReport{}
	if server != nil {
		rep.ServerRSSBaseMiB = mib(server.sample().RSS)
	}
	failed := r.openAll(ctx, r.cfg.Idle, r.cfg.DialConcurrency, func(ctx context.Context, i int) error {
		dest := ""
		if r.cfg.IdleRooms > 0 {
			dest = r.cfg.subDest(r.cfg.roomName(i % r.cfg.IdleRooms))
		}
		return r.open(ctx, r.cfg.UserPrefix+"idle"+strconv.Itoa(i), dest, &client{})
	})
	rep.Connections = r.cfg.Idle - failed
	return rep
}

// traffic sets up rooms, publishes, and waits for deliveries.
func (r *runner) traffic(ctx context.Context, server, self *sampler) *trafficReport {
	cfg := r.cfg
	r.phase.Store("setup")
	P := cfg.Publishers
	subs := make([][]*subscriber, cfg.Rooms)
	pubs := make([]*publisher, cfg.Rooms*P)
	type job struct {
		room, member int
		pub          bool // a separate publisher
	}
	var jobs []job
	for room := range cfg.Rooms {
		for m := range cfg.Members {
			jobs = append(jobs, job{room: room, member: m})
		}
		if cfg.SeparatePublishers {
			for j := range P {
				jobs = append(jobs, job{room: room, member: j, pub: true})
			}
		}
		subs[room] = make([]*subscriber, cfg.Members)
	}
	// gates[room*P+j] holds publisher j of the room to --ahead.
	var gates []*aheadGate
	if cfg.Ahead > 0 {
		gates = make([]*aheadGate, cfg.Rooms*P)
		for i := range gates {
			gates[i] = newAheadGate(cfg.Ahead, cfg.Members)
		}
	}
	var subsMu sync.Mutex
	r.openAll(ctx, len(jobs), cfg.DialConcurrency, func(ctx context.Context, i int) error {
		jb := jobs[i]
		room := cfg.roomName(jb.room)
		cl := &client{}
		login := cfg.UserPrefix + "r" + strconv.Itoa(jb.room)
		dest := ""
		if jb.pub {
			login += "p" + strconv.Itoa(jb.member)
		} else {
			login += "m" + strconv.Itoa(jb.member)
			dest = cfg.subDest(room)
			cl.sub = &subscriber{run: cfg.Run, base: uint32(jb.room * P), trackers: make([]seqTracker, P), secMax: &r.secMax,
				member: jb.member}
			if gates != nil {
				cl.sub.gates = gates[jb.room*P : (jb.room+1)*P]
			}
			if d := cfg.dropOne; d != nil && d.room == jb.room && d.member == jb.member {
				cl.sub.skip = d.seq
			}
		}
		if jb.pub || jb.member < P && !cfg.SeparatePublishers {
			id := jb.room*P + jb.member
			cl.pub = &publisher{id: uint32(id), dest: cfg.sendDest(room), receipts: cfg.Receipts}
			if gates != nil {
				cl.pub.gate = gates[id]
			}
		}
		if err := r.open(ctx, login, dest, cl); err != nil {
			return err
		}
		cl.pub.attach(cl.conn)
		subsMu.Lock()
		defer subsMu.Unlock()
		if cl.sub != nil {
			subs[jb.room][jb.member] = cl.sub
		}
		if cl.pub != nil {
			pubs[cl.pub.id] = cl.pub
		}
		return nil
	})
	rep := &trafficReport{Rooms: cfg.Rooms, Ahead: cfg.Ahead}
	for room, rs := range subs {
		for m, s := range rs {
			if s != nil {
				rep.Subscribers++
			} else if gates != nil {
				// It failed to connect: no publisher waits for it.
				for _, g := range gates[room*P : (room+1)*P] {
					g.leave(m)
				}
			}
		}
	}
	for _, p := range pubs {
		if p != nil {
			rep.Publishers++
		}
	}
	if ctx.Err() != nil {
		return rep
	}

	// Publish: every publisher starts at its own offset within one interval,
	// so that fixed-rate traffic is smooth rather than in lockstep bursts.
	r.phase.Store("publish")
	// Samples just before publishing and once every delivery is in (or
	// the drain's bound) frame the cost per delivery: all the work a
	// delivery caused, including what the server did after the last send.
	var serverFrom procSample
	if server != nil {
		serverFrom = server.sample()
	}
	selfFrom := self.sample()
	machineFrom, machineOK := machineUserCPU()
	start := time.Now().Add(50 * time.Millisecond)
	end := start.Add(cfg.Duration)
	tctx, stopTimeline := context.WithCancel(ctx)
	var twg sync.WaitGroup
	twg.Go(func() { rep.Timeline = r.timeline(tctx, start, pubs) })
	var pwg sync.WaitGroup
	for i, p := range pubs {
		if p == nil {
			continue
		}
		var offset time.Duration
		if cfg.Rate > 0 {
			offset = time.Duration(float64(i) / float64(len(pubs)) * float64(time.Second) / cfg.Rate)
		}
		pwg.Go(func() {
			defer p.done.Store(true)
			p.run(ctx, r, start, end, offset)
		})
	}
	pubsDone := make(chan struct{})
	go func() { pwg.Wait(); close(pubsDone) }()
	select {
	case <-pubsDone:
	case <-ctx.Done():
	case <-time.After(time.Until(end) + cfg.Drain):
	}
	select {
	case <-pubsDone:
	default:
		// A write the server holds back (it stops reading a session with
		// too many SENDs in flight) outlived the bound: cut those publishers.
		for _, p := range pubs {
			if p != nil && !p.done.Load() {
				r.conns.drop("publisher cut: write blocked past --duration + --drain")
				p.conn.close()
			}
		}
		<-pubsDone
	}
	pubEnd := time.Now()

	// Drain: wait until every expected delivery is in, or the bound.
	r.phase.Store("drain")
	var sent uint64
	expected := int64(0)
	for room := range cfg.Rooms {
		var roomSent uint64
		for j := range P {
			if p := pubs[room*P+j]; p != nil {
				roomSent += p.sent.Load()
			}
		}
		n := 0
		for _, s := range subs[room] {
			if s != nil {
				n++
			}
		}
		sent += roomSent
		expected += int64(roomSent) * int64(n)
	}
	drainEnd := time.Now().Add(cfg.Drain)
	for r.delivered.Load() < expected && time.Now().Before(drainEnd) && ctx.Err() == nil {
		sleep(ctx, 10*time.Millisecond)
	}
	if n := r.delivered.Load(); n > 0 {
		selfTo := self.sample()
		rep.ClientCost = costOf(selfFrom, selfTo, uint64(n))
		if server != nil {
			serverTo := server.sample()
			rep.ServerCost = costOf(serverFrom, serverTo, uint64(n))
			// What else ran meanwhile: a busy machine distorts the figures.
			if machineTo, ok := machineUserCPU(); ok && machineOK && rep.ServerCost != nil {
				other := (machineTo - machineFrom) - (serverTo.User - serverFrom.User) - (selfTo.User - selfFrom.User)
				rep.OtherCPUPercent = max(0, pct(other, selfTo.At.Sub(selfFrom.At)))
			}
		}
	}
	// Messages still in flight at the bound count as lost; a short grace
	// catches duplicates that trail the last expected delivery.
	sleep(ctx, 200*time.Millisecond)
	stopTimeline()
	twg.Wait()
	r.phase.Store("report")
	rep.PublishS = pubEnd.Sub(start).Seconds()
	rep.Server = func() *procReport {
		if server == nil {
			return nil
		}
		w := server.window(start, pubEnd)
		return &w
	}()
	w := self.window(start, pubEnd)
	rep.Client = &w

	// Stop reading before adding up what the read loops counted.
	r.closeAll()
	var hist latencyHist
	var lastDelivery int64
	for room := range cfg.Rooms {
		sentBy := make([]uint64, P)
		for j := range P {
			if p := pubs[room*P+j]; p != nil {
				sentBy[j] = p.sent.Load()
			}
		}
		for _, s := range subs[room] {
			if s == nil {
				continue
			}
			rep.Counts.tally(s.trackers, sentBy)
			rep.Counts.Foreign += s.foreign
			hist.merge(s.hist)
			lastDelivery = max(lastDelivery, s.last)
		}
	}
	rep.Counts.Sent = sent
	rep.Latency = hist.summary()
	if rep.PublishS > 0 {
		rep.SentPerSec = float64(int64(float64(sent) / rep.PublishS))
	}
	if lastDelivery > 0 {
		rep.DeliverS = time.Unix(0, lastDelivery).Sub(start).Seconds()
		if rep.DeliverS > 0 {
			rep.DeliveredPerSec = float64(int64(float64(rep.Counts.Delivered) / rep.DeliverS))
		}
	}
	var rh latencyHist
	var acked uint64
	var behind time.Duration
	for _, p := range pubs {
		if p == nil {
			continue
		}
		p.mu.Lock()
		rh.merge(&p.rhist)
		acked += p.acked
		p.mu.Unlock()
		behind = max(behind, p.behind)
	}
	if cfg.Receipts {
		rep.Receipts = &receiptReport{Acked: acked, Latency: rh.summary()}
	}
	rep.BehindMaxMS = ms(behind)
	return rep
}

// tick is one second of a traffic run.
type tick struct {
	S            int     `json:"s"` // seconds since publishing started
	Sent         uint64  `json:"sent"`
	Delivered    int64   `json:"delivered"`
	MaxLatencyMS float64 `json:"max_latency_ms"` // of the deliveries counted in this second
}

// timeline records sends, deliveries and the worst latency each second, so
// that a stall shows when it happened (to line up with the server's GC or
// logs), which the run's percentiles cannot tell.
func (r *runner) timeline(ctx context.Context, start time.Time, pubs []*publisher) []tick {
	if !sleep(ctx, time.Until(start)) {
		return nil
	}
	t := time.NewTicker(time.Second)
	defer t.Stop()
	r.secMax.Store(0)
	var out []tick
	var lastSent uint64
	lastDelivered := r.delivered.Load()
	for i := 1; ; i++ {
		select {
		case <-ctx.Done():
			return out
		case <-t.C:
		}
		var sent uint64
		for _, p := range pubs {
			if p != nil {
				sent += p.sent.Load()
			}
		}
		d := r.delivered.Load()
		out = append(out, tick{S: i, Sent: sent - lastSent, Delivered: d - lastDelivered,
			MaxLatencyMS: ms(time.Duration(r.secMax.Swap(0)))})
		lastSent, lastDelivered = sent, d
	}
}

// storm opens and closes waves of connections.
func (r *runner) storm(ctx context.Context, server *sampler) []stormWave {
	var waves []stormWave
	replaying := r.cfg.StormSince >= 0
	if replaying {
		r.phase.Store("prefill")
		if err := r.prefill(ctx); err != nil {
			r.conns.note(&r.conns.errs, err.Error())
			return nil
		}
	}
	for w := range r.cfg.StormWaves {
		if ctx.Err() != nil {
			break
		}
		r.phase.Store("storm" + strconv.Itoa(w+1))
		dropsBefore := r.conns.dropped.Load()
		var hist latencyHist
		var hmu sync.Mutex
		var by *bystanderReport
		bctx, stopBystander := context.WithCancel(ctx)
		var bwg sync.WaitGroup
		if r.cfg.StormBystander > 0 {
			bwg.Go(func() { by = r.bystander(bctx) })
		}
		var opened stormClients
		t0 := time.Now()
		failed := r.openAll(ctx, r.cfg.Storm, r.cfg.StormConcurrency, func(ctx context.Context, i int) error {
			dest := ""
			if r.cfg.StormRooms > 0 {
				dest = r.cfg.subDest(r.cfg.roomName(i % r.cfg.StormRooms))
			}
			cl := &client{}
			if replaying {
				cl.replay, cl.since, cl.ended = newReplayCount(int64(r.cfg.StormPrefill)), r.cfg.StormSince, make(chan struct{})
			}
			c0 := time.Now()
			err := r.open(ctx, r.cfg.UserPrefix+"s"+strconv.Itoa(i), dest, cl)
			if err == nil {
				hmu.Lock()
				hist.record(time.Since(c0))
				hmu.Unlock()
				opened.add(cl)
			}
			return err
		})
		open := time.Since(t0)
		var replays *replayReport
		if replaying {
			rr := awaitReplays(ctx, opened.cls)
			rr.Wanted = r.cfg.Storm
			replays = &rr
		}
		stopBystander()
		bwg.Wait()
		sleep(ctx, r.cfg.StormHold)
		dropped := r.conns.dropped.Load() - dropsBefore
		t1 := time.Now()
		r.closeAll()
		wave := stormWave{
			Wave: w + 1, Attempted: r.cfg.Storm, Made: r.cfg.Storm - failed, Failed: failed,
			OpenS: open.Seconds(), ConnectLatency: hist.summary(), Dropped: dropped,
			CloseS: time.Since(t1).Seconds(), Replay: replays, Bystander: by,
		}
		if open > 0 {
			wave.ConnsPerSec = float64(int64(float64(wave.Made) / open.Seconds()))
		}
		if server != nil {
			pr := server.window(t0, time.Now())
			wave.Server = &pr
		}
		waves = append(waves, wave)
		if w+1 < r.cfg.StormWaves {
			sleep(ctx, r.cfg.StormHold) // let the server finish closing
		}
	}
	return waves
}

// subscriber accounts for what one subscribed connection receives.
type subscriber struct {
	run      string
	base     uint32       // first publisher id of the room
	trackers []seqTracker // by publisher within the room
	hist     *latencyHist // allocated on the first message
	foreign  uint64
	last     int64         // arrival of the last counted delivery
	secMax   *atomic.Int64 // the run's worst latency this second; nil: not kept
	// gates, by publisher within the room, hear of this subscriber's
	// progress as member (--ahead); nil: no bound.
	gates  []*aheadGate
	member int
	skip   uint64 // a test's: the first publisher's message of this sequence is ignored, as if lost
}

// leave tells the gates that this subscriber receives no more.
func (s *subscriber) leave() {
	for _, g := range s.gates {
		g.leave(s.member)
	}
}

func (s *subscriber) onMessage(body []byte, now int64) int {
	p, ok := parsePayload(body)
	if !ok || string(p.run) != s.run || p.pub < s.base || p.pub-s.base >= uint32(len(s.trackers)) {
		s.foreign++
		return 0
	}
	k := p.pub - s.base
	if s.skip != 0 && k == 0 && p.seq == s.skip {
		s.skip = 0
		return 0
	}
	t := &s.trackers[k]
	switch t.observe(p.seq) {
	case duplicate, invalid:
		return 0
	}
	if s.gates != nil {
		s.gates[k].advance(s.member, t.max)
	}
	if s.hist == nil {
		s.hist = &latencyHist{}
	}
	lat := now - p.ts
	s.hist.record(time.Duration(lat))
	s.last = now
	// Written only when it rises: the shared cache line is mostly read.
	for s.secMax != nil {
		cur := s.secMax.Load()
		if lat <= cur || s.secMax.CompareAndSwap(cur, lat) {
			break
		}
	}
	return 1
}

// publisher sends one room's messages from one connection.
type publisher struct {
	id       uint32
	dest     string
	receipts bool
	conn     loadConn
	gate     *aheadGate // nil: no --ahead bound
	sent     atomic.Uint64
	done     atomic.Bool
	behind   time.Duration // set by run

	mu      sync.Mutex
	pending []int64 // send times awaiting RECEIPT, in order
	rhist   latencyHist
	acked   uint64
}

func (p *publisher) attach(c loadConn) {
	if p != nil {
		p.conn = c
	}
}

// onReceipt matches a RECEIPT to the oldest SEND awaiting one: the server
// answers frames in order.
func (p *publisher) onReceipt(now int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.pending) == 0 {
		return // the SUBSCRIBE's, or not ours
	}
	p.rhist.record(time.Duration(now - p.pending[0]))
	p.pending = p.pending[1:]
	p.acked++
}

// run publishes from start until end (or --messages). At a fixed rate each
// message carries the time it was due, not the time it went out, so a
// server that holds the publisher back shows up in the latency
// (no coordinated omission).
func (p *publisher) run(ctx context.Context, r *runner, start, end time.Time, offset time.Duration) {
	cfg := &r.cfg
	encode := p.encoder(cfg)
	var wire, body []byte
	timer := time.NewTimer(time.Hour)
	defer timer.Stop()
	untilEnd := time.NewTimer(time.Until(end))
	defer untilEnd.Stop()
	for seq := uint64(1); cfg.Messages == 0 || seq <= uint64(cfg.Messages); seq++ {
		// Held back by --ahead first: at a fixed rate, time lost waiting
		// shows as lateness, below, and in the latency.
		if !p.gate.wait(ctx, seq, untilEnd.C) {
			return
		}
		var ts int64
		if cfg.Rate > 0 {
			due := start.Add(offset + time.Duration(float64(seq-1)*float64(time.Second)/cfg.Rate))
			if !due.Before(end) {
				return
			}
			if d := time.Until(due); d > 0 {
				timer.Reset(d)
				select {
				case <-ctx.Done():
					return
				case <-timer.C:
				}
			} else {
				p.behind = max(p.behind, -d)
			}
			ts = due.UnixNano()
		} else {
			now := time.Now()
			if now.Before(start) {
				if !sleep(ctx, start.Sub(now)) {
					return
				}
				now = time.Now()
			}
			if !now.Before(end) || ctx.Err() != nil {
				return
			}
			ts = now.UnixNano()
		}
		body = append(body[:0], r.bodyPre...)
		body = appendPayload(body, cfg.Run, p.id, seq, ts, cfg.MsgSize)
		body = append(body, r.bodySuf...)
		wire = encode(wire[:0], body, seq)
		if p.receipts {
			p.mu.Lock()
			p.pending = append(p.pending, time.Now().UnixNano())
			p.mu.Unlock()
		}
		if err := p.conn.write(wire); err != nil {
			if !p.conn.closedByUs() {
				r.conns.drop("publish: " + err.Error())
			}
			return
		}
		p.sent.Store(seq)
	}
}

// encoder returns what appends one message to the wire: a STOMP SEND or,
// with --target nats, a PUB of the same body to the room's subject.
func (p *publisher) encoder(cfg *config) func(wire, body []byte, seq uint64) []byte {
	if cfg.Target == targetNATS {
		return func(wire, body []byte, _ uint64) []byte { return appendPub(wire, p.dest, body) }
	}
	head := frame.AppendFrame(nil, frame.V12, "SEND",
		[]frame.Header{{Name: "destination", Value: p.dest}, {Name: "content-type", Value: cfg.ContentType}}, nil)
	head = head[:len(head)-2] // drop the blank line and NUL: more headers follow
	return func(wire, body []byte, seq uint64) []byte {
		wire = append(wire, head...)
		if p.receipts {
			wire = append(wire, "receipt:"...)
			wire = strconv.AppendUint(wire, seq, 10)
			wire = append(wire, '\n')
		}
		wire = append(wire, "content-length:"...)
		wire = strconv.AppendInt(wire, int64(len(body)), 10)
		wire = append(wire, "\n\n"...)
		wire = append(wire, body...)
		return append(wire, 0)
	}
}

// sortedKeys is for stable printing.
func sortedKeys(m map[string]int) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
