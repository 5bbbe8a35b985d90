package app

import (
	"bufio"
	"bytes"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
)

// scrape returns the value of every sample in the exposition at url, keyed
// by `name{labels}` with labels sorted as Prometheus writes them.
func scrape(t *testing.T, url string) map[string]float64 {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out := map[string]float64{}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" || line[0] == '#' {
			continue
		}
		i := strings.LastIndexByte(line, ' ')
		v, err := strconv.ParseFloat(line[i+1:], 64)
		if err != nil {
			t.Fatalf("bad sample %q", line)
		}
		out[line[:i]] = v
	}
	return out
}

func TestMetricsCountExchanges(t *testing.T) {
	p := &pair{pki: newTestPKI(t)}
	p.origin = startOrigin(t, echoOrigin(nil))
	slog, _ := newTestLogger(t)
	scfg := p.pki.serverConfig(p.origin)
	scfg.System.AdminAddress = "127.0.0.1:0"
	p.server = startInstance(t, scfg, slog)
	clog, _ := newTestLogger(t)
	ccfg := p.pki.clientConfig(p.server.QUICAddr().(*net.UDPAddr).Port)
	ccfg.System.AdminAddress = "127.0.0.1:0"
	p.client = startInstance(t, ccfg, clog)
	waitReady(t, p.client)
	url := "http://" + p.client.HTTPAddr().String()
	cm := "http://" + p.client.AdminAddr().String() + "/metrics"
	sm := "http://" + p.server.AdminAddr().String() + "/metrics"

	before := scrape(t, cm)
	c := callerClient()
	for range 7 {
		resp, err := c.Get(url + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	for range 3 {
		resp, err := c.Post(url+"/echo", "text/plain", bytes.NewReader(make([]byte, 1000)))
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	// One rejected request: a synthetic 400 that never reaches the server.
	raw := rawRoundTrip(t, p.client.HTTPAddr().String(), "GET / HTTP/1.1\r\n\r\n")
	i := strings.Index(raw, "\r\n\r\n")
	if !strings.HasPrefix(raw, "HTTP/1.1 400 ") || i < 0 {
		t.Fatalf("want a synthetic 400, got %q", raw)
	}
	badBody := len(raw) - i - 4

	after := scrape(t, cm)
	delta := func(m map[string]float64, b map[string]float64, k string) float64 { return m[k] - b[k] }
	checks := []struct {
		key  string
		want float64
	}{
		{`ptproxy_requests_total{code="2xx",method="GET",side="client"}`, 7},
		{`ptproxy_requests_total{code="2xx",method="POST",side="client"}`, 3},
		{`ptproxy_requests_total{code="4xx",method="invalid",side="client"}`, 1},
		{`ptproxy_synthetic_responses_total{code="400",reason="bad_request",side="client"}`, 1},
		{`ptproxy_exchange_outcomes_total{outcome="completed",side="client"}`, 10},
		{`ptproxy_body_bytes_total{direction="request",side="client"}`, 3000},
		{`ptproxy_body_bytes_total{direction="response",side="client"}`, 3000 + 7*5 + float64(badBody)},
		{`ptproxy_request_duration_seconds_count{side="client"}`, 11},
		{`ptproxy_requests_in_flight{side="client"}`, 0},
	}
	for _, ck := range checks {
		if got := delta(after, before, ck.key); got != ck.want {
			t.Errorf("%s moved by %v, want %v", ck.key, got, ck.want)
		}
	}
	// Session metrics carry the server's name (several servers: one
	// series per session).
	if after[`ptproxy_session_state{server="server.test",state="ready"}`] != 1 || after[`ptproxy_session_state{server="server.test",state="idle"}`] != 0 {
		t.Errorf("session state gauges: ready=%v idle=%v", after[`ptproxy_session_state{server="server.test",state="ready"}`], after[`ptproxy_session_state{server="server.test",state="idle"}`])
	}
	if after[`ptproxy_quic_rtt_seconds{kind="smoothed",server="server.test"}`] <= 0 || after[`ptproxy_quic_congestion_window_bytes{server="server.test"}`] <= 0 {
		t.Errorf("no session statistics: rtt=%v cwnd=%v", after[`ptproxy_quic_rtt_seconds{kind="smoothed",server="server.test"}`], after[`ptproxy_quic_congestion_window_bytes{server="server.test"}`])
	}
	if after[`ptproxy_connection_attempts_total{server="server.test"}`] < 1 || after[`ptproxy_handshake_duration_seconds_count{server="server.test"}`] < 1 {
		t.Errorf("attempts=%v handshakes=%v", after[`ptproxy_connection_attempts_total{server="server.test"}`], after[`ptproxy_handshake_duration_seconds_count{server="server.test"}`])
	}
	srv := scrape(t, sm)
	if got := srv[`ptproxy_requests_total{code="2xx",method="GET",side="server"}`]; got != 7 {
		t.Errorf("server counted %v GETs, want 7", got)
	}
	if got := srv[`ptproxy_body_bytes_total{direction="request",side="server"}`]; got != 3000 {
		t.Errorf("server request bytes %v, want 3000", got)
	}
}

func TestHealthzFollowsTheTunnel(t *testing.T) {
	pk := newTestPKI(t)
	origin := startOrigin(t, echoOrigin(nil))
	slog, _ := newTestLogger(t)
	server := startInstance(t, pk.serverConfig(origin), slog)
	port := server.QUICAddr().(*net.UDPAddr).Port
	clog, _ := newTestLogger(t)
	ccfg := pk.clientConfig(port)
	ccfg.System.AdminAddress = "127.0.0.1:0"
	client := startInstance(t, ccfg, clog)
	admin := "http://" + client.AdminAddr().String()
	health := func() int {
		resp, err := http.Get(admin + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	eventually(t, "healthz 200 with the tunnel up", func() bool { return health() == 200 })
	server.Close()
	eventually(t, "healthz 503 once the peer is gone", func() bool { return health() == 503 })

	cfg := pk.serverConfig(origin)
	cfg.General.QUICPort = port
	startInstance(t, cfg, slog)
	eventually(t, "healthz 200 again when the peer returns", func() bool { return health() == 200 })

	resp, err := http.Get(admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if st.Mode != "Client" || st.State != "ready" || !st.Ready || st.Peer != serverName || st.SmoothedRTTms == nil || st.LastFailure == "" {
		t.Fatalf("status %+v", st)
	}
	var out bytes.Buffer
	if code := runStatus([]string{"--admin", client.AdminAddr().String()}, &out, io.Discard); code != 0 {
		t.Fatalf("ptproxy status exited %d", code)
	}
	for _, want := range []string{"mode:", "Client", "state:", "ready", "rtt:", "last error:", "server closed the connection"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("ptproxy status output lacks %q:\n%s", want, out.String())
		}
	}
}
