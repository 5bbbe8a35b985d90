package app

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/ptproxy/ptproxy/pipeline"
	"github.com/ptproxy/ptproxy/session"
)

// restartableOrigin is an HTTP origin that can be killed (listener and
// connections closed, as a crashed process) and started again on the same
// address. It answers its name, and "leak" when a request carried the
// ptproxy-endpoint field.
type restartableOrigin struct {
	t    *testing.T
	name string
	addr string
	mu   sync.Mutex
	srv  *http.Server
}

func startRestartableOrigin(t *testing.T, name string) *restartableOrigin {
	o := &restartableOrigin{t: t, name: name, addr: "127.0.0.1:0"}
	o.start()
	t.Cleanup(o.kill)
	return o
}

func (o *restartableOrigin) start() bool {
	ln, err := net.Listen("tcp", o.addr)
	if err != nil {
		return false
	}
	o.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get(pipeline.EndpointField) != "" {
			io.WriteString(w, "leak")
			return
		}
		io.WriteString(w, o.name)
	})}
	o.mu.Lock()
	o.srv = srv
	o.mu.Unlock()
	go srv.Serve(ln)
	return true
}

func (o *restartableOrigin) kill() {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.srv != nil {
		o.srv.Close()
		o.srv = nil
	}
}

// h3Client is our session client with a chosen certificate, standing in
// for the client side: it sets ptproxy-endpoint itself.
type h3Client struct {
	c      *session.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func startH3Client(t *testing.T, p *testPKI, cert, key string, port int) *h3Client {
	t.Helper()
	tc, err := session.ClientTLS(p.path("ca.pem"), cert, key, serverName)
	if err != nil {
		t.Fatal(err)
	}
	log, _ := newTestLogger(t)
	c, err := session.NewClient(session.ClientOptions{
		PeerHostname: serverName, ConnectAddress: "127.0.0.1", Port: port, BindAddress: "127.0.0.1",
		TLS: tc, ConnectInterval: 100 * time.Millisecond, SessionWait: 30 * time.Second, Logger: log,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	hc := &h3Client{c: c, cancel: cancel, done: make(chan struct{})}
	go func() { defer close(hc.done); c.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-hc.done })
	eventually(t, "session ready", func() bool { return c.State() == session.Ready })
	return hc
}

// do sends one bodiless request for endpoint ("" sends no field) and
// returns the status and body.
func (hc *h3Client) do(t *testing.T, endpoint, method, path string) (int, string) {
	t.Helper()
	head := &h3.Head{Method: method, Scheme: "https", Authority: "app.test", Path: path, ContentLength: -1}
	if endpoint != "" {
		head.Fields = httpio.Header{{Name: pipeline.EndpointField, Value: endpoint}}
	}
	x, err := hc.c.Open(t.Context(), head, true)
	if err != nil {
		t.Fatalf("open %s %s: %v", method, path, err)
	}
	defer x.Close()
	rh, err := x.ReadHead()
	if err != nil {
		t.Fatalf("response head: %v", err)
	}
	var body strings.Builder
	buf := make([]byte, 4096)
	for {
		n, err := x.NextData()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("response body: %v", err)
		}
		for n > 0 {
			m, err := x.ReadData(buf[:min(n, int64(len(buf)))])
			body.Write(buf[:m])
			n -= int64(m)
			if err != nil && n > 0 {
				t.Fatalf("response body: %v", err)
			}
		}
	}
	return rh.Status, body.String()
}

// TestEndToEndEndpointsGroupsAndACL runs a server with two endpoints on
// two origin groups and two client identities: the endpoint field picks
// the group and never reaches an origin; a killed origin of a group is
// skipped and comes back once its health check passes; an identity the
// access rules do not name is refused with 403 and a WARN line.
func TestEndToEndEndpointsGroupsAndACL(t *testing.T) {
	p := newTestPKI(t)
	opsCert, opsKey := p.issueLeaf(t, "ops", x509.ExtKeyUsageClientAuth, "ops.test")

	webA, webB := startRestartableOrigin(t, "web-a"), startRestartableOrigin(t, "web-b")
	api := startRestartableOrigin(t, "api")
	def := startRestartableOrigin(t, "default")

	cfg := p.serverConfig(def.addr)
	cfg.General.PeerHostnames = []string{"ops.test"}
	cfg.OriginGroups = []config.OriginGroup{
		{Name: "web", Addresses: []string{webA.addr, webB.addr}, Balance: config.BalanceRoundRobin, MaxFails: 1,
			FailTimeout: 60000, HealthPath: "/healthz", HealthInterval: 20, HealthTimeout: 5000, HealthStatuses: "200-399"},
		{Name: "api", Addresses: []string{api.addr}, Balance: config.BalanceRoundRobin, MaxFails: 3, FailTimeout: 10000,
			HealthInterval: 5000, HealthTimeout: 2000, HealthStatuses: "200-399"},
	}
	cfg.Endpoints = []config.Endpoint{
		{Name: "web", OriginGroup: "web"},
		{Name: "api", OriginGroup: "api", Allow: []config.AccessRule{
			{Identities: []string{"ops.test"}},
			{Methods: []string{"GET"}, PathPrefixes: []string{"/public/"}},
		}},
	}
	for _, fe := range config.FieldErrors(cfg.Validate()) {
		if fe.Field != "general.quic_port" { // 0: an ephemeral port, for the test
			t.Fatalf("config: %v", fe)
		}
	}
	slog, slb := newTestLogger(t)
	cfg.System.AdminAddress = "127.0.0.1:0"
	srv := startInstance(t, cfg, slog)
	port := srv.QUICAddr().(*net.UDPAddr).Port

	app := startH3Client(t, p, p.path("client.pem"), p.path("client-key.pem"), port)
	opsClient := startH3Client(t, p, opsCert, opsKey, port)

	// Endpoints pick groups; the field never reaches an origin.
	if st, body := app.do(t, "", "GET", "/"); st != 200 || body != "default" {
		t.Fatalf("default endpoint: %d %q", st, body)
	}
	seen := map[string]int{}
	for range 4 {
		st, body := app.do(t, "web", "GET", "/")
		if st != 200 {
			t.Fatalf("web: %d %q", st, body)
		}
		seen[body]++
	}
	if seen["web-a"] != 2 || seen["web-b"] != 2 {
		t.Fatalf("web group spread %v, want 2 each", seen)
	}
	if st, body := app.do(t, "nope", "GET", "/"); st != 404 || !strings.HasPrefix(body, "unknown endpoint") {
		t.Fatalf("unknown endpoint: %d %q", st, body)
	}
	if !slb.contains("unknown endpoint", "nope", clientName) {
		t.Errorf("no log line naming the unknown endpoint and the identity")
	}

	// Access rules: ops may do anything, client.test only GET /public/.
	if st, body := opsClient.do(t, "api", "DELETE", "/admin"); st != 200 || body != "api" {
		t.Fatalf("ops DELETE /admin: %d %q", st, body)
	}
	if st, body := app.do(t, "api", "GET", "/public/x"); st != 200 || body != "api" {
		t.Fatalf("client GET /public/x: %d %q", st, body)
	}
	st, body := app.do(t, "api", "DELETE", "/admin")
	if st != 403 || body != "request refused: forbidden by endpoint \"api\"'s access rules\n" {
		t.Fatalf("client DELETE /admin: %d %q", st, body)
	}
	if !slb.contains("no rule matched", clientName, "api", "DELETE", "/admin") {
		t.Errorf("no WARN line naming identity, endpoint, method, path")
	}
	if !slb.contains("connection established", "ops.test") {
		t.Errorf("the matched identity is not logged on connection established")
	}

	// A killed origin is skipped; it comes back after its health check.
	webA.kill()
	for range 6 {
		if st, body := app.do(t, "web", "GET", "/"); st != 200 || body != "web-b" {
			t.Fatalf("with web-a killed: %d %q", st, body)
		}
	}
	eventually(t, "web-a reported down", func() bool { return originUp(srv, "web", webA.addr) == "down" })
	if !webA.start() {
		t.Skip("web-a's port was taken while it was down")
	}
	eventually(t, "web-a back after a passing health check", func() bool { return originUp(srv, "web", webA.addr) == "up" })
	seen = map[string]int{}
	for range 4 {
		_, body := app.do(t, "web", "GET", "/")
		seen[body]++
	}
	if seen["web-a"] == 0 || seen["web-b"] == 0 {
		t.Fatalf("after recovery the web group sent to %v, want both", seen)
	}

	// /metrics carries the origin health and the endpoint counts.
	resp, err := http.Get("http://" + srv.adminLn.Addr().String() + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	metrics, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	for _, want := range []string{
		fmt.Sprintf(`ptproxy_origin_up{group="web",origin=%q} 1`, webA.addr),
		`ptproxy_endpoint_requests_total{endpoint="api"} 3`,
		`ptproxy_origin_consecutive_failures{group="api"`,
	} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("/metrics lacks %s", want)
		}
	}
}

// originUp is "up" or "down" for addr of group in the instance's status.
func originUp(in *Instance, group, addr string) string {
	for _, o := range in.status().Origins {
		if o.Group == group && o.Address == addr {
			if o.Up {
				return "up"
			}
			return "down"
		}
	}
	return "missing"
}

// TestCheckRoutes: ptproxy check prints the effective groups, endpoints
// and access rules, and lists every problem with them.
func TestCheckRoutes(t *testing.T) {
	p := newTestPKI(t)
	head := "[general]\nmode = \"Server\"\npeer_hostname = \"client.test\"\npeer_hostnames = [\"ops.test\"]\nhttp_connect_address = \"localhost:8081\"\n" +
		"[tls]\nca = \"ca.pem\"\ncert = \"server.pem\"\nkey = \"server-key.pem\"\n"
	good := head + `
[[origin_groups]]
name = "api"
addresses = ["10.0.0.1:8080", "10.0.0.2:8080"]
balance = "sticky"
sticky_key = "cookie:sid"
health_path = "/healthz"
tls = true
tls_ca = "ca.pem"

[[endpoints]]
name = "api"
origin_group = "api"
[[endpoints.allow]]
identities = ["ops.test"]
[[endpoints.allow]]
methods = ["GET"]
path_prefixes = ["/public/"]
`
	path := p.path("routes.toml")
	// check writes text as routes.toml and returns what ptproxy check prints.
	check := func(text string) string {
		t.Helper()
		if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		var out bytes.Buffer
		checkConfig(path, nil, time.Now()).write(&out)
		return out.String()
	}
	out := check(good)
	for _, want := range []string{
		"identities:  client.test, ops.test (a client certificate must match one; the first it matches is its identity)",
		"group:       api: 10.0.0.1:8080, 10.0.0.2:8080; balance sticky by cookie:sid; out after 3 consecutive failures; health check GET /healthz every 5000 ms (timeout 2000 ms, passes 200-399); TLS verified against " + p.path("ca.pem") + " for the host of each address",
		"group:       default: localhost:8081 (general.http_connect_address)",
		"endpoint:    (default) -> group default; allows everything (no access rules)",
		"endpoint:    api -> group api; allows [identities ops.test; methods any; paths any] or [identities any; methods GET; paths /public/]",
		"result:      OK",
	} {
		if !strings.Contains(out, want+"\n") {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	bad := head + `
[[origin_groups]]
name = "api"
addresses = ["10.0.0.1"]
balance = "sticky"
tls = true
tls_ca = "missing.pem"

[[endpoints]]
name = "api"
origin_group = "apii"
[[endpoints.allow]]
identities = ["nobody.test"]
`
	out = check(bad)
	for _, want := range []string{
		path + ": origin_groups[0].addresses[0]: must be host:port",
		path + ": origin_groups[0].sticky_key: required with balance = \"sticky\"",
		path + ": endpoints[0].origin_group: unknown origin group \"apii\"",
		path + ": endpoints[0].allow[0].identities[0]: \"nobody.test\" never matches",
		"result:      FAILED: 4 errors",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}

	// A TLS file that does not load is a problem of a valid file too.
	out = check(strings.Replace(good, `tls_ca = "ca.pem"`, `tls_ca = "missing.pem"`, 1))
	if !strings.Contains(out, path+": origin_groups[0].tls_ca: loading root CA certificates") {
		t.Errorf("missing origin CA not reported:\n%s", out)
	}
}
