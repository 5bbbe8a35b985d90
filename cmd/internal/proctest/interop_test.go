package proctest

import (
	"bytes"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"slices"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/session/nettest"
)

// TestInterop checks ptproxy against servers and clients we did not write
// (docs/interop.md). Every cell of the matrix is one scenario (row), one
// client and one origin (columns): the client performs the scenario against
// the origin directly and through a ptproxy pair (client mode -> HTTP/3 ->
// server mode -> origin), and the two outcomes are compared by
// compareOutcomes. Origins run concurrently, each behind its own pair; the
// cells of one origin run one after another.
//
// -interop.matrix=FILE writes the matrix of the run into FILE (between the
// generated-section markers of docs/interop.md, or as the whole file); "-"
// logs it.
func TestInterop(t *testing.T) {
	x := newInteropRun(t)
	results := newMatrix()
	t.Cleanup(func() { writeMatrix(t, results) })
	// The origins run concurrently, all of them: their cells spend most of
	// their time starting client processes and waiting (keep-alive
	// timeouts, slow responses), and t.Parallel would cap them at
	// -parallel (GOMAXPROCS).
	var wg sync.WaitGroup
	defer wg.Wait()
	for _, kind := range interopOrigins {
		wg.Go(func() { t.Run(kind.name, func(t *testing.T) { runOriginGroup(t, x, kind, results) }) })
	}
}

// runOriginGroup runs every row for one origin behind its own pair.
func runOriginGroup(t *testing.T, x *interopRun, kind *originKind, results *matrix) {
	o := startOriginKind(t, kind)
	e := newEnv(t)
	port := nettest.FreePort(t, "udp")
	server, _, addr := startPair(t, e, o.addr(), port, port)
	g := &originGroup{x: x, kind: kind, origin: o, proxied: "http://" + addr, results: results, server: server}
	for _, row := range interopRows {
		t.Run(row.id, func(t *testing.T) {
			if g.kind.rows != nil && !slices.Contains(g.kind.rows, row.id) {
				for _, c := range peerClients {
					g.cell(t, row, c, g.kind.rowsWhy, nil)
				}
				return
			}
			if row.shared != nil {
				row.shared(t, g, row)
				return
			}
			for _, c := range peerClients {
				g.single(t, row, c)
			}
		})
	}
}

var interopMatrixFlag = flag.String("interop.matrix", "", "write the TestInterop matrix as markdown into this file (\"-\" logs it)")

// interopOrigins are the column groups of the matrix.
var interopOrigins = []*originKind{
	nginxOrigin(),
	nodeOrigin("node", 0),
	nodeOrigin("node-ka1s", 1000),
	pythonOrigin("py-http10", false),
	pythonOrigin("py-http11", true),
}

// scenario is one row of the matrix.
type scenario struct {
	id    string // subtest name and stable key
	title string // row label
	route string
	req   request // Path comes from the route, Body from the run
	body  bool    // the request carries the 2 MiB upload file
	want  int     // the status the direct exchange must have
	// upload: the answer reports the uploaded body (length and SHA-256),
	// which must be the file's, directly and through ptproxy.
	upload bool
	// ab's request count and concurrency for the row (default -n 20 -c 4).
	abN, abC int
	notFor   map[string]string // client name -> why the row does not apply
	// sane checks that the direct exchange is the one the row is about (a
	// chunked body is chunked, trailers arrive), so that a row cannot pass
	// by comparing two exchanges that test nothing. "" when it is.
	sane func(k *originKind, c *peerClient, direct outcome) string
	// shared runs a row whose phases are shared by all clients of an origin
	// (idle, restart); nil means one exchange per cell.
	shared func(t *testing.T, g *originGroup, row *scenario)
}

const abTrailers = "ab speaks HTTP/1.0: no chunked body, no trailers"

var interopRows = []*scenario{
	{id: "get", title: "GET, Content-Length body", route: routeStatic, req: request{Method: "GET"}, want: 200, abN: 200, abC: 4},
	{id: "get-2mib", title: "GET 2 MiB", route: routeBig, req: request{Method: "GET"}, want: 200, abN: 4, abC: 2},
	{id: "head", title: "HEAD", route: routeStatic, req: request{Method: "HEAD"}, want: 200},
	{id: "204", title: "204 No Content", route: route204, req: request{Method: "GET"}, want: 204},
	{id: "304", title: "304 Not Modified (If-Modified-Since)", route: routeStatic,
		req: request{Method: "GET", Header: []string{"If-Modified-Since: " + validatorDate}}, want: 304},
	{id: "unknown-length", title: "body of unknown length (chunked; close-delimited from HTTP/1.0)", route: routeChunked, req: request{Method: "GET"}, want: 200, sane: saneChunked},
	{id: "unknown-length-http10", title: "body of unknown length, HTTP/1.0 caller", route: routeChunked, req: request{Method: "GET", HTTP10: true}, want: 200},
	{id: "unknown-length-close", title: "body of unknown length, Connection: close caller", route: routeChunked, req: request{Method: "GET", Close: true}, want: 200},
	{id: "close-delimited", title: "close-delimited body", route: routeClose, req: request{Method: "GET"}, want: 200, sane: saneCloseDelimited},
	{id: "close-delimited-http10", title: "close-delimited body, HTTP/1.0 caller", route: routeClose, req: request{Method: "GET", HTTP10: true}, want: 200},
	{id: "close-delimited-close", title: "close-delimited body, Connection: close caller", route: routeClose, req: request{Method: "GET", Close: true}, want: 200},
	{id: "trailers", title: "chunked body with trailers", route: routeTrailers, req: request{Method: "GET"}, want: 200, sane: saneTrailers,
		notFor: map[string]string{"ab": abTrailers, "ab-k": abTrailers}},
	{id: "slow", title: "slow response (head after 200 ms, parts 100 ms apart)", route: routeSlow, req: request{Method: "GET"}, want: 200, abN: 4, abC: 2},
	{id: "150-fields", title: "150 response fields, head > 64 KiB", route: routeHeaders, req: request{Method: "GET"}, want: 200,
		notFor: map[string]string{"ab": "ab hangs on a head over its 8 KiB buffer (directly too)", "ab-k": "ab hangs on a head over its 8 KiB buffer (directly too)"}},
	{id: "post", title: "POST 2 MiB (Content-Length)", route: routeUpload, req: request{Method: "POST"}, body: true, upload: true, want: 200, abN: 4, abC: 2},
	{id: "put", title: "PUT 2 MiB (Content-Length)", route: routeUpload, req: request{Method: "PUT"}, body: true, upload: true, want: 200, abN: 4, abC: 2},
	{id: "post-chunked", title: "POST 2 MiB chunked", route: routeUpload, req: request{Method: "POST", Chunked: true}, body: true, upload: true, want: 200},
	{id: "expect-100", title: "PUT 2 MiB with Expect: 100-continue", route: routeUpload, req: request{Method: "PUT", Expect: true}, body: true, upload: true, want: 200, sane: saneContinue},
	{id: "early-413", title: "413 before the 2 MiB upload is read", route: routeReject, req: request{Method: "POST"}, body: true, want: 413, abN: 4, abC: 2},
	{id: "early-413-expect", title: "413 instead of 100 Continue", route: routeReject, req: request{Method: "POST", Expect: true}, body: true, want: 413},
	{id: "http10-no-host", title: "HTTP/1.0 request without Host", route: routeStatic, req: request{Method: "GET", HTTP10: true, Raw: "GET %s HTTP/1.0\r\n\r\n"}, want: 200},
	{id: "idle", title: "idle past the origin's keep-alive timeout, then GET, POST, PUT, chunked POST", shared: idleRow},
	{id: "restart", title: "origin restarted on its port, then GET, POST, PUT, chunked POST", shared: restartRow},
}

// Row sanity checks on the direct exchange, for the clients that show the
// detail (curl shows the head and the raw framing; http.request shows 1xx
// and trailers).

func saneChunked(k *originKind, c *peerClient, d outcome) string {
	if c.name == "curl" && k.name != "py-http10" && d.Header.Get("Transfer-Encoding") != "chunked" {
		return "the origin did not send a chunked body"
	}
	return ""
}

func saneCloseDelimited(k *originKind, c *peerClient, d outcome) string {
	if c.name == "curl" && (d.Header.Get("Transfer-Encoding") != "" || d.Header.Get("Content-Length") != "") {
		return "the origin framed the body"
	}
	return ""
}

func saneTrailers(k *originKind, c *peerClient, d outcome) string {
	if (c.name == "curl" || c.name == "http.request") && len(d.Trailer) == 0 {
		return "no trailer fields from the origin"
	}
	return ""
}

func saneContinue(k *originKind, c *peerClient, d outcome) string {
	if (c.name == "curl" || c.name == "http.request") && k.name != "py-http10" && !slices.Contains(d.Interim, 100) {
		return "the origin sent no 100 Continue"
	}
	return ""
}

// newInteropRun prepares the files the clients share: the 2 MiB upload.
func newInteropRun(t *testing.T) *interopRun {
	x := &interopRun{dir: t.TempDir(), testdata: interopDir(t), tools: map[string]string{}}
	x.upload, x.smallUpload = x.scratch("upload.bin"), x.scratch("upload-small.bin")
	for p, n := range map[string]int{x.upload: 2 << 20, x.smallUpload: 64 << 10} {
		if err := os.WriteFile(p, deterministic(n, "interop-upload"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	return x
}

// need resolves a client's program for a cell: skipped, or failed under
// CI, when it is missing.
func (x *interopRun) need(t *testing.T, c *peerClient) {
	t.Helper()
	if c.bin == "" || x.tool(c.bin) != "" {
		return
	}
	needTool(t, c.bin, c.pkg) // skips or fails
}

// have reports whether a client's program is there, resolving it once.
func (x *interopRun) have(c *peerClient) bool { return c.bin == "" || x.tool(c.bin) != "" }

// tool is the resolved path of bin ("" when missing). python3 resolves to
// the interpreter itself: a version manager's shim (pyenv) would cost a
// shell start on every client run.
func (x *interopRun) tool(bin string) string {
	x.mu.Lock()
	defer x.mu.Unlock()
	if p, ok := x.tools[bin]; ok {
		return p
	}
	p := lookTool(bin)
	if p != "" && bin == "python3" {
		if out, err := exec.Command(p, "-c", "import sys; print(sys.executable)").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
			p = string(bytes.TrimSpace(out))
		}
	}
	x.tools[bin] = p
	return p
}

// originGroup is one origin behind its ptproxy pair.
type originGroup struct {
	x       *interopRun
	kind    *originKind
	origin  *originInstance
	proxied string // base URL of the client process
	results *matrix
	server  *proc
}

// request builds row's request for this origin, or says why there is none.
func (g *originGroup) request(row *scenario, c *peerClient) (request, string) {
	r := row.req
	if g.kind.rows != nil && !slices.Contains(g.kind.rows, row.id) {
		return r, g.kind.rowsWhy
	}
	path := g.kind.path(row.route)
	if path == "" {
		return r, g.kind.name + " has no " + row.route + " route: " + noRouteReason(g.kind, row.route)
	}
	r.Path = path
	if r.Raw != "" {
		r.Raw = fmt.Sprintf(r.Raw, path)
	}
	if row.body {
		r.Body = g.x.upload
	}
	r.N, r.C = 20, 4
	if row.abN > 0 {
		r.N, r.C = row.abN, row.abC
	}
	if c.name == "ab-k" && (row.want < 200 || row.want > 299) {
		// ab -k sends a next request on every connection whose answer
		// completes, even once the last one needed is under way, and
		// counts a non-2xx answer when it reads its head: with a second
		// connection, an answer that comes back at once (an early 413, a
		// 304) to that extra request is counted before ab stops, so "Non-2xx
		// responses" is n or n+1 by timing, directly too (seen in CI). One
		// connection stops at the n-th answer.
		r.C = 1
	}
	if why := row.notFor[c.name]; why != "" {
		return r, why
	}
	if why := c.cannot(r); why != "" {
		return r, why
	}
	return r, ""
}

func noRouteReason(k *originKind, route string) string {
	switch {
	case route == routeSlow && k.name == "nginx":
		return "stock nginx cannot delay a response"
	case route == routeTrailers:
		return "an HTTP/1.0 response cannot carry trailers"
	}
	return "not served"
}

// cellLog collects why a cell failed, for the matrix.
type cellLog struct {
	t    *testing.T
	errs []string
}

func (c *cellLog) errorf(format string, args ...any) {
	c.t.Helper()
	msg := fmt.Sprintf(format, args...)
	c.errs = append(c.errs, msg)
	c.t.Error(msg)
}

// cell runs one cell as a subtest and records its result. A cell that
// does not apply (why) is recorded as such and skipped.
func (g *originGroup) cell(t *testing.T, row *scenario, c *peerClient, why string, body func(t *testing.T, cl *cellLog)) {
	t.Run(c.name, func(t *testing.T) {
		if why != "" {
			g.results.set(g.kind.name, row.id, c.name, cellResult{state: cellNA, detail: why})
			t.Skip("not applicable: " + why)
		}
		cl := &cellLog{t: t}
		res := cellResult{state: cellSkip, detail: "skipped"}
		defer func() {
			switch {
			case t.Failed():
				res = cellResult{state: cellFail, detail: strings.Join(cl.errs, "; ")}
				if res.detail == "" {
					res.detail = "failed (see the test log)"
				}
			case t.Skipped():
			default:
				res = cellResult{state: cellPass}
			}
			g.results.set(g.kind.name, row.id, c.name, res)
		}()
		g.x.need(t, c)
		body(t, cl)
	})
}

// single is the ordinary cell: one exchange directly, one through ptproxy.
func (g *originGroup) single(t *testing.T, row *scenario, c *peerClient) {
	r, why := g.request(row, c)
	g.cell(t, row, c, why, func(t *testing.T, cl *cellLog) {
		// The two runs are independent: they go concurrently.
		var direct, proxied outcome
		var wg sync.WaitGroup
		wg.Go(func() { direct = c.run(t, g.x, g.origin.base(), r) })
		proxied = c.run(t, g.x, g.proxied, r)
		wg.Wait()
		if row.sane != nil && direct.Err == "" {
			if why := row.sane(g.kind, c, direct); why != "" {
				cl.errorf("direct: %s (the scenario is broken, not ptproxy)", why)
			}
		}
		g.check(cl, row, r, direct, proxied)
	})
}

// check applies the row's expectations to the direct outcome and the
// comparison rules to the pair.
func (g *originGroup) check(cl *cellLog, row *scenario, r request, direct, proxied outcome) {
	cl.t.Helper()
	if row.upload {
		g.uploadReported(cl, "direct", r.Body, &direct)
		g.uploadReported(cl, "proxied", r.Body, &proxied)
	}
	if direct.Err == "" && !statusIs(direct, row.want, r) {
		cl.errorf("direct: %v, want status %d (the scenario is broken, not ptproxy)", direct, row.want)
	}
	for _, d := range compareOutcomes(direct, proxied, r.Method == http.MethodHead) {
		cl.errorf("%s", d)
	}
	// RFC 9112 6.1: no chunked framing to an HTTP/1.0 caller. Lenient
	// clients decode it anyway, so the rule is checked, not only the body.
	if r.HTTP10 && proxied.Header.Get("Transfer-Encoding") != "" {
		cl.errorf("Transfer-Encoding %q sent to an HTTP/1.0 caller", proxied.Header.Get("Transfer-Encoding"))
	}
	if cl.t.Failed() {
		cl.t.Logf("direct:  %v\n  header %v\n  trailer %v", direct, direct.Header, direct.Trailer)
		cl.t.Logf("proxied: %v\n  header %v\n  trailer %v", proxied, proxied.Header, proxied.Trailer)
	}
}

// statusIs reports whether o has status want (ab: every response has it).
func statusIs(o outcome, want int, r request) bool {
	if o.AB == nil {
		return o.Status == want
	}
	n := r.N
	if o.AB.Complete != n {
		return false
	}
	if want >= 200 && want < 300 {
		return o.AB.Non2xx == 0
	}
	return o.AB.Non2xx == n
}

// uploadReported checks that the upload route's answer reports the file
// that was sent (sent), and replaces the answer by that report: nginx
// answers with the name of the file it stored, which differs between the
// two runs.
func (g *originGroup) uploadReported(cl *cellLog, which, sent string, o *outcome) {
	cl.t.Helper()
	if o.AB != nil || o.Err != "" || o.Status != http.StatusOK {
		return
	}
	n, sum, err := g.kind.uploaded(o.Body)
	if err != nil {
		cl.errorf("%s: %v", which, err)
		return
	}
	sentN, sentSum, err := fileDigest(sent)
	if err != nil {
		cl.t.Fatal(err)
	}
	if n != sentN || sum != sentSum {
		cl.errorf("%s: the origin received %d bytes sha256 %.12s, sent %d bytes sha256 %.12s", which, n, sum, sentN, sentSum)
	}
	setBody(o, fmt.Appendf(nil, "received %d bytes sha256 %s", n, sum))
}

// Comparison rules (docs/interop.md, "How a cell is compared").
//
// Fields never compared, because they describe a connection or a moment,
// not the message (RFC 9110 7.6.1, 6.6.1) or are framing, which each hop
// chooses for itself (RFC 9112 6): Connection, Keep-Alive,
// Proxy-Connection, TE, Upgrade, Transfer-Encoding, Trailer (the
// declaration; the trailer fields themselves are compared), Date.
// Content-Length is framing too, compared only where it is metadata: in
// answers to HEAD and in 304s (the body itself is always compared).
var notCompared = map[string]bool{
	"Connection": true, "Keep-Alive": true, "Proxy-Connection": true, "Te": true, "Upgrade": true,
	"Transfer-Encoding": true, "Trailer": true, "Date": true,
}

// compareOutcomes lists how proxied differs from direct. Both must have
// completed without a client error (valid framing, no exception, exit 0);
// then status, interim responses, body bytes, fields and trailers (ab:
// its counters) must be equal, field names compared case-insensitively and
// values per name in order.
func compareOutcomes(direct, proxied outcome, head bool) []string {
	var d []string
	if direct.Err != "" {
		d = append(d, "direct exchange failed (the scenario is broken, not ptproxy): "+direct.Err)
	}
	if proxied.Err != "" {
		d = append(d, "through ptproxy the client failed: "+proxied.Err)
	}
	if len(d) > 0 {
		return d
	}
	if direct.AB != nil {
		a, b := direct.AB, proxied.AB
		if a.Complete != b.Complete || a.Failed != b.Failed || a.Non2xx != b.Non2xx || a.DocLen != b.DocLen || a.HTML != b.HTML {
			d = append(d, fmt.Sprintf("ab: direct %v; proxied %v", a, b))
		}
		return d
	}
	if direct.Status != proxied.Status {
		d = append(d, fmt.Sprintf("status: direct %d, proxied %d", direct.Status, proxied.Status))
	}
	if !slices.Equal(direct.Interim, proxied.Interim) {
		d = append(d, fmt.Sprintf("interim responses: direct %v, proxied %v", direct.Interim, proxied.Interim))
	}
	if direct.BodyLen != proxied.BodyLen || direct.BodySHA != proxied.BodySHA {
		d = append(d, fmt.Sprintf("body: direct %d bytes sha256 %.12s, proxied %d bytes sha256 %.12s", direct.BodyLen, direct.BodySHA, proxied.BodyLen, proxied.BodySHA))
	}
	compareLength := head || direct.Status == http.StatusNotModified
	fields := compareFields("field", direct.Header, proxied.Header, func(k string) bool {
		return notCompared[k] || k == "Content-Length" && !compareLength
	})
	fields = append(fields, compareFields("trailer", direct.Trailer, proxied.Trailer, func(string) bool { return false })...)
	if len(fields) > 4 {
		fields = append(fields[:4], fmt.Sprintf("and %d more fields differ", len(fields)-4))
	}
	return append(d, fields...)
}

func compareFields(what string, direct, proxied http.Header, skip func(string) bool) []string {
	var d []string
	names := map[string]bool{}
	for k := range direct {
		names[k] = true
	}
	for k := range proxied {
		names[k] = true
	}
	keys := make([]string, 0, len(names))
	for k := range names {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		if skip(k) {
			continue
		}
		a, b := direct.Values(k), proxied.Values(k)
		if !slices.Equal(a, b) {
			d = append(d, fmt.Sprintf("%s %s: direct %q, proxied %q", what, k, clip(a), clip(b)))
		}
	}
	return d
}

func clip(v []string) []string {
	out := make([]string, len(v))
	for i, s := range v {
		if len(s) > 60 {
			s = s[:60] + "..."
		}
		out[i] = s
	}
	return out
}

// exchange is one request of a shared row, performed by a client against
// one target.
type exchange struct {
	client *peerClient
	label  string
	req    request
	base   string
	out    outcome
}

// runAll performs exchanges concurrently, at most 8 client processes at a
// time.
func runAll(t *testing.T, x *interopRun, exs []*exchange) {
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for _, ex := range exs {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			ex.out = ex.client.run(t, x, ex.base, ex.req)
		})
	}
	wg.Wait()
}

// sharedRequests are the requests of the idle and restart rows' last phase
// that client c can send: GET, POST, PUT and a chunked POST. The uploads
// are 64 KiB: these rows are about connections, not sizes.
func (g *originGroup) sharedRequests(c *peerClient) map[string]request {
	out := map[string]request{}
	body := g.x.smallUpload
	for label, r := range map[string]request{
		"GET":          {Method: "GET", Path: g.kind.path(routeStatic)},
		"POST":         {Method: "POST", Path: g.kind.path(routeUpload), Body: body},
		"PUT":          {Method: "PUT", Path: g.kind.path(routeUpload), Body: body},
		"chunked POST": {Method: "POST", Path: g.kind.path(routeUpload), Body: body, Chunked: true},
	} {
		if c.name == "ab" || c.name == "ab-k" {
			r.N, r.C = 8, 4
			if r.Body != "" {
				r.N, r.C = 4, 2
			}
		}
		if c.cannot(r) == "" {
			out[label] = r
		}
	}
	return out
}

// sharedClients are the clients of the idle and restart rows: all but raw,
// and only those whose program is there (the others' cells are skipped,
// or fail under CI, through cell).
func (g *originGroup) sharedClients(t *testing.T, row *scenario) []*peerClient {
	var out []*peerClient
	for _, c := range peerClients {
		switch {
		case c.name == "raw":
			g.cell(t, row, c, "sends only the raw request (no Host)", nil)
		case !g.x.have(c):
			g.cell(t, row, c, "", func(*testing.T, *cellLog) {})
		default:
			out = append(out, c)
		}
	}
	return out
}

// pairUp returns the same requests against both targets, in order.
func (g *originGroup) pairUp(c *peerClient, label string, r request) (direct, proxied *exchange) {
	return &exchange{client: c, label: label, req: r, base: g.origin.base()},
		&exchange{client: c, label: label, req: r, base: g.proxied}
}

// comparePairs checks each (direct, proxied) pair as an ordinary cell of a
// GET (want 200) or upload row.
func (g *originGroup) comparePairs(cl *cellLog, phase string, pairs [][2]*exchange) {
	for _, p := range pairs {
		row := &scenario{want: 200, upload: p[0].req.Body != ""}
		before := len(cl.errs)
		g.check(cl, row, p[0].req, p[0].out, p[1].out)
		for i := before; i < len(cl.errs); i++ {
			cl.errs[i] = phase + " " + p[0].label + ": " + cl.errs[i]
		}
	}
}

// idleRow: every client fills the server's origin pool (concurrent GETs),
// then nothing happens for longer than the origin's keep-alive timeout (the
// origin closes its idle connections), then every client sends GET, POST,
// PUT and a chunked POST. Each must match the direct exchange: in
// particular no 502 for a pooled connection the origin closed. The phases
// are shared by the clients of an origin so the row costs one wait.
func idleRow(t *testing.T, g *originGroup, row *scenario) {
	clients := g.sharedClients(t, row)
	var fill, burst []*exchange
	fillPairs, burstPairs := map[string][][2]*exchange{}, map[string][][2]*exchange{}
	for _, c := range clients {
		get := request{Method: "GET", Path: g.kind.path(routeStatic)}
		n := 2
		if c.name == "ab" || c.name == "ab-k" {
			get.N, get.C, n = 8, 4, 1
		}
		for range n {
			d, p := g.pairUp(c, "GET", get)
			fill = append(fill, d, p)
			fillPairs[c.name] = append(fillPairs[c.name], [2]*exchange{d, p})
		}
		for label, r := range g.sharedRequests(c) {
			d, p := g.pairUp(c, label, r)
			burst = append(burst, d, p)
			burstPairs[c.name] = append(burstPairs[c.name], [2]*exchange{d, p})
		}
	}
	runAll(t, g.x, fill)
	wait := g.kind.idle + time.Second
	t.Logf("pool filled; idle for %v (origin keep-alive timeout %v)", wait, g.kind.idle)
	time.Sleep(wait)
	runAll(t, g.x, burst)
	for _, c := range clients {
		g.cell(t, row, c, "", func(t *testing.T, cl *cellLog) {
			g.comparePairs(cl, "before the wait", fillPairs[c.name])
			g.comparePairs(cl, "after the wait", burstPairs[c.name])
		})
	}
}

// restartRow: every client sends a GET; the origin is stopped (by pid) and
// every client sends a GET through ptproxy, which must be answered 502
// (directly the connection is refused); the origin is started again on the
// same port and every client sends GET, POST, PUT and a chunked POST, each
// matching the direct exchange (no 502 for connections pooled before the
// restart).
func restartRow(t *testing.T, g *originGroup, row *scenario) {
	clients := g.sharedClients(t, row)
	var before, during, after []*exchange
	beforePairs, afterPairs := map[string][][2]*exchange{}, map[string][][2]*exchange{}
	duringEx := map[string][2]*exchange{}
	for _, c := range clients {
		get := request{Method: "GET", Path: g.kind.path(routeStatic)}
		if c.name == "ab" || c.name == "ab-k" {
			get.N, get.C = 8, 4
		}
		d, p := g.pairUp(c, "GET", get)
		before = append(before, d, p)
		beforePairs[c.name] = [][2]*exchange{{d, p}}
		d, p = g.pairUp(c, "GET", get)
		during = append(during, d, p)
		duringEx[c.name] = [2]*exchange{d, p}
		for label, r := range g.sharedRequests(c) {
			d, p := g.pairUp(c, label, r)
			after = append(after, d, p)
			afterPairs[c.name] = append(afterPairs[c.name], [2]*exchange{d, p})
		}
	}
	runAll(t, g.x, before)
	g.origin.stop()
	runAll(t, g.x, during)
	g.origin.start(t)
	runAll(t, g.x, after)
	for _, c := range clients {
		g.cell(t, row, c, "", func(t *testing.T, cl *cellLog) {
			g.comparePairs(cl, "before the restart", beforePairs[c.name])
			d, p := duringEx[c.name][0].out, duringEx[c.name][1].out
			if d.Err == "" {
				cl.errorf("while the origin is down, the direct exchange did not fail: %v", d)
			}
			if !outageAnswer(p, duringEx[c.name][1].req) {
				cl.errorf("while the origin is down, through ptproxy: %v, want 502 from ptproxy", p)
			}
			g.comparePairs(cl, "after the restart", afterPairs[c.name])
		})
	}
}

// outageAnswer reports whether o is ptproxy's answer for an origin that
// refuses connections: 502 from the server side, a complete response.
func outageAnswer(o outcome, r request) bool {
	if o.Err != "" {
		return false
	}
	if o.AB != nil {
		return o.AB.Complete == r.N && o.AB.Non2xx == r.N
	}
	return o.Status == http.StatusBadGateway && o.Header.Get("Server") == "ptproxy server"
}

// The matrix of a run.

type cellState int

const (
	cellNotRun cellState = iota
	cellPass
	cellFail
	cellNA
	cellSkip
)

type cellResult struct {
	state  cellState
	detail string
}

type matrix struct {
	mu    sync.Mutex
	cells map[[3]string]cellResult // origin, row, client
}

func newMatrix() *matrix { return &matrix{cells: map[[3]string]cellResult{}} }

func (m *matrix) set(origin, row, client string, r cellResult) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cells[[3]string{origin, row, client}] = r
}

const (
	matrixBegin = "<!-- BEGIN GENERATED MATRIX (go test -run TestInterop -interop.matrix=...) -->"
	matrixEnd   = "<!-- END GENERATED MATRIX -->"
)

func writeMatrix(t *testing.T, m *matrix) {
	if *interopMatrixFlag == "" {
		return
	}
	md := renderMatrix(m)
	if *interopMatrixFlag == "-" {
		t.Logf("interop matrix:\n%s", md)
		return
	}
	old, err := os.ReadFile(*interopMatrixFlag)
	out := []byte(md)
	if err == nil {
		if i, j := bytes.Index(old, []byte(matrixBegin)), bytes.Index(old, []byte(matrixEnd)); i >= 0 && j > i {
			out = slices.Concat(old[:i+len(matrixBegin)], []byte("\n"), []byte(md), old[j:])
		}
	}
	if err := os.WriteFile(*interopMatrixFlag, out, 0o644); err != nil {
		t.Errorf("writing the matrix: %v", err)
	}
}

// renderMatrix writes one table per origin (rows: scenarios, columns:
// clients), then what was not applicable and why, then every failure.
func renderMatrix(m *matrix) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	var b strings.Builder
	counts := map[cellState]int{}
	for _, r := range m.cells {
		counts[r.state]++
	}
	fmt.Fprintf(&b, "Run: %s.\n\n", peerVersions())
	fmt.Fprintf(&b, "%d scenarios × %d clients × %d origins = %d cells: %d run, **%d same as direct**, %d different; %d not applicable, %d skipped (tool missing).\n\n",
		len(interopRows), len(peerClients), len(interopOrigins), len(interopRows)*len(peerClients)*len(interopOrigins),
		counts[cellPass]+counts[cellFail], counts[cellPass], counts[cellFail], counts[cellNA], counts[cellSkip])
	b.WriteString("✓ same as direct · ✗ different (listed below) · – not applicable (reasons below) · s skipped · blank: not run\n")
	for _, o := range interopOrigins {
		fmt.Fprintf(&b, "\n### %s\n\n| scenario |", o.title)
		for _, c := range peerClients {
			fmt.Fprintf(&b, " %s |", c.name)
		}
		b.WriteString("\n|---|")
		for range peerClients {
			b.WriteString(":-:|")
		}
		b.WriteString("\n")
		for _, row := range interopRows {
			fmt.Fprintf(&b, "| %s |", row.title)
			for _, c := range peerClients {
				r, ok := m.cells[[3]string{o.name, row.id, c.name}]
				mark := " "
				if ok {
					mark = map[cellState]string{cellPass: "✓", cellFail: "✗", cellNA: "–", cellSkip: "s"}[r.state]
				}
				fmt.Fprintf(&b, " %s |", mark)
			}
			b.WriteString("\n")
		}
	}
	// Not applicable, grouped by reason.
	reasons := map[string][]string{}
	var failures []string
	for _, o := range interopOrigins {
		for _, row := range interopRows {
			for _, c := range peerClients {
				r, ok := m.cells[[3]string{o.name, row.id, c.name}]
				if !ok {
					continue
				}
				switch r.state {
				case cellNA:
					reasons[r.detail] = append(reasons[r.detail], fmt.Sprintf("%s/%s/%s", o.name, row.id, c.name))
				case cellFail:
					failures = append(failures, fmt.Sprintf("- %s/%s/%s: %s", o.name, row.id, c.name, r.detail))
				}
			}
		}
	}
	b.WriteString("\nNot applicable:\n\n")
	keys := make([]string, 0, len(reasons))
	for k := range reasons {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Fprintf(&b, "- %s: %s\n", k, summarizeCells(reasons[k]))
	}
	if len(failures) > 0 {
		b.WriteString("\nDifferences:\n\n")
		b.WriteString(strings.Join(failures, "\n"))
		b.WriteString("\n")
	}
	return b.String()
}

// summarizeCells shortens a list of origin/row/client cells: the rows and
// clients, and the origins unless all of them.
func summarizeCells(cells []string) string {
	var origins, rows, clients []string
	for _, c := range cells {
		p := strings.SplitN(c, "/", 3)
		if !slices.Contains(origins, p[0]) {
			origins = append(origins, p[0])
		}
		if !slices.Contains(rows, p[1]) {
			rows = append(rows, p[1])
		}
		if !slices.Contains(clients, p[2]) {
			clients = append(clients, p[2])
		}
	}
	s := fmt.Sprintf("%d cells (rows %s; clients %s", len(cells), strings.Join(rows, ", "), strings.Join(clients, ", "))
	if len(origins) < len(interopOrigins) {
		s += "; origins " + strings.Join(origins, ", ")
	}
	return s + ")"
}

// peerVersions names the programs of the run.
func peerVersions() string {
	v := func(bin string, args ...string) string {
		p := lookTool(bin)
		if p == "" {
			return bin + " missing"
		}
		out, _ := exec.Command(p, args...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		return line
	}
	field := func(s string, i int) string {
		if f := strings.Fields(s); len(f) > i {
			return f[i]
		}
		return s
	}
	return strings.Join([]string{
		strings.TrimPrefix(v("nginx", "-v"), "nginx version: "),
		"Node.js " + v("node", "--version"),
		v("python3", "--version"),
		"curl " + field(v("curl", "--version"), 1),
		"ab " + strings.TrimSuffix(field(v("ab", "-V"), 4), ","),
		"ptproxy built with the race detector " + map[bool]string{true: "on", false: "off"}[raceEnabled],
	}, "; ")
}

// TestInteropDocMatrix keeps docs/interop.md's generated matrix in step
// with the tables above (it needs no external tool): every origin, row and
// client is there. Regenerate with the command in the doc.
func TestInteropDocMatrix(t *testing.T) {
	doc := string(readRepoFile(t, "docs/interop.md"))
	i, j := strings.Index(doc, matrixBegin), strings.Index(doc, matrixEnd)
	if i < 0 || j < i {
		t.Fatalf("docs/interop.md lacks the generated section (%q ... %q)", matrixBegin, matrixEnd)
	}
	gen := doc[i:j]
	var want []string
	for _, o := range interopOrigins {
		want = append(want, "### "+o.title)
	}
	for _, r := range interopRows {
		want = append(want, "| "+r.title+" |")
	}
	for _, c := range peerClients {
		want = append(want, " "+c.name+" |")
	}
	for _, w := range want {
		if !strings.Contains(gen, w) {
			t.Errorf("docs/interop.md's matrix lacks %q: regenerate it", w)
		}
	}
}

func readRepoFile(t *testing.T, rel string) []byte {
	t.Helper()
	b, err := os.ReadFile("../../../" + rel)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
