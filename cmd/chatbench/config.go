package main

import (
	"context"
	"crypto/rand"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"net/url"
	"os"
	"strconv"
	"strings"
	"time"
)

// config is one run's settings.
type config struct {
	Scenario    string `json:"scenario"`
	Label       string `json:"label,omitempty"`
	Target      string `json:"target"`
	URL         string `json:"url"`
	Transport   string `json:"transport"`
	SendDest    string `json:"send_dest"`
	SubDest     string `json:"sub_dest"`
	Body        string `json:"body"`
	ContentType string `json:"content_type"`
	Host        string `json:"host"`

	Rooms              int           `json:"rooms"`
	Members            int           `json:"members"`
	Publishers         int           `json:"publishers"`
	SeparatePublishers bool          `json:"separate_publishers"`
	Rate               float64       `json:"rate"` // messages/s per publisher; 0: flat out
	Messages           int           `json:"messages"`
	Duration           time.Duration `json:"duration_ns"`
	Drain              time.Duration `json:"drain_ns"`
	MsgSize            int           `json:"msg_size"`
	Receipts           bool          `json:"receipts"`
	Ahead              int           `json:"ahead"` // most messages a publisher may lead its room's slowest subscriber by; 0: no bound

	Idle      int           `json:"idle"`
	IdleRooms int           `json:"idle_rooms"`
	Hold      time.Duration `json:"hold_ns"`

	Storm            int           `json:"storm"`
	StormConcurrency int           `json:"storm_concurrency"`
	StormWaves       int           `json:"storm_waves"`
	StormHold        time.Duration `json:"storm_hold_ns"`
	StormRooms       int           `json:"storm_rooms"`
	StormSince       int64         `json:"storm_since"`
	StormPrefill     int           `json:"storm_prefill"`
	StormBystander   time.Duration `json:"storm_bystander_ns"`

	Sources         []netip.Addr  `json:"sources"`
	DialConcurrency int           `json:"dial_concurrency"`
	HeartBeat       time.Duration `json:"heartbeat_ns"`
	ConnectTimeout  time.Duration `json:"connect_timeout_ns"`
	SetupTimeout    time.Duration `json:"setup_timeout_ns"`
	Timeout         time.Duration `json:"timeout_ns"`

	RoomPrefix string `json:"room_prefix"`
	UserPrefix string `json:"user_prefix"`
	Run        string `json:"run"`

	ServerPID   int           `json:"server_pid"`
	SampleEvery time.Duration `json:"sample_every_ns"`
	JSON        bool          `json:"-"`
	JSONFile    string        `json:"-"`
	Strict      bool          `json:"-"`
	Quiet       bool          `json:"-"`
	CPUProfile  string        `json:"-"`

	// JWTSecret, when set, loads a chatd that checks tokens: see auth.
	JWTSecret   string `json:"-"`
	JWTIssuer   string `json:"jwt_issuer,omitempty"`
	JWTAudience string `json:"jwt_audience,omitempty"`

	// dropOne, set by a test, makes one subscriber ignore one message, as
	// if the server had lost it: the accounting must count it lost.
	dropOne *dropSpec
}

// dropSpec names the message a subscriber ignores: the first publisher's
// message seq, at member of room.
type dropSpec struct {
	room, member int
	seq          uint64
}

// preset returns the flags a scenario sets when they are not given.
func preset(scenario string) (map[string]string, bool) {
	p, ok := map[string]map[string]string{
		"chat": { // many rooms, few members, a slow publisher in each
			"rooms": "1000", "members": "5", "publishers": "1", "rate": "10", "duration": "20s",
		},
		"fanout": { // few rooms, many members, a fast publisher in each
			"rooms": "10", "members": "100", "publishers": "1", "separate-publishers": "true",
			"rate": "1000", "duration": "20s",
		},
		"idle": {"idle": "1000", "hold": "30s"},
		"storm": {
			"storm": "2000", "storm-concurrency": "500", "storm-waves": "3",
		},
	}[scenario]
	return p, ok
}

func parseConfig(args []string, stderr io.Writer) (config, error) {
	var c config
	fs := flag.NewFlagSet("chatbench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		_, _ = fmt.Fprint(stderr, "usage: chatbench --scenario chat|fanout|idle|storm [--target stomp|nats] [flags]\n"+
			"       chatbench table REPORT.json...                      (runs side by side)\n"+
			"       chatbench sustainable [--p99-ms 100] REPORT.json... (sustainable rates of a sweep)\n\n"+
			"A STOMP-over-WebSocket load generator, or NATS over WebSocket against a nats-server\n"+
			"it starts itself (--target nats). Targets loopback addresses only.\n"+
			"A scenario presets flags; any flag given explicitly wins.\n\n")
		fs.PrintDefaults()
	}
	fs.StringVar(&c.Scenario, "scenario", "chat", "preset: chat (many small rooms), fanout (few big rooms), idle (connections held open), storm (connection storms), or custom (flags only)")
	fs.StringVar(&c.Target, "target", targetSTOMP, "stomp: a STOMP server such as chatd at --url; nats: a nats-server WebSocket listener, which chatbench starts as a child process (or the one at --url), rooms as subjects chat.<room>")
	fs.StringVar(&c.Label, "label", "", "a name for the run, kept in the report (scripts/bench compare groups runs by it)")
	fs.StringVar(&c.URL, "url", "ws://127.0.0.1:8080/ws", "server WebSocket URL (loopback only); with --target nats, default: a nats-server chatbench starts")
	fs.StringVar(&c.Transport, "transport", transportRaw, "raw: STOMP over the WebSocket at --url; sockjs: SockJS's websocket transport of the SockJS endpoint at --url (ws://host/ws/000/<session>/websocket)")
	fs.StringVar(&c.SendDest, "send-dest", "/app/chat.{room}", "SEND destination template; {room} is the room name")
	fs.StringVar(&c.SubDest, "sub-dest", "/topic/chat.{room}", "SUBSCRIBE destination template")
	fs.StringVar(&c.Body, "body", `{"message":"{payload}"}`, "SEND body template; {payload} is the sequence/timestamp token")
	fs.StringVar(&c.ContentType, "content-type", "application/json", "SEND content-type header")
	fs.StringVar(&c.Host, "host", "chat", "CONNECT host header")
	fs.IntVar(&c.Rooms, "rooms", 0, "rooms")
	fs.IntVar(&c.Members, "members", 0, "subscribed connections per room")
	fs.IntVar(&c.Publishers, "publishers", 0, "publishers per room")
	fs.BoolVar(&c.SeparatePublishers, "separate-publishers", false, "publishers are extra connections that do not subscribe (default: the first members publish)")
	fs.Float64Var(&c.Rate, "rate", 0, "messages/s per publisher (0: flat out, as fast as the server takes them)")
	fs.IntVar(&c.Messages, "messages", 0, "stop each publisher after this many messages (0: only --duration)")
	fs.DurationVar(&c.Duration, "duration", 10*time.Second, "publishing time")
	fs.DurationVar(&c.Drain, "drain", 10*time.Second, "longest wait for outstanding deliveries after publishing")
	fs.IntVar(&c.MsgSize, "msg-size", 0, "pad each payload to this many bytes")
	fs.BoolVar(&c.Receipts, "receipts", false, "ask a RECEIPT for every SEND and measure its latency")
	fs.IntVar(&c.Ahead, "ahead", 0, "a publisher sends message n only once every subscriber of its room has message n-N or a later one, so that a flat-out run measures a rate with its latency instead of filling queues (0: no bound)")
	fs.IntVar(&c.Idle, "idle", 0, "idle connections (heart-beating only) held during the run")
	fs.IntVar(&c.IdleRooms, "idle-rooms", 0, "idle connections also subscribe, spread over this many rooms (0: connect only)")
	fs.DurationVar(&c.Hold, "hold", 0, "how long to hold idle connections when there is no traffic")
	fs.IntVar(&c.Storm, "storm", 0, "connections per storm wave")
	fs.IntVar(&c.StormConcurrency, "storm-concurrency", 500, "connection attempts in flight during a storm")
	fs.IntVar(&c.StormWaves, "storm-waves", 1, "storm waves (each opens --storm connections, then closes them all at once)")
	fs.DurationVar(&c.StormHold, "storm-hold", time.Second, "how long a wave's connections stay open, and the pause between waves")
	fs.IntVar(&c.StormRooms, "storm-rooms", 0, "storm connections also subscribe, spread over this many rooms (0: connect only)")
	fs.Int64Var(&c.StormSince, "storm-since", -1, "storm subscriptions replay from this id (0: each room's whole history, --storm-prefill messages), and each wave waits until every replay is complete (-1: no replay)")
	fs.IntVar(&c.StormPrefill, "storm-prefill", 0, "messages posted to each storm room before the first wave, for --storm-since to replay")
	fs.DurationVar(&c.StormBystander, "storm-bystander", 0, "with --storm-since: a bystander in a room of its own sends a receipted SEND this often during each wave, timing its RECEIPT (0: none)")
	sources := fs.String("sources", "127.0.0.1", "client source addresses: comma-separated loopback IPs or ranges (127.0.0.1-127.0.0.8)")
	fs.IntVar(&c.DialConcurrency, "dial-concurrency", 200, "connection attempts in flight while setting up")
	fs.DurationVar(&c.HeartBeat, "heartbeat", 10*time.Second, "STOMP heart-beat interval offered and asked for (0: none)")
	fs.DurationVar(&c.ConnectTimeout, "connect-timeout", 15*time.Second, "bound on one connection's WebSocket and STOMP handshake")
	fs.DurationVar(&c.SetupTimeout, "setup-timeout", 3*time.Minute, "bound on opening all connections of a phase")
	fs.DurationVar(&c.Timeout, "timeout", 15*time.Minute, "bound on the whole run")
	fs.StringVar(&c.RoomPrefix, "room-prefix", "", "room name prefix (default: cb<run>-, fresh rooms every run)")
	fs.StringVar(&c.UserPrefix, "user-prefix", "", "login prefix (default: cb<run>-)")
	fs.StringVar(&c.Run, "run", "", "run id in payloads and default names (default: random)")
	fs.IntVar(&c.ServerPID, "server-pid", 0, "sample this process's CPU and memory from /proc")
	fs.DurationVar(&c.SampleEvery, "sample-every", 500*time.Millisecond, "sampling interval for --server-pid")
	fs.BoolVar(&c.JSON, "json", false, "print the report as JSON")
	fs.StringVar(&c.JSONFile, "json-file", "", "also write the JSON report to this file")
	fs.BoolVar(&c.Strict, "strict", false, "exit 1 on any loss, duplicate, reordering or failed connection")
	fs.BoolVar(&c.Quiet, "quiet", false, "no progress lines on stderr")
	fs.StringVar(&c.CPUProfile, "cpuprofile", "", "write the tool's own CPU profile here (to check it is not the bottleneck)")
	fs.StringVar(&c.JWTSecret, "jwt-secret", os.Getenv("CHATBENCH_JWT_SECRET"), "the --jwt-secret of the chatd under load (not in dev mode): sign a token for each login and create the run's rooms and members through chatd's API (default $CHATBENCH_JWT_SECRET)")
	fs.StringVar(&c.JWTIssuer, "jwt-issuer", "", "iss claim of the tokens, if chatd checks one")
	fs.StringVar(&c.JWTAudience, "jwt-audience", "", "aud claim of the tokens, if chatd checks one")
	if err := fs.Parse(args); err != nil {
		return c, err
	}
	if fs.NArg() > 0 {
		return c, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	urlSet := false
	fs.Visit(func(f *flag.Flag) { urlSet = urlSet || f.Name == "url" })
	if c.Target == targetNATS && !urlSet {
		c.URL = "" // run starts a nats-server
	}
	if p, ok := preset(c.Scenario); ok {
		set := map[string]bool{}
		fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
		for name, v := range p {
			if !set[name] {
				if err := fs.Set(name, v); err != nil {
					return c, fmt.Errorf("preset %s: %w", c.Scenario, err)
				}
			}
		}
	} else if c.Scenario != "custom" {
		return c, fmt.Errorf("invalid --scenario %q: chat, fanout, idle, storm or custom", c.Scenario)
	}
	var err error
	if c.Sources, err = parseSources(*sources); err != nil {
		return c, err
	}
	if c.Run == "" {
		c.Run = strings.ToLower(rand.Text()[:6])
	}
	if c.RoomPrefix == "" {
		c.RoomPrefix = "cb" + c.Run + "-"
	}
	if c.UserPrefix == "" {
		c.UserPrefix = "cb" + c.Run + "-"
	}
	return c, c.validate()
}

func (c *config) validate() error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if c.URL != "" {
		if err := checkLoopbackURL(ctx, c.URL); err != nil {
			return err
		}
	}
	if c.Transport != transportRaw && c.Transport != transportSockJS {
		return fmt.Errorf("invalid --transport %q: raw or sockjs", c.Transport)
	}
	if err := c.validateTarget(); err != nil {
		return err
	}
	switch {
	case c.Rooms < 0 || c.Members < 0 || c.Publishers < 0 || c.Idle < 0 || c.Storm < 0 || c.Messages < 0 || c.StormRooms < 0 || c.IdleRooms < 0:
		return errors.New("counts must not be negative")
	case c.Rooms > 0 && c.Publishers == 0 && c.Members == 0:
		return errors.New("--rooms needs --members or --publishers")
	case !c.SeparatePublishers && c.Publishers > c.Members:
		return fmt.Errorf("--publishers %d > --members %d: use --separate-publishers", c.Publishers, c.Members)
	case c.Rate < 0:
		return errors.New("--rate must not be negative")
	case c.Ahead < 0:
		return errors.New("--ahead must not be negative")
	case c.Rooms > 0 && c.Publishers > 0 && c.Duration <= 0:
		return errors.New("--duration must be positive")
	case c.Drain < 0 || c.Hold < 0 || c.StormHold < 0:
		return errors.New("--drain, --hold and --storm-hold must not be negative")
	case c.Storm > 0 && (c.StormConcurrency < 1 || c.StormWaves < 1):
		return errors.New("--storm-concurrency and --storm-waves must be at least 1")
	case c.StormSince >= 0 && (c.Storm == 0 || c.StormRooms == 0 || c.StormPrefill < 1):
		return errors.New("--storm-since needs --storm, --storm-rooms and --storm-prefill")
	case c.StormSince < -1 || c.StormPrefill < 0 || c.StormBystander < 0:
		return errors.New("--storm-since must be -1 or an id; --storm-prefill and --storm-bystander must not be negative")
	case c.DialConcurrency < 1:
		return errors.New("--dial-concurrency must be at least 1")
	case c.ConnectTimeout <= 0 || c.SetupTimeout <= 0 || c.Timeout <= 0:
		return errors.New("--connect-timeout, --setup-timeout and --timeout must be positive")
	case c.HeartBeat < 0:
		return errors.New("--heartbeat must not be negative")
	case c.SampleEvery < 10*time.Millisecond:
		return errors.New("--sample-every must be at least 10ms")
	case c.MsgSize < 0 || c.MsgSize > 1<<20:
		return errors.New("--msg-size must be 0 to 1 MiB")
	case !strings.Contains(c.Body, "{payload}"):
		return errors.New("--body must contain {payload}")
	case c.Rooms > 0 && (!strings.Contains(c.SendDest, "{room}") || !strings.Contains(c.SubDest, "{room}")):
		return errors.New("--send-dest and --sub-dest must contain {room}")
	case strings.ContainsAny(c.Run, ";\\\"") || c.Run == "":
		return errors.New("--run must be non-empty without ; \\ or \"")
	case c.Rooms == 0 && c.Idle == 0 && c.Storm == 0:
		return errors.New("nothing to do: set --rooms, --idle or --storm")
	}
	return nil
}

// Targets for --target.
const (
	targetSTOMP = "stomp"
	targetNATS  = "nats"
)

// validateTarget refuses what the NATS target cannot do: NATS has no
// receipts, replay, SockJS or chatd tokens.
func (c *config) validateTarget() error {
	switch c.Target {
	case targetSTOMP:
		return nil
	case targetNATS:
	default:
		return fmt.Errorf("invalid --target %q: stomp or nats", c.Target)
	}
	switch {
	case c.URL == "" && c.ServerPID != 0:
		return errors.New("--target nats without --url starts its own nats-server and samples it: no --server-pid")
	case c.Transport != transportRaw:
		return errors.New("--target nats speaks NATS over a plain WebSocket: no --transport sockjs")
	case c.Receipts, c.StormSince >= 0, c.JWTSecret != "":
		return errors.New("--target nats has no receipts, no replay and no tokens: no --receipts, --storm-since or --jwt-secret")
	case strings.ContainsAny(c.RoomPrefix, " \t\r\n*>"):
		return fmt.Errorf("--room-prefix %q: a NATS subject token holds no space, * or >", c.RoomPrefix)
	}
	return nil
}

// checkLoopbackURL refuses any target outside 127.0.0.0/8 (and ::1): this
// tool generates load, and must never point it at another machine.
func checkLoopbackURL(ctx context.Context, raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		return fmt.Errorf("invalid --url %q: %w", raw, err)
	}
	if u.Scheme != "ws" && u.Scheme != "http" {
		return fmt.Errorf("invalid --url %q: scheme must be ws (loopback needs no TLS)", raw)
	}
	host := u.Hostname()
	if host == "" {
		return fmt.Errorf("invalid --url %q: no host", raw)
	}
	addrs, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return fmt.Errorf("invalid --url %q: resolve %s: %w", raw, host, err)
	}
	for _, a := range addrs {
		if !a.Unmap().IsLoopback() {
			return fmt.Errorf("invalid --url %q: %s is not a loopback address; chatbench only targets 127.0.0.0/8", raw, a)
		}
	}
	return nil
}

// parseSources reads "127.0.0.1,127.0.0.5-127.0.0.8".
func parseSources(s string) ([]netip.Addr, error) {
	var out []netip.Addr
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err := netip.ParseAddr(lo)
		if err != nil {
			return nil, fmt.Errorf("invalid --sources %q: %w", s, err)
		}
		b := a
		if isRange {
			if b, err = netip.ParseAddr(hi); err != nil {
				return nil, fmt.Errorf("invalid --sources %q: %w", s, err)
			}
		}
		if !a.Is4() || !b.Is4() || !a.IsLoopback() || !b.IsLoopback() || b.Less(a) {
			return nil, fmt.Errorf("invalid --sources %q: want IPv4 loopback addresses, ranges low-high", s)
		}
		for x := a; ; x = x.Next() {
			out = append(out, x)
			if len(out) > 1<<16 {
				return nil, fmt.Errorf("invalid --sources %q: too many addresses", s)
			}
			if x == b {
				break
			}
		}
	}
	return out, nil
}

// roomName and friends expand the templates.
func (c *config) roomName(i int) string { return c.RoomPrefix + strconv.Itoa(i) }

// sendDest and subDest are a room's STOMP destinations, or its NATS
// subject: one subject per room, published and subscribed alike.
func (c *config) sendDest(room string) string {
	if c.Target == targetNATS {
		return natsSubject(room)
	}
	return strings.ReplaceAll(c.SendDest, "{room}", room)
}
func (c *config) subDest(room string) string {
	if c.Target == targetNATS {
		return natsSubject(room)
	}
	return strings.ReplaceAll(c.SubDest, "{room}", room)
}

func natsSubject(room string) string { return "chat." + room }
