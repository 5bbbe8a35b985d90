package app

import (
	"bytes"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/config"
)

// namedOrigin answers "<name> <path>" and records what it saw.
type namedOrigin struct {
	name string
	addr string
	mu   sync.Mutex
	seen []string // paths
	leak bool     // a ptproxy-endpoint field arrived
}

func startNamedOrigin(t *testing.T, name string, h func(w http.ResponseWriter, r *http.Request) bool) *namedOrigin {
	t.Helper()
	o := &namedOrigin{name: name}
	o.addr = startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		o.mu.Lock()
		o.seen = append(o.seen, r.URL.RequestURI())
		if r.Header.Get("Ptproxy-Endpoint") != "" {
			o.leak = true
		}
		o.mu.Unlock()
		if h != nil && h(w, r) {
			return
		}
		io.WriteString(w, name+" "+r.URL.RequestURI())
	}))
	return o
}

func (o *namedOrigin) count() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	return len(o.seen)
}

// TestEndToEndClientRoutes: two endpoints over one session. The client's
// routes send /api/ (prefix stripped) to endpoint "api", whose group of
// two origins takes the requests in turn, and everything else to the
// default endpoint; a second listener's requests go to endpoint "admin",
// whose access rules refuse this client (403 from ptproxy server); an
// endpoint field a caller sends picks nothing; no origin sees the field.
// A reload of the client's routes switches /api/ to the default endpoint
// while a download on the default endpoint, started before, completes.
func TestEndToEndClientRoutes(t *testing.T) {
	release := make(chan struct{})
	def := startNamedOrigin(t, "default", func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != "/download" {
			return false
		}
		w.Header().Set("Content-Length", "200000")
		w.Write([]byte(strings.Repeat("a", 100000)))
		w.(http.Flusher).Flush()
		<-release
		w.Write([]byte(strings.Repeat("b", 100000)))
		return true
	})
	a1, a2 := startNamedOrigin(t, "a1", nil), startNamedOrigin(t, "a2", nil)

	p := &pair{pki: newTestPKI(t)}
	scfg := p.pki.serverConfig(def.addr)
	scfg.OriginGroups = []config.OriginGroup{{Name: "api", Addresses: []string{a1.addr, a2.addr}, Balance: config.BalanceRoundRobin,
		MaxFails: 3, FailTimeout: 10000, HealthInterval: 5000, HealthTimeout: 2000, HealthStatuses: "200-399"}}
	scfg.Endpoints = []config.Endpoint{
		{Name: "api", OriginGroup: "api"},
		{Name: "admin", OriginGroup: "default", Allow: []config.AccessRule{{Identities: []string{"ops.test"}}}},
	}
	slog, _ := newTestLogger(t)
	p.server = startInstance(t, scfg, slog)
	ccfg := p.pki.clientConfig(p.server.QUICAddr().(*net.UDPAddr).Port)
	ccfg.Listeners = []config.Listener{{Address: "127.0.0.1:0", Endpoint: "admin"}}
	ccfg.Routes = []config.Route{{PathPrefix: "/api/", Endpoint: "api", StripPrefix: true}}
	clog, _ := newTestLogger(t)
	p.client = startInstance(t, ccfg, clog)
	waitReady(t, p.client)
	addrs := p.client.HTTPAddrs()
	if len(addrs) != 2 {
		t.Fatalf("%d listeners, want 2", len(addrs))
	}
	main, admin := "http://"+addrs[0].String(), "http://"+addrs[1].String()
	c := callerClient()

	var got []string
	for range 4 {
		got = append(got, getBody(t, c, main+"/api/users?id=7"))
	}
	if strings.Join(got, ",") != "a1 /users?id=7,a2 /users?id=7,a1 /users?id=7,a2 /users?id=7" &&
		strings.Join(got, ",") != "a2 /users?id=7,a1 /users?id=7,a2 /users?id=7,a1 /users?id=7" {
		t.Fatalf("endpoint api: %v, want the two origins in turn, prefix stripped", got)
	}
	if b := getBody(t, c, main+"/other"); b != "default /other" {
		t.Fatalf("default endpoint: %q", b)
	}
	req, _ := http.NewRequest("GET", main+"/other", nil)
	req.Header.Set("Ptproxy-Endpoint", "api")
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "default /other" {
		t.Fatalf("a caller's endpoint field picked %q", b)
	}
	resp, err = c.Get(admin + "/x")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusForbidden || resp.Header.Get("Server") != "ptproxy server" || !strings.Contains(string(b), `endpoint "admin"`) {
		t.Fatalf("the second listener's endpoint: %d %q %q, want 403 from ptproxy server", resp.StatusCode, resp.Header.Get("Server"), b)
	}
	for _, o := range []*namedOrigin{def, a1, a2} {
		if o.leak {
			t.Errorf("origin %s saw a ptproxy-endpoint field", o.name)
		}
	}

	// A keep-alive caller connection open before the reload.
	ka := callerClient()
	if b := getBody(t, ka, main+"/api/ka"); b != "a1 /ka" && b != "a2 /ka" {
		t.Fatalf("before the reload: %q", b)
	}

	// A long download on the default endpoint, then a reload of the
	// routes: /api/ goes to the default endpoint from now on, also on
	// connections open before.
	dl, err := c.Get(main + "/download")
	if err != nil {
		t.Fatal(err)
	}
	defer dl.Body.Close()
	head := make([]byte, 100000)
	if _, err := io.ReadFull(dl.Body, head); err != nil {
		t.Fatal(err)
	}
	next := *p.client.live
	next.Routes = []config.Route{{PathPrefix: "/v2/", Endpoint: "api", StripPrefix: true}}
	res, err := p.client.Reload(&next)
	if err != nil || len(res.Applied) != 1 || res.Applied[0] != "routes" {
		t.Fatalf("reload: %+v %v", res, err)
	}
	if b := getBody(t, c, main+"/api/users"); b != "default /api/users" {
		t.Fatalf("after the reload /api/ went to %q", b)
	}
	if b := getBody(t, c, main+"/v2/x"); b != "a1 /x" && b != "a2 /x" {
		t.Fatalf("after the reload /v2/ went to %q", b)
	}
	var reused bool
	kreq, _ := http.NewRequest("GET", main+"/api/ka", nil)
	kreq = kreq.WithContext(httptrace.WithClientTrace(kreq.Context(), &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}))
	kresp, err := ka.Do(kreq)
	if err != nil {
		t.Fatal(err)
	}
	kb, _ := io.ReadAll(kresp.Body)
	kresp.Body.Close()
	if !reused || string(kb) != "default /api/ka" {
		t.Fatalf("a connection open before the reload (reused %v) got %q, want the new routes", reused, kb)
	}
	close(release)
	rest, err := io.ReadAll(dl.Body)
	if err != nil || string(head)+string(rest) != strings.Repeat("a", 100000)+strings.Repeat("b", 100000) {
		t.Fatalf("download across the reload: %d+%d bytes, %v", len(head), len(rest), err)
	}
}

// TestCheckClientRoutes: ptproxy check prints the client's extra
// listeners and its routes in the order they are tried.
func TestCheckClientRoutes(t *testing.T) {
	p := newTestPKI(t)
	text := "[general]\nmode = \"Client\"\npeer_hostname = \"server.test\"\nhttp_bind_address = \"127.0.0.1:20080\"\n" +
		"[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n" + `
[[listeners]]
address = "127.0.0.1:20081"
endpoint = "admin"
[[routes]]
host = "api.example.com"
path_prefix = "/v1/"
endpoint = "api"
strip_prefix = true
[[routes]]
listener = "127.0.0.1:20080"
host = "*.static.example.com"
`
	path := p.path("client-routes.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	checkConfig(path, nil, time.Now()).write(&out)
	for _, want := range []string{
		"listen:      127.0.0.1:20081 (HTTP/1.1; requests no route matches go to endpoint admin)",
		"route:       1: host api.example.com, path /v1/* -> endpoint api (without /v1/)",
		"route:       2: listener 127.0.0.1:20080, host *.static.example.com -> the default endpoint",
		"result:      OK",
	} {
		if !strings.Contains(out.String(), want+"\n") {
			t.Errorf("missing %q in:\n%s", want, out.String())
		}
	}
}

// TestCheckFECAuto: ptproxy check says what fec = "auto" will do.
func TestCheckFECAuto(t *testing.T) {
	p := newTestPKI(t)
	text := "[general]\nmode = \"Client\"\npeer_hostname = \"server.test\"\n" +
		"[tls]\nca = \"ca.pem\"\ncert = \"client.pem\"\nkey = \"client-key.pem\"\n[transport]\nfec = \"auto\"\n"
	path := p.path("fec-auto.toml")
	if err := os.WriteFile(path, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	checkConfig(path, nil, time.Now()).write(&out)
	want := "fec:         auto (16 datagrams per group, 1 to 4 repairs from the loss the peer reports; the peer must set fec = \"auto\" too)\n"
	if !strings.Contains(out.String(), want) {
		t.Errorf("missing %q in:\n%s", want, out.String())
	}
}
