package deploy

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chatd/chatd/internal/testkit/pgtest"
	"github.com/grafana/grafana-foundation-sdk/go/cog"
	"github.com/grafana/grafana-foundation-sdk/go/cog/plugins"
	"github.com/grafana/grafana-foundation-sdk/go/dashboard"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"github.com/prometheus/prometheus/model/rulefmt"
	"github.com/prometheus/prometheus/promql/parser"
	"github.com/prometheus/prometheus/promql/promqltest"
)

const (
	alertsFile    = "prometheus/alerts.yml"
	dashboardFile = "grafana/chatd.json"
)

// promql parses as Prometheus does by default: no experimental functions.
var promql = parser.NewParser(parser.Options{})

// alertRules parses the rules file as `promtool check rules` does: unknown
// fields, bad expressions, durations and templates fail.
func alertRules(t *testing.T) []rulefmt.Rule {
	t.Helper()
	groups, errs := rulefmt.ParseFile(alertsFile, false, model.LegacyValidation, promql, slog.New(slog.DiscardHandler))
	for _, err := range errs {
		t.Error(err)
	}
	if len(errs) > 0 {
		t.FailNow()
	}
	var rules []rulefmt.Rule
	for _, g := range groups.Groups {
		rules = append(rules, g.Rules...)
	}
	return rules
}

// alertCase is made-up series (promqltest's load syntax, one sample a
// minute from time 0) and whether the alert's expression selects anything
// at the given minute: what Prometheus would alert on once `for` has run.
type alertCase struct {
	series string
	at     time.Duration
	fires  bool
}

// alertCases are each alert's cases: at least one firing and one quiet,
// so that an expression that never (or always) fires fails.
var alertCases = map[string][]alertCase{
	"ChatdNodeDown": {
		{`up{job="chatd",instance="a"} 1 0 0`, 2 * time.Minute, true},
		{`up{job="chatd",instance="a"} 1 1 1`, 2 * time.Minute, false},
		{`up{job="other",instance="a"} 0 0 0`, 2 * time.Minute, false},
	},
	"ChatdAllNodesDown": {
		{"up{job=\"chatd\",instance=\"a\"} 0 0 0\nup{job=\"chatd\",instance=\"b\"} 0 0 0", 2 * time.Minute, true},
		{`up{job="other",instance="a"} 1 1 1`, 2 * time.Minute, true},
		{"up{job=\"chatd\",instance=\"a\"} 0 0 0\nup{job=\"chatd\",instance=\"b\"} 1 1 1", 2 * time.Minute, false},
	},
	"ChatdStreamLeaderMissing": {
		{"chatd_messages_stream_leader{job=\"chatd\",instance=\"a\"} 1 0 0\nchatd_messages_stream_leader{job=\"chatd\",instance=\"b\"} 0 0 0\n" +
			"chatd_messages_partitions{job=\"chatd\",instance=\"a\"} 1 1 1\nchatd_messages_partitions{job=\"chatd\",instance=\"b\"} 1 1 1", 2 * time.Minute, true},
		{"chatd_messages_stream_leader{job=\"chatd\",instance=\"a\"} 1 0 0\nchatd_messages_stream_leader{job=\"chatd\",instance=\"b\"} 0 1 1\n" +
			"chatd_messages_partitions{job=\"chatd\",instance=\"a\"} 1 1 1\nchatd_messages_partitions{job=\"chatd\",instance=\"b\"} 1 1 1", 2 * time.Minute, false},
		// Four partitions: one without a leader fires it, all led do not.
		{"chatd_messages_stream_leader{job=\"chatd\",instance=\"a\"} 2 2 2\nchatd_messages_stream_leader{job=\"chatd\",instance=\"b\"} 2 1 1\n" +
			"chatd_messages_partitions{job=\"chatd\",instance=\"a\"} 4 4 4\nchatd_messages_partitions{job=\"chatd\",instance=\"b\"} 4 4 4", 2 * time.Minute, true},
		{"chatd_messages_stream_leader{job=\"chatd\",instance=\"a\"} 2 3 3\nchatd_messages_stream_leader{job=\"chatd\",instance=\"b\"} 2 1 1\n" +
			"chatd_messages_partitions{job=\"chatd\",instance=\"a\"} 4 4 4\nchatd_messages_partitions{job=\"chatd\",instance=\"b\"} 4 4 4", 2 * time.Minute, false},
		// An external NATS: the gauges are absent, and say nothing.
		{`chatd_sessions{job="chatd",instance="a"} 1 1 1`, 2 * time.Minute, false},
	},
	"ChatdStreamReplicaBehind": {
		{"chatd_messages_stream_current{job=\"chatd\",instance=\"a\"} 1 0x12\nchatd_messages_partitions{job=\"chatd\",instance=\"a\"} 1+0x13", 12 * time.Minute, true},
		{"chatd_messages_stream_current{job=\"chatd\",instance=\"a\"} 0x8 1 1 1 1\nchatd_messages_partitions{job=\"chatd\",instance=\"a\"} 1+0x12", 12 * time.Minute, false},
		// Four partitions, one of this node's replicas behind throughout.
		{"chatd_messages_stream_current{job=\"chatd\",instance=\"a\"} 4 3x12\nchatd_messages_partitions{job=\"chatd\",instance=\"a\"} 4+0x13", 12 * time.Minute, true},
		{"chatd_messages_stream_current{job=\"chatd\",instance=\"a\"} 3x8 4 4 4 4\nchatd_messages_partitions{job=\"chatd\",instance=\"a\"} 4+0x12", 12 * time.Minute, false},
	},
	"ChatdArchiveLagging": {
		{`chatd_archive_lag_seconds{job="chatd",instance="a"} 0 300 700`, 2 * time.Minute, true},
		{`chatd_archive_lag_seconds{job="chatd",instance="a"} 0 300 100`, 2 * time.Minute, false},
	},
	"ChatdArchiveFarBehind": {
		{`chatd_archive_lag_seconds{job="chatd",instance="a"} 0 30000 30060`, 2 * time.Minute, true},
		{`chatd_archive_lag_seconds{job="chatd",instance="a"} 0 700 760`, 2 * time.Minute, false},
	},
	"ChatdArchiveWritesFailing": {
		{`chatd_archive_write_failures_total{job="chatd",instance="a"} 0+1x10`, 10 * time.Minute, true},
		{`chatd_archive_write_failures_total{job="chatd",instance="a"} 5x10`, 10 * time.Minute, false},
	},
	"ChatdPostgresNotifyQueueFilling": {
		{`chatd_postgres_notify_queue_usage{job="chatd",instance="a"} 0.3x10`, 10 * time.Minute, true},
		{`chatd_postgres_notify_queue_usage{job="chatd",instance="a"} 0.01x10`, 10 * time.Minute, false},
		{`chatd_postgres_notify_queue_usage{job="chatd",instance="a"} -1x10`, 10 * time.Minute, false},
	},
	"ChatdErrorRate": {
		{"chatd_errors_total{job=\"chatd\",instance=\"a\",kind=\"internal\"} 0+10x10\nchatd_frames_received_total{job=\"chatd\",instance=\"a\",command=\"SEND\"} 0+100x10", 10 * time.Minute, true},
		{"chatd_errors_total{job=\"chatd\",instance=\"a\",kind=\"internal\"} 0+1x10\nchatd_frames_received_total{job=\"chatd\",instance=\"a\",command=\"SEND\"} 0+1000x10", 10 * time.Minute, false},
		// Clients' mistakes are not the server's errors.
		{"chatd_errors_total{job=\"chatd\",instance=\"a\",kind=\"limit\"} 0+100x10\nchatd_frames_received_total{job=\"chatd\",instance=\"a\",command=\"SEND\"} 0+100x10", 10 * time.Minute, false},
	},
	"ChatdPublishFailures": {
		{`chatd_jetstream_publish_failures_total{job="chatd",instance="a"} 0+1x10`, 10 * time.Minute, true},
		{`chatd_jetstream_publish_failures_total{job="chatd",instance="a"} 3x10`, 10 * time.Minute, false},
	},
	"ChatdSlowConsumers": {
		{`chatd_slow_consumer_disconnects_total{job="chatd",instance="a"} 0+5x10`, 10 * time.Minute, true},
		{`chatd_slow_consumer_disconnects_total{job="chatd",instance="a"} 0+0.5x10`, 10 * time.Minute, false},
	},
	"ChatdStoreLatencyHigh": {
		{"chatd_jetstream_publish_seconds_bucket{job=\"chatd\",instance=\"a\",le=\"0.1\"} 0+1x10\n" +
			"chatd_jetstream_publish_seconds_bucket{job=\"chatd\",instance=\"a\",le=\"1\"} 0+100x10\n" +
			"chatd_jetstream_publish_seconds_bucket{job=\"chatd\",instance=\"a\",le=\"+Inf\"} 0+100x10", 10 * time.Minute, true},
		{"chatd_jetstream_publish_seconds_bucket{job=\"chatd\",instance=\"a\",le=\"0.1\"} 0+100x10\n" +
			"chatd_jetstream_publish_seconds_bucket{job=\"chatd\",instance=\"a\",le=\"1\"} 0+100x10\n" +
			"chatd_jetstream_publish_seconds_bucket{job=\"chatd\",instance=\"a\",le=\"+Inf\"} 0+100x10", 10 * time.Minute, false},
	},
	"ChatdWorkingSetThrashing": {
		{`chatd_working_set_evictions_total{job="chatd",instance="a"} 0+120x30`, 20 * time.Minute, true},
		{`chatd_working_set_evictions_total{job="chatd",instance="a"} 0+10x30`, 20 * time.Minute, false},
	},
	"ChatdFileDescriptorsNearLimit": {
		{"process_open_fds{job=\"chatd\",instance=\"a\"} 900 900\nprocess_max_fds{job=\"chatd\",instance=\"a\"} 1000 1000", time.Minute, true},
		{"process_open_fds{job=\"chatd\",instance=\"a\"} 100 100\nprocess_max_fds{job=\"chatd\",instance=\"a\"} 1000 1000", time.Minute, false},
	},
}

// TestAlertRules validates the rules as promtool would, and evaluates each
// alert's expression on series made to fire it and series that must not.
func TestAlertRules(t *testing.T) {
	rules := alertRules(t)
	engine := promqltest.NewTestEngine(t, false, 0, 100000)
	seen := map[string]bool{}
	for _, r := range rules {
		name := r.Alert
		if name == "" {
			t.Errorf("recording rule %s: this file is for alerts", r.Record)
			continue
		}
		if seen[name] {
			t.Errorf("alert %s defined twice", name)
		}
		seen[name] = true
		if sev := r.Labels["severity"]; sev != "warning" && sev != "critical" {
			t.Errorf("%s: severity %q, want warning or critical", name, sev)
		}
		if r.Annotations["summary"] == "" || r.Annotations["description"] == "" {
			t.Errorf("%s: want a summary and a description", name)
		}
		if r.For == 0 {
			t.Errorf("%s: no for: one bad scrape would page", name)
		}
		cases := alertCases[name]
		var fires, quiet bool
		for i, c := range cases {
			fires, quiet = fires || c.fires, quiet || !c.fires
			st := promqltest.LoadedStorage(t, "load 1m\n"+indent(c.series))
			q, err := engine.NewInstantQuery(context.Background(), st, nil, r.Expr, time.Unix(0, 0).Add(c.at))
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			res := q.Exec(context.Background())
			vec, err := res.Vector()
			if err != nil {
				t.Fatalf("%s, case %d: %v", name, i, err)
			}
			if got := len(vec) > 0; got != c.fires {
				t.Errorf("%s, case %d: fires %v, want %v, on\n%s\n(result %v)", name, i, got, c.fires, c.series, vec)
			}
			q.Close()
			_ = st.Close()
		}
		if !fires || !quiet {
			t.Errorf("%s: want cases where it fires and where it is quiet (alertCases)", name)
		}
	}
	for name := range alertCases {
		if !seen[name] {
			t.Errorf("alertCases has %s, which alerts.yml lacks", name)
		}
	}
	// What the issue asks the rules to watch.
	for _, want := range []string{"ChatdNodeDown", "ChatdArchiveLagging", "ChatdStreamLeaderMissing", "ChatdErrorRate", "ChatdSlowConsumers"} {
		if !seen[want] {
			t.Errorf("no alert %s", want)
		}
	}
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

// grafanaVars are what Grafana puts for its variables before a query
// reaches Prometheus, so that the query can be parsed here.
var grafanaVars = strings.NewReplacer("$__rate_interval", "1m", "$__interval", "1m", "$__range", "1h")

// labelValues is a variable's query: label_values(selector, label).
var labelValues = regexp.MustCompile(`^label_values\((.*),\s*([a-zA-Z_][a-zA-Z0-9_]*)\)$`)

// dashboardQueries decodes the dashboard strictly into Grafana's
// dashboard types (unknown fields and wrong types fail), and returns its
// PromQL: the panels' targets and the variables' selectors.
func dashboardQueries(t *testing.T) map[string]string {
	t.Helper()
	raw := readFile(t, dashboardFile)
	plugins.RegisterDefaultPlugins()
	// The classic dashboard JSON, which every Grafana imports and
	// provisions from files; the SDK prefers its v2 resource format.
	var d dashboard.Dashboard //nolint:staticcheck // see above
	// The SDK returns an empty cog.BuildErrors, not nil, when all is well.
	if err := d.UnmarshalJSONStrict(raw); err != nil {
		if be, ok := err.(cog.BuildErrors); !ok || len(be) > 0 {
			t.Fatalf("%s: %v", dashboardFile, err)
		}
	}
	if d.Uid == nil || *d.Uid == "" || d.Title == nil || *d.Title == "" {
		t.Errorf("%s: want a uid and a title", dashboardFile)
	}
	// The generic form, for what the typed one spreads over plugin types.
	var doc struct {
		Panels []struct {
			ID      int    `json:"id"`
			Type    string `json:"type"`
			Title   string `json:"title"`
			GridPos struct{ H, W, X, Y int }
			Targets []struct {
				Datasource struct{ UID string }
				Expr       string
			}
		}
		Templating struct {
			List []struct {
				Name  string
				Type  string
				Query json.RawMessage
			}
		}
	}
	if err := json.Unmarshal(raw, &doc); err != nil {
		t.Fatal(err)
	}
	queries := map[string]string{}
	vars := map[string]bool{}
	for _, v := range doc.Templating.List {
		vars[v.Name] = true
		if v.Type != "query" {
			continue
		}
		var q struct{ Query string }
		if err := json.Unmarshal(v.Query, &q); err != nil || q.Query == "" {
			t.Errorf("variable %s: query %s", v.Name, v.Query)
			continue
		}
		m := labelValues.FindStringSubmatch(q.Query)
		if m == nil {
			t.Errorf("variable %s: query %q is not label_values(selector, label)", v.Name, q.Query)
			continue
		}
		queries["variable "+v.Name] = m[1]
	}
	ids := map[int]bool{}
	var cells [][24]bool // occupied grid cells, by row
	for _, p := range doc.Panels {
		if ids[p.ID] {
			t.Errorf("panel id %d used twice", p.ID)
		}
		ids[p.ID] = true
		g := p.GridPos
		if g.W < 1 || g.H < 1 || g.X < 0 || g.X+g.W > 24 || g.Y < 0 {
			t.Errorf("panel %q: gridPos %+v is off the 24-column grid", p.Title, g)
			continue
		}
		for y := g.Y; y < g.Y+g.H; y++ {
			for len(cells) <= y {
				cells = append(cells, [24]bool{})
			}
			for x := g.X; x < g.X+g.W; x++ {
				if cells[y][x] {
					t.Errorf("panel %q overlaps another at column %d, row %d", p.Title, x, y)
				}
				cells[y][x] = true
			}
		}
		if p.Type == "row" {
			continue
		}
		if len(p.Targets) == 0 {
			t.Errorf("panel %q has no query", p.Title)
		}
		for i, tg := range p.Targets {
			if tg.Datasource.UID != "${datasource}" {
				t.Errorf("panel %q: data source %q, want the ${datasource} variable", p.Title, tg.Datasource.UID)
			}
			queries[fmt.Sprintf("panel %q query %d", p.Title, i)] = tg.Expr
		}
	}
	// Every variable a query uses is defined.
	for where, q := range queries {
		for _, m := range regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)`).FindAllStringSubmatch(q, -1) {
			if !vars[m[1]] && !strings.HasPrefix(m[1], "__") {
				t.Errorf("%s uses $%s, which the dashboard does not define", where, m[1])
			}
		}
	}
	return queries
}

// TestDashboard checks the dashboard's form and that each query is PromQL,
// and that it shows what the issue asks for.
func TestDashboard(t *testing.T) {
	queries := dashboardQueries(t)
	all := ""
	for where, q := range queries {
		if _, err := promql.ParseExpr(grafanaVars.Replace(q)); err != nil {
			t.Errorf("%s: %q: %v", where, q, err)
		}
		all += q + "\n"
	}
	for what, metric := range map[string]string{
		"connections": "chatd_websocket_connections", "deliveries/s": "chatd_messages_delivered_total",
		"SEND to RECEIPT latency": "chatd_jetstream_publish_seconds_bucket", "slow-consumer cut-offs": "chatd_slow_consumer_disconnects_total",
		"archive lag": "chatd_archive_lag_seconds", "working set": "chatd_working_set_entries", "Go runtime": "go_goroutines",
	} {
		if !strings.Contains(all, metric) {
			t.Errorf("the dashboard does not show %s (%s)", what, metric)
		}
	}
}

// notChatds are series that Prometheus makes itself, not chatd.
var notChatds = map[string]bool{"up": true}

// metricNames are the metric names an expression selects.
func metricNames(t *testing.T, where, expr string) []string {
	t.Helper()
	e, err := promql.ParseExpr(grafanaVars.Replace(expr))
	if err != nil {
		t.Errorf("%s: %v", where, err)
		return nil
	}
	var names []string
	parser.Inspect(e, func(n parser.Node, _ []parser.Node) error {
		if vs, ok := n.(*parser.VectorSelector); ok {
			name := vs.Name
			for _, m := range vs.LabelMatchers {
				if m.Name == model.MetricNameLabel {
					name = m.Value
				}
			}
			if name == "" {
				t.Errorf("%s: a selector without a metric name: %s", where, vs)
			}
			names = append(names, name)
		}
		return nil
	})
	return names
}

// TestQueriesNameExportedMetrics checks every metric the alert rules and
// the dashboard use against what a running chatd exports on /metrics: a
// renamed metric would leave a panel empty and an alert silent. chatd runs
// in dev mode, with PostgreSQL where the tests have one (the archive's
// and the PostgreSQL store's metrics exist only then).
func TestQueriesNameExportedMetrics(t *testing.T) {
	used := map[string][]string{} // metric name: where
	for _, r := range alertRules(t) {
		for _, n := range metricNames(t, "alert "+r.Alert, r.Expr) {
			used[n] = append(used[n], "alert "+r.Alert)
		}
	}
	for where, q := range dashboardQueries(t) {
		for _, n := range metricNames(t, where, q) {
			used[n] = append(used[n], where)
		}
	}

	args := []string{"--dev", "--data-dir", t.TempDir()}
	withPostgres := os.Getenv(pgtest.EnvURL) != "" || os.Getenv(pgtest.EnvRequire) != ""
	if withPostgres {
		args = append(args, "--postgres-url", pgtest.NewDatabase(t))
	}
	exported := scrape(t, "http://"+startChatd(t, args...)+"/metrics")

	var unchecked []string
	for name, where := range used {
		slices.Sort(where)
		switch {
		case exported[name] || notChatds[name]:
		case !withPostgres && (strings.HasPrefix(name, "chatd_archive") || strings.HasPrefix(name, "chatd_postgres")):
			unchecked = append(unchecked, name)
		default:
			t.Errorf("%s, used by %s, is not among chatd's metrics", name, strings.Join(slices.Compact(where), ", "))
		}
	}
	if len(unchecked) > 0 {
		slices.Sort(unchecked)
		t.Skipf("not checked without PostgreSQL (set %s): %s", pgtest.EnvURL, strings.Join(unchecked, ", "))
	}
}

// scrape returns the names of the series an exposition offers: each
// family's name, and for histograms and summaries the names of their
// series (_bucket, _sum, _count).
func scrape(t *testing.T, url string) map[string]bool {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = resp.Body.Close() }()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %d %v", url, resp.StatusCode, err)
	}
	tp := expfmt.NewTextParser(model.LegacyValidation)
	families, err := tp.TextToMetricFamilies(strings.NewReader(string(body)))
	if err != nil {
		t.Fatalf("/metrics: %v", err)
	}
	names := map[string]bool{}
	for name, f := range families {
		names[name] = true
		switch f.GetType().String() {
		case "HISTOGRAM":
			names[name+"_bucket"], names[name+"_sum"], names[name+"_count"] = true, true, true
		case "SUMMARY":
			names[name+"_sum"], names[name+"_count"] = true, true
		}
	}
	if !names["chatd_build_info"] {
		t.Fatalf("/metrics has no chatd_build_info:\n%s", body)
	}
	return names
}
