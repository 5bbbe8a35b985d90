package app

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/json"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/session"
)

// server2Name is the second server's certificate name in these tests.
const server2Name = "server2.test"

// twoServers is one client with two servers, each with its own origin
// answering its name ("one", "two").
type twoServers struct {
	pk              *testPKI
	origins         [2]string
	ports           [2]int
	servers         [2]*Instance
	client          *Instance
	url             string
	server2Cert     string
	server2Key      string
	serverLog       *logBuffer
	clientLogBuffer *logBuffer
}

func nameOrigin(name string) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		io.WriteString(w, name)
	})
}

// serverConfig is the configuration of server i (0 or 1) on port (0:
// any).
func (ts *twoServers) serverConfig(i, port int) *config.Config {
	cfg := ts.pk.serverConfig(ts.origins[i])
	cfg.General.QUICPort = port
	if i == 1 {
		cfg.TLS.Cert, cfg.TLS.Key = ts.server2Cert, ts.server2Key
	}
	return cfg
}

// startServer starts server i on its port (the first time: any port).
func (ts *twoServers) startServer(t *testing.T, i int) {
	t.Helper()
	slog, slb := newTestLogger(t)
	ts.serverLog = slb
	ts.servers[i] = startInstance(t, ts.serverConfig(i, ts.ports[i]), slog)
	ts.ports[i] = ts.servers[i].QUICAddr().(*net.UDPAddr).Port
}

// newTwoServers is a twoServers on pk, with the second server's
// certificate issued; nothing is started.
func newTwoServers(t *testing.T, pk *testPKI) *twoServers {
	t.Helper()
	ts := &twoServers{pk: pk}
	ts.server2Cert, ts.server2Key = pk.issueLeaf(t, "server2", x509.ExtKeyUsageServerAuth, server2Name)
	return ts
}

func startTwoServers(t *testing.T, selection config.ServerSelection) *twoServers {
	t.Helper()
	ts := newTwoServers(t, newTestPKI(t))
	ts.origins[0] = startOrigin(t, nameOrigin("one"))
	ts.origins[1] = startOrigin(t, nameOrigin("two"))
	ts.startServer(t, 0)
	ts.startServer(t, 1)
	ccfg := ts.pk.clientConfig(ts.ports[0])
	ccfg.Servers = []config.Server{{PeerHostname: server2Name, ConnectAddress: "127.0.0.1", QUICPort: ts.ports[1]}}
	ccfg.General.ServerSelection = selection
	// A request during a switch waits for a session rather than failing;
	// nothing asserts how long it waits.
	ccfg.System.SessionWaitTimeout = 5000
	ccfg.System.AdminAddress = "127.0.0.1:0"
	if err := ccfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clog, clb := newTestLogger(t)
	ts.clientLogBuffer = clb
	ts.client = startInstance(t, ccfg, clog)
	ts.url = "http://" + ts.client.HTTPAddr().String()
	ts.waitState(t, 0, session.Ready)
	ts.waitState(t, 1, session.Ready)
	return ts
}

func (ts *twoServers) waitState(t *testing.T, i int, want session.State) {
	t.Helper()
	eventually(t, "session "+ts.client.sessions[i].srv.Name+" "+want.String(), func() bool {
		return ts.client.sessions[i].client.State() == want
	})
}

// get sends one GET and returns the status and the body (the origin's
// name on 200).
func (ts *twoServers) get(t *testing.T) (int, string) {
	t.Helper()
	return getStatusBody(t, callerClient(), ts.url+"/")
}

// mustGet sends n GETs, each must be answered 200, and counts the
// answers by origin.
func (ts *twoServers) mustGet(t *testing.T, n int) map[string]int {
	t.Helper()
	got := map[string]int{}
	for range n {
		code, body := ts.get(t)
		if code != 200 {
			t.Fatalf("status %d (%q), want 200", code, body)
		}
		got[body]++
	}
	return got
}

func (ts *twoServers) drainServer(t *testing.T, i int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := ts.servers[i].Drain(ctx); err != nil {
		t.Fatalf("drain server %d: %v", i, err)
	}
}

// TestServersPriorityFailover: with "priority" every request goes to the
// first server; once it is stopped, every new request is answered by the
// second (none fails: a request during the switch waits for a session);
// once a first server is back on the same port, requests go to it again.
func TestServersPriorityFailover(t *testing.T) {
	ts := startTwoServers(t, config.SelectPriority)
	if got := ts.mustGet(t, 10); got["one"] != 10 {
		t.Fatalf("before the stop: %v, want every request on the first server", got)
	}
	ts.drainServer(t, 0)
	if got := ts.mustGet(t, 20); got["two"] != 20 {
		t.Fatalf("after the first server stopped: %v, want every request on the second", got)
	}

	admin := "http://" + ts.client.AdminAddr().String()
	if code := httpStatus(t, admin+"/healthz"); code != 200 {
		t.Errorf("healthz %d with one session of two ready, want 200", code)
	}
	st := fetchStatus(t, admin)
	if len(st.Sessions) != 2 || st.Sessions[0].Server != serverName || st.Sessions[1].Server != server2Name ||
		st.Sessions[0].Ready || !st.Sessions[1].Ready || st.Sessions[1].SmoothedRTTms == nil ||
		st.Sessions[0].LastFailure == "" || !st.Ready || st.Peer != server2Name {
		t.Errorf("status with the first server down: %+v", st)
	}
	m := scrape(t, admin+"/metrics")
	if m[`ptproxy_session_state{server="server.test",state="ready"}`] != 0 || m[`ptproxy_session_state{server="server2.test",state="ready"}`] != 1 {
		t.Errorf("session state gauges: first ready=%v, second ready=%v",
			m[`ptproxy_session_state{server="server.test",state="ready"}`], m[`ptproxy_session_state{server="server2.test",state="ready"}`])
	}
	if m[`ptproxy_quic_rtt_seconds{kind="smoothed",server="server2.test"}`] <= 0 || m[`ptproxy_connection_attempts_total{server="server.test"}`] < 1 {
		t.Errorf("per-server session metrics missing: rtt %v, attempts %v",
			m[`ptproxy_quic_rtt_seconds{kind="smoothed",server="server2.test"}`], m[`ptproxy_connection_attempts_total{server="server.test"}`])
	}
	var out bytes.Buffer
	if code := runStatus([]string{"--admin", ts.client.AdminAddr().String()}, &out, io.Discard); code != 0 {
		t.Fatalf("ptproxy status exited %d", code)
	}
	if n := strings.Count(out.String(), "session:"); n != 2 || !strings.Contains(out.String(), server2Name+" at 127.0.0.1:") {
		t.Errorf("ptproxy status output, want one session line per server:\n%s", out.String())
	}

	// The first server returns: requests go back to it.
	ts.startServer(t, 0)
	eventually(t, "requests back on the first server", func() bool {
		code, body := ts.get(t)
		if code != 200 {
			t.Fatalf("while the first server returns: %d %q", code, body)
		}
		return body == "one"
	})
	if got := ts.mustGet(t, 10); got["one"] != 10 {
		t.Fatalf("after the first server returned: %v, want every request on it", got)
	}
}

// TestServersActiveActive: requests spread over both servers; when one is
// stopped, all go to the other.
func TestServersActiveActive(t *testing.T) {
	ts := startTwoServers(t, config.SelectActiveActive)
	const n = 40
	got := ts.mustGet(t, n)
	if got["one"] < n/4 || got["two"] < n/4 || got["one"]+got["two"] != n {
		t.Fatalf("spread over both: %v, want each at least %d of %d", got, n/4, n)
	}
	// Stopped at once (no GOAWAY): once the client noticed, every request
	// goes to the first server.
	ts.servers[1].Close()
	eventually(t, "client notices the second server is gone", func() bool {
		return ts.client.sessions[1].client.State() != session.Ready
	})
	if got := ts.mustGet(t, 20); got["one"] != 20 {
		t.Fatalf("with the second server stopped: %v, want every request on the first", got)
	}
	// And the other way round, with a drain.
	ts.startServer(t, 1)
	ts.waitState(t, 1, session.Ready)
	ts.drainServer(t, 0)
	if got := ts.mustGet(t, 20); got["two"] != 20 {
		t.Fatalf("with the first server drained: %v, want every request on the second", got)
	}
}

// TestServersWaitForAny: with no session ready, a request waits and is
// sent as soon as ANY session becomes ready, here the second one while
// the first stays down.
func TestServersWaitForAny(t *testing.T) {
	ts := startTwoServers(t, config.SelectPriority)
	ts.servers[0].Close()
	ts.drainServer(t, 1)
	ts.waitState(t, 0, session.Idle)
	done := make(chan string, 1)
	go func() {
		resp, err := callerClient().Get(ts.url + "/")
		if err != nil {
			done <- err.Error()
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- resp.Status + " " + string(b)
	}()
	eventually(t, "the request waits for a session", func() bool { return ts.client.inflight.Load() == 1 })
	ts.startServer(t, 1)
	select {
	case got := <-done:
		if got != "200 OK two" {
			t.Fatalf("waiting request: %q, want 200 from the second server", got)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("the waiting request was not answered")
	}
}

// TestServersReloadKeepsServers: [[servers]] changes need a restart.
func TestServersReloadKeepsServers(t *testing.T) {
	ts := startTwoServers(t, config.SelectPriority)
	cfg := *ts.client.cfg
	cfg.Servers = []config.Server{{PeerHostname: "other.test", ConnectAddress: "127.0.0.1", QUICPort: ts.ports[1]}}
	cfg.General.ServerSelection = config.SelectActiveActive
	res, err := ts.client.Reload(&cfg)
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(res.Kept, ","), "servers") || !strings.Contains(strings.Join(res.Kept, ","), "general.server_selection") {
		t.Fatalf("reload: kept %v, want servers and general.server_selection", res.Kept)
	}
	if got := ts.mustGet(t, 5); got["one"] != 5 {
		t.Fatalf("after the reload: %v", got)
	}
}

func TestTunnelsStatus(t *testing.T) {
	ts := newTunnelsStatus([]string{"a.example", "b.example"})
	if got := ts.update(session.Transition{Peer: "a.example", From: session.Connecting, To: session.Ready}); got != "tunnels: a.example ready, b.example idle" {
		t.Errorf("got %q", got)
	}
	ts.update(session.Transition{Peer: "b.example", From: session.Connecting, To: session.Idle, Reason: errors.New("timeout")})
	if got := ts.update(session.Transition{Peer: "b.example", From: session.Idle, To: session.Connecting}); got != "tunnels: a.example ready, b.example connecting (last failure: timeout)" {
		t.Errorf("got %q", got)
	}
}

func httpStatus(t *testing.T, url string) int {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	return resp.StatusCode
}

func fetchStatus(t *testing.T, admin string) Status {
	t.Helper()
	resp, err := http.Get(admin + "/status")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(resp.Body).Decode(&st); err != nil {
		t.Fatal(err)
	}
	return st
}
