package pipeline

// Tests of origin groups, endpoints and access rules against real origin
// sockets. Nothing here asserts timing: health changes are awaited with
// eventually (a safety-net timeout only).

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// namedOrigin answers every request 200 with its name as the body and
// records the request heads it saw.
type namedOrigin struct {
	*scriptOrigin
	name    string
	mu      sync.Mutex
	headers []http.Header
	conns   []net.Conn
}

// kill stops the origin as a process exit would: the listener and every
// connection close.
func (n *namedOrigin) kill() {
	n.ln.Close()
	n.mu.Lock()
	for _, c := range n.conns {
		c.Close()
	}
	n.mu.Unlock()
}

func startNamedOrigin(t *testing.T, name string) *namedOrigin {
	n := &namedOrigin{name: name}
	n.scriptOrigin = startScriptOrigin(t, func(o *scriptOrigin, _ int, c net.Conn, br *bufio.Reader) {
		n.mu.Lock()
		n.conns = append(n.conns, c)
		n.mu.Unlock()
		for {
			req, _, err := o.read(br)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.headers = append(n.headers, req.Header.Clone())
			n.mu.Unlock()
			fmt.Fprintf(c, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(name), name)
		}
	})
	return n
}

func (n *namedOrigin) addr() string { return n.ln.Addr().String() }

// refusingAddr is an address where nothing listens: connecting is refused.
func refusingAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func newGroup(t *testing.T, o GroupOptions) *OriginGroup {
	t.Helper()
	if o.Name == "" {
		o.Name = "api"
	}
	g, err := NewOriginGroup(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g
}

// groupHandler serves one group as the default endpoint and as "api".
func groupHandler(g *OriginGroup) *Handler {
	return NewHandler(&ServerOptions{Endpoints: []*Endpoint{{Name: "", Group: g}, {Name: "api", Group: g}}})
}

func getWith(t *testing.T, h *Handler, target string, hdr http.Header) h3Result {
	t.Helper()
	return serveH3(t.Context(), h, "GET", target, hdr, nil, 0)
}

func TestTakeEndpoint(t *testing.T) {
	for _, tc := range []struct {
		fields []string
		want   string
		err    bool
	}{
		{nil, "", false},
		{[]string{"api"}, "api", false},
		{[]string{""}, "", false},
		{[]string{"api", " api "}, "api", false},
		{[]string{"api", "web"}, "", true},
	} {
		h := &Head{Header: httpio.Header{{Name: "accept", Value: "*/*"}}}
		for _, v := range tc.fields {
			h.Header = h.Header.Add(EndpointField, v)
			h.Header = h.Header.Add("x-other", "1")
		}
		got, err := TakeEndpoint(h)
		if got != tc.want || (err != nil) != tc.err || tc.err && !errors.Is(err, ErrConflictingEndpoints) {
			t.Errorf("TakeEndpoint(%q) = %q, %v", tc.fields, got, err)
		}
		if h.Header.Has(EndpointField) || h.Header.Get("accept") != "*/*" || len(h.Header) != 1+len(tc.fields) {
			t.Errorf("TakeEndpoint(%q) left %v", tc.fields, h.Header)
		}
	}
}

// TestRoundRobinExactOrder: with every origin up, round robin visits them
// in address order, again and again.
func TestRoundRobinExactOrder(t *testing.T) {
	a, b, c := startNamedOrigin(t, "a"), startNamedOrigin(t, "b"), startNamedOrigin(t, "c")
	h := groupHandler(newGroup(t, GroupOptions{Addresses: []string{a.addr(), b.addr(), c.addr()}}))
	var got []string
	for range 7 {
		r := get(t, h, "/")
		wantStatus(t, "round robin", r, 200)
		got = append(got, r.body)
	}
	if s := strings.Join(got, ""); s != "abcabca" {
		t.Fatalf("order %q, want abcabca", s)
	}
}

// TestRandomAndLeastRequestsSpread: over N requests every origin gets a
// share within a generous bound (random), and sequential requests, all
// finding zero in flight, are spread evenly (least_requests).
func TestRandomAndLeastRequestsSpread(t *testing.T) {
	const n = 90
	for _, tc := range []struct {
		balance string
		min     int
	}{{BalanceRandom, 10}, {BalanceLeastRequests, 25}} {
		t.Run(tc.balance, func(t *testing.T) {
			a, b, c := startNamedOrigin(t, "a"), startNamedOrigin(t, "b"), startNamedOrigin(t, "c")
			h := groupHandler(newGroup(t, GroupOptions{Balance: tc.balance, Addresses: []string{a.addr(), b.addr(), c.addr()}}))
			counts := map[string]int{}
			for range n {
				r := get(t, h, "/")
				wantStatus(t, tc.balance, r, 200)
				counts[r.body]++
			}
			for _, name := range []string{"a", "b", "c"} {
				if counts[name] < tc.min {
					t.Errorf("%s: origin %s got %d of %d requests (counts %v), want at least %d", tc.balance, name, counts[name], n, counts, tc.min)
				}
			}
		})
	}
}

// TestLeastRequestsAvoidsBusyOrigin: an origin holding a request is not
// given the next ones while another is idle.
func TestLeastRequestsAvoidsBusyOrigin(t *testing.T) {
	release := make(chan struct{})
	arrived := make(chan struct{}, 1)
	slow := startScriptOrigin(t, func(o *scriptOrigin, _ int, c net.Conn, br *bufio.Reader) {
		req, _, err := o.read(br)
		if err != nil {
			return
		}
		arrived <- struct{}{}
		<-release
		ok(c, req)
	})
	fast := startNamedOrigin(t, "fast")
	g := newGroup(t, GroupOptions{Balance: BalanceLeastRequests, Addresses: []string{slow.ln.Addr().String(), fast.addr()}})
	h := groupHandler(g)
	done := make(chan h3Result, 1)
	go func() { done <- get(t, h, "/slow") }()
	<-arrived
	for range 5 {
		if r := get(t, h, "/"); r.body != "fast" {
			t.Fatalf("a request went to the busy origin: %q", r.body)
		}
	}
	close(release)
	wantStatus(t, "slow", <-done, 200)
}

// TestStickyKeepsKeys: a key stays on one origin; when an origin leaves,
// only its keys move, and a request without a key is still served.
func TestStickyKeepsKeys(t *testing.T) {
	for _, kind := range []string{"header", "cookie"} {
		t.Run(kind, func(t *testing.T) {
			origins := []*namedOrigin{startNamedOrigin(t, "a"), startNamedOrigin(t, "b"), startNamedOrigin(t, "c")}
			opts := GroupOptions{Balance: BalanceSticky, MaxFails: 1, Addresses: []string{origins[0].addr(), origins[1].addr(), origins[2].addr()}}
			if kind == "header" {
				opts.StickyHeader = "X-User"
			} else {
				opts.StickyCookie = "sid"
			}
			g := newGroup(t, opts)
			h := groupHandler(g)
			send := func(key string) string {
				hdr := http.Header{"X-User": {key}}
				if kind == "cookie" {
					hdr = http.Header{"Cookie": {"theme=dark; sid=" + key}}
				}
				r := getWith(t, h, "/", hdr)
				wantStatus(t, "sticky "+key, r, 200)
				return r.body
			}
			first := map[string]string{}
			per := map[string]int{}
			for i := range 60 {
				key := fmt.Sprint("user-", i)
				first[key] = send(key)
				per[first[key]]++
				if again := send(key); again != first[key] {
					t.Fatalf("key %s moved from %s to %s with every origin up", key, first[key], again)
				}
			}
			if len(per) != 3 {
				t.Fatalf("keys spread over %v, want all three origins", per)
			}
			// Origin b leaves: its port refuses connections from now on.
			origins[1].kill()
			for key, was := range first {
				now := send(key)
				if was != "b" && now != was {
					t.Errorf("key %s moved from %s to %s although only b left", key, was, now)
				}
				if was == "b" && now == "b" {
					t.Errorf("key %s still answered by b", key)
				}
			}
			// No key: round robin over what is up.
			if r := get(t, h, "/"); r.status != 200 || r.body == "b" {
				t.Errorf("request without a key: %d %q", r.status, r.body)
			}
		})
	}
}

// TestPassiveHealthRefusingOrigin: an origin that refuses connections is
// skipped within the same request (nothing was sent), taken out after
// max_fails, and shown down; every request succeeds on the other one.
func TestPassiveHealthRefusingOrigin(t *testing.T) {
	good := startNamedOrigin(t, "good")
	bad := refusingAddr(t)
	g := newGroup(t, GroupOptions{MaxFails: 2, Addresses: []string{bad, good.addr()}})
	h := groupHandler(g)
	for i := range 8 {
		r := get(t, h, "/")
		wantStatus(t, fmt.Sprint("request ", i), r, 200)
		if r.body != "good" {
			t.Fatalf("body %q", r.body)
		}
	}
	st := g.States()
	if st[0].Up || st[0].Fails != 2 || !st[1].Up || st[1].Fails != 0 {
		t.Fatalf("states %+v: want the refusing origin down after 2 failures", st)
	}
}

// TestPassiveHealthBackAfterFailTimeout: without active checks an origin
// taken out comes back on trial once fail_timeout passed.
func TestPassiveHealthBackAfterFailTimeout(t *testing.T) {
	good := startNamedOrigin(t, "good")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	g := newGroup(t, GroupOptions{MaxFails: 1, FailTimeout: time.Millisecond, Addresses: []string{addr, good.addr()}})
	defer g.Close() // before the origin below waits for its connections
	h := groupHandler(g)
	wantStatus(t, "first", get(t, h, "/"), 200)
	if g.States()[0].Up && g.States()[0].Fails == 0 {
		t.Fatalf("refusing origin not counted: %+v", g.States())
	}
	// The origin comes back on the same port.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Skipf("the port was taken meanwhile: %v", err)
	}
	serveScriptOrigin(t, ln, func(o *scriptOrigin, _ int, c net.Conn, br *bufio.Reader) {
		for {
			if _, _, err := o.read(br); err != nil {
				return
			}
			io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Length: 4\r\n\r\nback")
		}
	})
	eventually(t, "the origin taken out serves again", func() bool {
		return get(t, h, "/").body == "back"
	})
}

// TestAllOriginsDown: when no origin of the group can take the request the
// 502 names the group, never an address.
func TestAllOriginsDown(t *testing.T) {
	g := newGroup(t, GroupOptions{Name: "api", MaxFails: 1, Addresses: []string{refusingAddr(t), refusingAddr(t)}})
	h := groupHandler(g)
	for i := range 3 { // tried and refused, then both out
		r := get(t, h, "/")
		wantStatus(t, fmt.Sprint("request ", i), r, 502)
		if !strings.Contains(r.body, "no origin of group api is available") || strings.Contains(r.body, "127.0.0.1") {
			t.Fatalf("502 body %q: want the group named, no address", r.body)
		}
	}
}

// TestActiveHealthChecks: a failing check takes an origin out, requests go
// to the other one, and a passing check brings it back.
func TestActiveHealthChecks(t *testing.T) {
	var healthy atomic.Bool
	flaky := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/healthz" {
			if !healthy.Load() {
				w.WriteHeader(503)
			}
			return
		}
		w.Write([]byte("flaky"))
	}))
	defer flaky.Close()
	good := startNamedOrigin(t, "good")
	g := newGroup(t, GroupOptions{
		Addresses:  []string{strings.TrimPrefix(flaky.URL, "http://"), good.addr()},
		HealthPath: "/healthz", HealthInterval: 10 * time.Millisecond, HealthTimeout: 5 * time.Second,
	})
	ctx, cancel := context.WithCancel(t.Context())
	var wg sync.WaitGroup
	wg.Go(func() { g.RunHealthChecks(ctx) })
	defer func() { cancel(); wg.Wait() }()
	h := groupHandler(g)

	eventually(t, "the failing origin is out", func() bool { return !g.States()[0].Up })
	for range 4 {
		if r := get(t, h, "/"); r.body != "good" {
			t.Fatalf("request went to the origin that is out: %d %q", r.status, r.body)
		}
	}
	healthy.Store(true)
	eventually(t, "the origin is back after a passing check", func() bool { return g.States()[0].Up })
	seen := map[string]bool{}
	for range 4 {
		seen[get(t, h, "/").body] = true
	}
	if !seen["flaky"] || !seen["good"] {
		t.Fatalf("after recovery the requests went to %v, want both", seen)
	}
}

// TestOriginTLS: an origin group with TLS verifies the origin against its
// CA and server name; a wrong name is a 502.
func TestOriginTLS(t *testing.T) {
	srv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "tls %s %v", r.Proto, r.TLS != nil)
	}))
	defer srv.Close()
	pool := x509.NewCertPool()
	pool.AddCert(srv.Certificate())
	addr := strings.TrimPrefix(srv.URL, "https://")
	for _, tc := range []struct {
		name, serverName string
		roots            *x509.CertPool
		status           int
	}{
		{"right name", "example.com", pool, 200},
		{"ip from address", "", pool, 200},
		{"wrong name", "wrong.example", pool, 502},
		{"unknown authority", "example.com", x509.NewCertPool(), 502},
	} {
		t.Run(tc.name, func(t *testing.T) {
			g := newGroup(t, GroupOptions{Addresses: []string{addr}, Origin: OriginOptions{
				TLS: &tls.Config{RootCAs: tc.roots, ServerName: tc.serverName, MinVersion: tls.VersionTLS12},
			}})
			r := get(t, groupHandler(g), "/x")
			wantStatus(t, tc.name, r, tc.status)
			if tc.status == 200 && r.body != "tls HTTP/1.1 true" {
				t.Fatalf("body %q", r.body)
			}
			if tc.status == 502 && strings.Contains(r.body, "127.0.0.1") {
				t.Fatalf("502 body %q names an address", r.body)
			}
			// A second request reuses the pooled TLS connection.
			if tc.status == 200 {
				wantStatus(t, "again", get(t, groupHandler(g), "/y"), 200)
			}
		})
	}
}

// TestEndpointFieldNeverReachesOrigin: the ptproxy-endpoint field is taken
// out, whether it names the default endpoint or another one.
func TestEndpointFieldNeverReachesOrigin(t *testing.T) {
	def, api := startNamedOrigin(t, "default"), startNamedOrigin(t, "api")
	h := NewHandler(&ServerOptions{Endpoints: []*Endpoint{
		{Name: "", Group: newGroup(t, GroupOptions{Name: "default", Addresses: []string{def.addr()}})},
		{Name: "api", Group: newGroup(t, GroupOptions{Name: "api", Addresses: []string{api.addr()}})},
	}})
	for _, tc := range []struct {
		hdr  http.Header
		want string
	}{
		{nil, "default"},
		{http.Header{"Ptproxy-Endpoint": {""}}, "default"},
		{http.Header{"Ptproxy-Endpoint": {"api"}, "X-Keep": {"1"}}, "api"},
		{http.Header{"Ptproxy-Endpoint": {"api", "api"}}, "api"},
	} {
		r := getWith(t, h, "/", tc.hdr)
		wantStatus(t, fmt.Sprint(tc.hdr), r, 200)
		if r.body != tc.want {
			t.Errorf("%v went to %q, want %q", tc.hdr, r.body, tc.want)
		}
	}
	for _, o := range []*namedOrigin{def, api} {
		o.mu.Lock()
		for _, hd := range o.headers {
			if _, ok := hd[http.CanonicalHeaderKey(EndpointField)]; ok {
				t.Errorf("origin %s received %s: %v", o.name, EndpointField, hd)
			}
		}
		o.mu.Unlock()
	}
	api.mu.Lock()
	if api.headers[0].Get("X-Keep") != "1" {
		t.Errorf("other fields lost: %v", api.headers[0])
	}
	api.mu.Unlock()

	r := getWith(t, h, "/", http.Header{"Ptproxy-Endpoint": {"nope"}})
	wantStatus(t, "unknown endpoint", r, 404)
	if !strings.HasPrefix(r.body, "unknown endpoint") {
		t.Errorf("404 body %q", r.body)
	}
	r = getWith(t, h, "/", http.Header{"Ptproxy-Endpoint": {"api", "other"}})
	wantStatus(t, "conflicting endpoints", r, 400)
}

// TestAccessRules: identities, methods and path prefixes, any rule
// allowing; a refusal is a 403 from ptproxy server naming the endpoint.
func TestAccessRules(t *testing.T) {
	o := startNamedOrigin(t, "o")
	g := newGroup(t, GroupOptions{Addresses: []string{o.addr()}})
	h := NewHandler(&ServerOptions{Endpoints: []*Endpoint{
		{Name: "", Group: g}, // no rules: everything passes
		{Name: "api", Group: g, Allow: []AccessRule{
			{Identities: []string{"admin.example"}},
			{Identities: []string{"app.example"}, Methods: []string{"GET", "HEAD"}, PathPrefixes: []string{"/v1/", "/public"}},
		}},
	}})
	for _, tc := range []struct {
		endpoint, identity, method, path string
		status                           int
	}{
		{"", "anyone.example", "DELETE", "/x", 200},
		{"api", "admin.example", "DELETE", "/admin", 200},
		{"api", "app.example", "GET", "/v1/users", 200},
		{"api", "app.example", "GET", "/public/x", 200},
		{"api", "app.example", "POST", "/v1/users", 403},
		{"api", "app.example", "GET", "/v2/users", 403},
		{"api", "other.example", "GET", "/v1/users", 403},
		{"api", "", "GET", "/v1/users", 403},
	} {
		m := newMemStream(t.Context())
		m.identity = tc.identity
		var hdr http.Header
		if tc.endpoint != "" {
			hdr = http.Header{"Ptproxy-Endpoint": {tc.endpoint}}
		}
		r := serveH3On(m, h, tc.method, tc.path, hdr, nil, 0)
		what := fmt.Sprintf("%s %s %s on %q", tc.identity, tc.method, tc.path, tc.endpoint)
		wantStatus(t, what, r, tc.status)
		if tc.status == 403 {
			if r.body != "request refused: forbidden by endpoint \"api\"'s access rules\n" || r.header.Get("Server") != "ptproxy server" {
				t.Errorf("%s: 403 body %q, server %q", what, r.body, r.header.Get("Server"))
			}
		}
	}
	if n := len(o.requests()); n != 4 {
		t.Errorf("origin saw %d requests, want the 4 allowed ones", n)
	}
}
