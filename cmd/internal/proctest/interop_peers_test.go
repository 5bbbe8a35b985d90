package proctest

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/session/nettest"
)

// The peers of the interop suite (TestInterop): origin servers and HTTP
// clients we did not write, run as processes. Each is driven the same way
// against the origin directly and through a ptproxy pair; interop_test.go
// compares the two.

// needTool returns the path of an external program the interop suite needs.
// Missing, it skips the test locally, naming the Debian package to install,
// and fails it under CI (CI=true), where .ci/run installs the packages.
func needTool(t *testing.T, bin, pkg string) string {
	t.Helper()
	if p := lookTool(bin); p != "" {
		return p
	}
	missingTool(t, fmt.Sprintf("%s not found: install the Debian package %s", bin, pkg))
	return ""
}

// missingTool skips the test locally with msg, and fails it under CI.
func missingTool(t *testing.T, msg string) {
	t.Helper()
	if os.Getenv("CI") == "true" {
		t.Fatal(msg)
	}
	t.Skip(msg)
}

// pythonWith returns a Python 3 interpreter that can import module: the
// system's (where Debian installs python3-* packages) or the one on PATH
// (which may be a version manager's without them).
func pythonWith(t *testing.T, module, pkg string) string {
	t.Helper()
	for _, py := range []string{"/usr/bin/python3", lookTool("python3")} {
		if py != "" && exec.Command(py, "-c", "import "+module).Run() == nil {
			return py
		}
	}
	missingTool(t, fmt.Sprintf("no python3 that imports %s: install the Debian package %s", module, pkg))
	return ""
}

// lookTool finds bin on PATH or in the sbin directories (nginx lives in
// /usr/sbin, which is not on every user's PATH); "" when missing.
func lookTool(bin string) string {
	if p, err := exec.LookPath(bin); err == nil {
		return p
	}
	for _, dir := range []string{"/usr/sbin", "/usr/local/sbin"} {
		if p := filepath.Join(dir, bin); isExecutable(p) {
			return p
		}
	}
	return ""
}

func isExecutable(p string) bool {
	st, err := os.Stat(p)
	return err == nil && !st.IsDir() && st.Mode()&0o111 != 0
}

// interopDir is testdata/interop at the top of the repository.
func interopDir(t *testing.T) string {
	t.Helper()
	d, err := filepath.Abs(filepath.Join("..", "..", "..", "testdata", "interop"))
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// pythonExe resolves python3 to the interpreter itself: a version
// manager's shim (pyenv) costs a shell start on every run.
func pythonExe(t *testing.T) string {
	t.Helper()
	py := needTool(t, "python3", "python3")
	out, err := exec.Command(py, "-c", "import sys; print(sys.executable)").Output()
	if exe := strings.TrimSpace(string(out)); err == nil && exe != "" {
		return exe
	}
	return py
}

// peerProc is an origin server process started by the test. It is stopped
// by its pid at cleanup at the latest.
type peerProc struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{}
	waitErr error
}

func startPeerProc(t *testing.T, name string, cmd *exec.Cmd, dir string) *peerProc {
	t.Helper()
	p := &peerProc{t: t, name: name, cmd: cmd, logPath: filepath.Join(dir, name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	go func() {
		p.waitErr = cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			raw, _ := os.ReadFile(p.logPath)
			if len(raw) > 8<<10 {
				raw = raw[len(raw)-8<<10:]
			}
			t.Logf("%s log (pid %d, tail):\n%s", name, cmd.Process.Pid, raw)
		}
	})
	return p
}

// stop ends the process by its pid: SIGTERM, then SIGKILL after a safety
// net. nginx's SIGTERM is its fast shutdown (connections closed at once).
func (p *peerProc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(10 * time.Second):
	}
	syscall.Kill(p.cmd.Process.Pid, syscall.SIGKILL)
	<-p.done
}

// waitAccepting waits until addr accepts TCP connections, failing if the
// process exits first.
func (p *peerProc) waitAccepting(addr string) error {
	deadline := time.Now().Add(60 * time.Second) // safety net
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-p.done:
			raw, _ := os.ReadFile(p.logPath)
			return fmt.Errorf("%s exited before accepting on %s (%v):\n%s", p.name, addr, p.waitErr, raw)
		default:
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s: nothing accepts on %s", p.name, addr)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// Route keys: what a scenario asks an origin for. An origin maps each key
// to a path, or lacks it (the cell is not applicable).
const (
	routeOK       = "ok"       // "ok"
	routeStatic   = "static"   // small body with Content-Length and validators
	routeBig      = "big"      // 2 MiB with Content-Length
	route204      = "204"      // 204 No Content
	routeChunked  = "chunked"  // body of unknown length
	routeClose    = "close"    // close-delimited body
	routeTrailers = "trailers" // chunked body with trailer fields
	routeSlow     = "slow"     // head and body parts delayed
	routeHeaders  = "headers"  // 150 response fields, head > 64 KiB
	routeUpload   = "upload"   // reads the whole request body, reports it
	routeReject   = "reject"   // 413 before reading the request body
)

// validatorDate is the Last-Modified of every origin's static body; an
// If-Modified-Since with exactly this date gets 304 from all of them.
const validatorDate = "Wed, 01 Jan 2020 00:00:00 GMT"

// originKind is one kind of origin server (a column group of the matrix).
type originKind struct {
	name  string // column group and subtest name
	title string // matrix heading
	// bin and pkg name the program and its Debian package (needTool).
	bin, pkg string
	// idle is the origin's keep-alive timeout: how long it keeps an idle
	// connection open. 0: it closes after every response.
	idle   time.Duration
	routes map[string]string
	// rows, when set, limits the origin to these rows (the others are not
	// applicable, for the reason in rowsWhy).
	rows    []string
	rowsWhy string
	// start runs the origin on 127.0.0.1:port with its files in dir.
	start func(t *testing.T, bin, dir string, port int) *exec.Cmd
	// uploaded returns what the upload route reports about the body it
	// read: its length and SHA-256 (nginx reports a file to look at).
	uploaded func(body []byte) (int64, string, error)
}

func (k *originKind) path(route string) string { return k.routes[route] }

// originInstance is a running origin of some kind, restartable on its port.
type originInstance struct {
	kind *originKind
	bin  string
	dir  string
	port int
	proc *peerProc
	gen  int
}

func (o *originInstance) addr() string { return net.JoinHostPort("127.0.0.1", strconv.Itoa(o.port)) }
func (o *originInstance) base() string { return "http://" + o.addr() }

// startOriginKind starts an origin of kind k on a free port (a few attempts:
// the port is free when chosen, not necessarily when the origin binds it).
func startOriginKind(t *testing.T, k *originKind) *originInstance {
	t.Helper()
	o := &originInstance{kind: k, bin: needTool(t, k.bin, k.pkg), dir: t.TempDir()}
	var err error
	for range 3 {
		o.port = nettest.FreePort(t, "tcp")
		if err = o.launch(t); err == nil {
			return o
		}
		o.proc.stop()
	}
	t.Fatal(err)
	return nil
}

func (o *originInstance) launch(t *testing.T) error {
	o.gen++
	cmd := o.kind.start(t, o.bin, o.dir, o.port)
	o.proc = startPeerProc(t, fmt.Sprintf("%s-%d", o.kind.name, o.gen), cmd, o.dir)
	return o.proc.waitAccepting(o.addr())
}

// stop stops the origin (by pid); start runs it again on the same port.
func (o *originInstance) stop() { o.proc.stop() }

func (o *originInstance) start(t *testing.T) {
	t.Helper()
	if err := o.launch(t); err != nil {
		t.Fatal(err)
	}
}

// nodeOrigin is testdata/interop/origin.js; keepAliveMs 0 keeps Node's
// default (5 s).
func nodeOrigin(name string, keepAliveMs int) *originKind {
	k := &originKind{
		name: name, title: "Node.js http.createServer, defaults (keepAliveTimeout 5 s)",
		bin: "node", pkg: "nodejs", idle: 5 * time.Second,
		routes: map[string]string{
			routeOK: "/ok", routeStatic: "/static", routeBig: "/big", route204: "/204",
			routeChunked: "/chunked", routeClose: "/close", routeTrailers: "/trailers",
			routeSlow: "/slow", routeHeaders: "/headers", routeUpload: "/echo", routeReject: "/reject",
		},
		start: func(t *testing.T, bin, dir string, port int) *exec.Cmd {
			args := []string{filepath.Join(interopDir(t), "origin.js"), "--port", strconv.Itoa(port)}
			if keepAliveMs > 0 {
				args = append(args, "--keepalive-ms", strconv.Itoa(keepAliveMs))
			}
			return exec.Command(bin, args...)
		},
		uploaded: echoUploaded,
	}
	if keepAliveMs > 0 {
		// The variant differs from the defaults only in how long idle
		// connections live, so it runs only the rows where that matters.
		k.title = fmt.Sprintf("Node.js http.createServer, keepAliveTimeout %d ms", keepAliveMs)
		k.idle = time.Duration(keepAliveMs) * time.Millisecond
		k.rows = []string{"get", "post", "put", "post-chunked", "idle", "restart"}
		k.rowsWhy = "the keep-alive variant runs only the rows where the keep-alive timeout matters"
	}
	return k
}

// pythonOrigin is testdata/interop/origin.py, as HTTP/1.0 or HTTP/1.1.
func pythonOrigin(name string, http11 bool) *originKind {
	k := &originKind{
		name: name, title: "Python http.server, HTTP/1.0 (BaseHTTPRequestHandler defaults: close-delimited bodies, one request per connection)",
		bin: "python3", pkg: "python3",
		routes: map[string]string{
			routeOK: "/ok", routeStatic: "/static", routeBig: "/big", route204: "/204",
			routeChunked: "/chunked", routeClose: "/close", routeSlow: "/slow",
			routeHeaders: "/headers", routeUpload: "/echo", routeReject: "/reject",
		},
		uploaded: echoUploaded,
	}
	if http11 {
		k.title = "Python http.server, HTTP/1.1 (protocol_version = \"HTTP/1.1\", idle timeout 2 s)"
		k.idle = 2 * time.Second
		k.routes[routeTrailers] = "/trailers"
	}
	k.start = func(t *testing.T, bin, dir string, port int) *exec.Cmd {
		args := []string{filepath.Join(interopDir(t), "origin.py"), "--port", strconv.Itoa(port)}
		if http11 {
			args = append(args, "--http11", "--idle-timeout", "2")
		}
		return exec.Command(pythonExe(t), args...)
	}
	return k
}

// echoUploaded reads the JSON the Node and Python upload routes answer.
func echoUploaded(body []byte) (int64, string, error) {
	var e struct {
		Length int64  `json:"length"`
		SHA256 string `json:"sha256"`
	}
	if err := json.Unmarshal(body, &e); err != nil {
		return 0, "", fmt.Errorf("upload answer %q: %v", body, err)
	}
	return e.Length, e.SHA256, nil
}

// nginxOrigin is nginx with a generated configuration: one process
// (master_process off), keepalive_timeout 2s, keepalive_requests 5.
//
// The upload sink: nginx has no echo, so /upload keeps the request body in a
// file (client_body_in_file_only), which takes nginx reading the whole body
// (with 100 Continue, chunked decoding and all), and proxies a bodiless
// request carrying the file's name to its own /upload-done, whose answer is
// that name. The test hashes the file: what nginx received, byte for byte.
func nginxOrigin() *originKind {
	k := &originKind{
		name: "nginx", title: "nginx (keepalive_timeout 2s, keepalive_requests 5)",
		bin: "nginx", pkg: "nginx", idle: 2 * time.Second,
		routes: map[string]string{
			routeOK: "/ok", routeStatic: "/static.txt", routeBig: "/big.bin", route204: "/204",
			routeChunked: "/chunked.txt", routeClose: "/close.txt", routeTrailers: "/trailers.txt",
			routeHeaders: "/headers", routeUpload: "/upload", routeReject: "/small",
		},
	}
	k.start = func(t *testing.T, bin, dir string, port int) *exec.Cmd {
		writeNginxSite(t, dir, port)
		return exec.Command(bin, "-p", dir, "-c", filepath.Join(dir, "nginx.conf"), "-e", filepath.Join(dir, "error.log"))
	}
	k.uploaded = func(body []byte) (int64, string, error) {
		name := strings.TrimSpace(string(body))
		if !filepath.IsAbs(name) {
			return 0, "", fmt.Errorf("upload answer %q is not a file name", body)
		}
		defer os.Remove(name)
		n, sum, err := fileDigest(name)
		return n, sum, err
	}
	return k
}

// writeNginxSite writes nginx.conf and the files it serves into dir. The
// files' mtime is validatorDate, so Last-Modified and ETag are the same in
// every run.
func writeNginxSite(t *testing.T, dir string, port int) {
	t.Helper()
	www := filepath.Join(dir, "www")
	for _, d := range []string{www, filepath.Join(dir, "tmp"), filepath.Join(dir, "bodies")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
	}
	files := map[string][]byte{
		"static.txt":   []byte("hello from nginx\n"),
		"big.bin":      deterministic(2<<20, "nginx-big"),
		"chunked.txt":  []byte("first part\n<!--# echo var=\"uri\" -->\nlast part\n"),
		"close.txt":    []byte("first part\n<!--# echo var=\"uri\" -->\nlast part\n"),
		"trailers.txt": []byte("a static body sent chunked, with trailers\n"),
	}
	mtime, _ := time.Parse(http.TimeFormat, validatorDate)
	for name, data := range files {
		p := filepath.Join(www, name)
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
	}
	var many strings.Builder
	for i := range 150 {
		fmt.Fprintf(&many, "      add_header X-Field-%03d %q;\n", i, strings.Repeat("v", 450))
	}
	conf := fmt.Sprintf(`daemon off;
master_process off;
pid %[1]s/nginx.pid;
error_log %[1]s/error.log info;
events { worker_connections 512; }
http {
  access_log %[1]s/access.log;
  client_body_temp_path %[1]s/tmp/body;
  proxy_temp_path %[1]s/tmp/proxy;
  fastcgi_temp_path %[1]s/tmp/fastcgi;
  uwsgi_temp_path %[1]s/tmp/uwsgi;
  scgi_temp_path %[1]s/tmp/scgi;
  types { text/plain txt; application/octet-stream bin; }
  default_type application/octet-stream;
  keepalive_timeout 2s;
  keepalive_requests 5;
  server {
    listen 127.0.0.1:%[2]d;
    root %[1]s/www;
    location = /ok { default_type text/plain; return 200 "ok"; }
    location = /204 { return 204; }
    # SSI makes the length unknown: chunked to HTTP/1.1, close-delimited to
    # HTTP/1.0 (and, without chunked_transfer_encoding, to everyone).
    location = /chunked.txt { ssi on; ssi_types text/plain; }
    location = /close.txt { ssi on; ssi_types text/plain; chunked_transfer_encoding off; }
    location = /trailers.txt { add_trailer X-Checksum "static-trailer"; add_trailer X-Parts 1; }
    location = /headers {
      default_type text/plain;
%[3]s      return 200 "many fields\n";
    }
    location = /upload {
      client_max_body_size 8m;
      client_body_in_file_only on;
      client_body_temp_path %[1]s/bodies;
      proxy_pass http://127.0.0.1:%[2]d/upload-done;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
      proxy_set_header X-Body-File $request_body_file;
    }
    location = /upload-done { default_type text/plain; return 200 "$http_x_body_file\n"; }
    # An upload over client_max_body_size is refused from its Content-Length,
    # before nginx reads it.
    location = /small {
      client_max_body_size 1k;
      client_body_in_file_only on;
      client_body_temp_path %[1]s/bodies;
      proxy_pass http://127.0.0.1:%[2]d/upload-done;
      proxy_pass_request_body off;
      proxy_set_header Content-Length "";
    }
  }
}
`, dir, port, many.String())
	if err := os.WriteFile(filepath.Join(dir, "nginx.conf"), []byte(conf), 0o644); err != nil {
		t.Fatal(err)
	}
}

// deterministic is n bytes of SHA-256 in counter mode: the same in every run.
func deterministic(n int, seed string) []byte {
	out := make([]byte, 0, n+sha256.Size)
	for i := 0; len(out) < n; i++ {
		s := sha256.Sum256(fmt.Appendf(nil, "%s:%d", seed, i))
		out = append(out, s[:]...)
	}
	return out[:n]
}

func fileDigest(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	h := sha256.New()
	n, err := io.Copy(h, f)
	return n, hex.EncodeToString(h.Sum(nil)), err
}

// request is one exchange a client performs, in terms every driver maps to
// its own options.
type request struct {
	Method  string
	Path    string
	Header  []string // "Name: value"
	Body    string   // file to upload; "" = no body
	Chunked bool     // upload without a length (Transfer-Encoding: chunked)
	Expect  bool     // Expect: 100-continue
	HTTP10  bool     // speak HTTP/1.0
	Close   bool     // Connection: close
	Raw     string   // raw driver only: the request bytes
	// N and C are ab's request count and concurrency.
	N, C int
}

// outcome is what a client saw of an exchange.
type outcome struct {
	Status  int
	Interim []int       // 1xx statuses, for drivers that report them
	Header  http.Header // final response fields, canonical names
	Trailer http.Header // trailer fields, for drivers that report them
	BodyLen int64
	BodySHA string
	Body    []byte // the body when small (echo answers)
	// Err is set when the client reported the exchange as failed: an error
	// exit, an exception, invalid framing.
	Err string
	AB  *abStats // ab's counters instead of one response
}

func (o outcome) String() string {
	if o.AB != nil {
		return o.AB.String() + errSuffix(o.Err)
	}
	return fmt.Sprintf("status %d, body %d bytes sha256 %.12s%s", o.Status, o.BodyLen, o.BodySHA, errSuffix(o.Err))
}

func errSuffix(e string) string {
	if e == "" {
		return ""
	}
	return ", error: " + e
}

// abStats are ab's counters for a run.
type abStats struct {
	Complete, Failed, Non2xx, KeepAlive int
	DocLen, HTML                        int64
	FailDetail                          string
}

func (a *abStats) String() string {
	return fmt.Sprintf("complete %d, failed %d %s, non-2xx %d, document length %d, HTML transferred %d, keep-alive %d",
		a.Complete, a.Failed, a.FailDetail, a.Non2xx, a.DocLen, a.HTML, a.KeepAlive)
}

// peerClient is one client column of the matrix.
type peerClient struct {
	name  string // column and subtest name
	title string // what it is, for the doc
	bin   string
	pkg   string
	// cannot says why the client cannot perform r ("" when it can).
	cannot func(r request) string
	run    func(t *testing.T, x *interopRun, base string, r request) outcome
}

// interopRun holds what the client drivers share in one test run.
type interopRun struct {
	dir         string // scratch files
	upload      string // the 2 MiB upload body
	smallUpload string // 64 KiB, for the idle and restart rows
	testdata    string
	mu          sync.Mutex
	seq         int
	tools       map[string]string // resolved executables by name
}

func (x *interopRun) scratch(prefix string) string {
	x.mu.Lock()
	defer x.mu.Unlock()
	x.seq++
	return filepath.Join(x.dir, fmt.Sprintf("%s-%d", prefix, x.seq))
}

// clientTimeout is the safety net of a client process: it is killed (by
// pid, through exec.CommandContext) if it runs longer, and the exchange
// counts as failed.
const clientTimeout = 90 * time.Second

// runTool runs a client process and returns stdout, stderr and its error.
func runTool(bin string, args ...string) (stdout, stderr []byte, err error) {
	ctx, cancel := context.WithTimeout(context.Background(), clientTimeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.WaitDelay = 5 * time.Second
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.Bytes(), errb.Bytes(), err
}

func exitDetail(err error, stderr []byte) string {
	msg := strings.TrimSpace(string(stderr))
	if len(msg) > 300 {
		msg = msg[:300] + "..."
	}
	return fmt.Sprintf("%v: %s", err, msg)
}

var peerClients = []*peerClient{curlClient, abClient(false), abClient(true), pyClient("urllib"), pyClient("httpclient"), nodeClient("fetch"), nodeClient("http"), rawClient}

// curl: the whole head sequence goes to a file (-D: interim responses,
// final head, and trailers when curl decodes chunking); --raw keeps a
// chunked body's framing, which the test then parses strictly.
var curlClient = &peerClient{
	name: "curl", title: "curl (--raw; -D for the heads)", bin: "curl", pkg: "curl",
	cannot: func(r request) string {
		if r.Raw != "" {
			return "a raw request (no Host): the raw client's row"
		}
		return ""
	},
	run: func(t *testing.T, x *interopRun, base string, r request) outcome {
		head, body := x.scratch("curl-head"), x.scratch("curl-body")
		defer os.Remove(head)
		defer os.Remove(body)
		args := []string{"-sS", "--raw", "--max-time", "60", "-D", head, "-o", body}
		if r.HTTP10 {
			args = append(args, "--http1.0")
		}
		if r.Method == http.MethodHead {
			args = append(args, "-I")
		} else if r.Body != "" {
			args = append(args, "--data-binary", "@"+r.Body, "-H", "Content-Type: application/octet-stream")
			if r.Method != http.MethodPost {
				args = append(args, "-X", r.Method)
			}
		} else if r.Method != http.MethodGet {
			args = append(args, "-X", r.Method)
		}
		if r.Chunked {
			args = append(args, "-H", "Transfer-Encoding: chunked")
		}
		if r.Body != "" {
			if r.Expect {
				args = append(args, "-H", "Expect: 100-continue")
			} else {
				args = append(args, "-H", "Expect:") // curl would add it for large bodies
			}
		}
		if r.Close {
			args = append(args, "-H", "Connection: close")
		}
		for _, h := range r.Header {
			args = append(args, "-H", h)
		}
		args = append(args, base+r.Path)
		_, stderr, err := runTool(x.tool("curl"), args...)
		var o outcome
		if err != nil {
			o.Err = "curl " + exitDetail(err, stderr)
		}
		hb, _ := os.ReadFile(head)
		parseCurlHeads(&o, hb)
		if r.Method == http.MethodHead {
			return o // -I writes the head to -o as well
		}
		bb, _ := os.ReadFile(body)
		if o.Err == "" && o.Status >= 200 && o.Header.Get("Transfer-Encoding") != "" {
			data, trailers, derr := dechunk(bb)
			if derr != nil {
				o.Err = "invalid chunked framing: " + derr.Error()
			}
			bb = data
			for k, v := range trailers {
				o.Trailer[k] = append(o.Trailer[k], v...)
			}
		}
		setBody(&o, bb)
		return o
	},
}

// parseCurlHeads reads curl's -D output: a block per response head (1xx
// ones first), then trailer lines when curl decoded the chunking.
func parseCurlHeads(o *outcome, raw []byte) {
	o.Header, o.Trailer = http.Header{}, http.Header{}
	lines := strings.Split(strings.ReplaceAll(string(raw), "\r\n", "\n"), "\n")
	inHead, final := false, false
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, "HTTP/") && !inHead && !final:
			f := strings.Fields(l)
			if len(f) >= 2 {
				code, _ := strconv.Atoi(f[1])
				if code < 200 {
					o.Interim = append(o.Interim, code)
				} else {
					o.Status, final = code, true
					o.Header = http.Header{}
				}
			}
			inHead = true
		case l == "":
			inHead = false
		default:
			k, v, ok := strings.Cut(l, ":")
			if !ok {
				continue
			}
			k, v = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k)), strings.TrimSpace(v)
			switch {
			case inHead && final:
				o.Header[k] = append(o.Header[k], v)
			case !inHead && final:
				o.Trailer[k] = append(o.Trailer[k], v)
			}
		}
	}
}

// dechunk decodes a chunked body strictly (RFC 9112 7.1): every size line,
// CRLF and the last chunk must be there, and nothing may follow.
func dechunk(raw []byte) ([]byte, http.Header, error) {
	br := bufio.NewReader(bytes.NewReader(raw))
	var out []byte
	line := func() (string, error) {
		l, err := br.ReadString('\n')
		if err != nil {
			return "", fmt.Errorf("cut short after %d body bytes", len(out))
		}
		if !strings.HasSuffix(l, "\r\n") {
			return "", fmt.Errorf("line %q without CRLF", l)
		}
		return strings.TrimSuffix(l, "\r\n"), nil
	}
	for {
		l, err := line()
		if err != nil {
			return out, nil, err
		}
		sz, _, _ := strings.Cut(l, ";")
		n, err := strconv.ParseInt(strings.TrimSpace(sz), 16, 64)
		if err != nil || n < 0 {
			return out, nil, fmt.Errorf("bad chunk size line %q", l)
		}
		if n == 0 {
			break
		}
		buf := make([]byte, n)
		if _, err := io.ReadFull(br, buf); err != nil {
			return out, nil, fmt.Errorf("chunk of %d bytes cut short", n)
		}
		out = append(out, buf...)
		if l, err := line(); err != nil || l != "" {
			return out, nil, fmt.Errorf("chunk data not followed by CRLF")
		}
	}
	trailers := http.Header{}
	for {
		l, err := line()
		if err != nil {
			return out, nil, fmt.Errorf("trailer section not terminated")
		}
		if l == "" {
			break
		}
		k, v, ok := strings.Cut(l, ":")
		if !ok {
			return out, nil, fmt.Errorf("bad trailer line %q", l)
		}
		k = textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(k))
		trailers[k] = append(trailers[k], strings.TrimSpace(v))
	}
	if rest, _ := io.ReadAll(br); len(rest) > 0 {
		return out, trailers, fmt.Errorf("%d bytes after the last chunk", len(rest))
	}
	return out, trailers, nil
}

func setBody(o *outcome, b []byte) {
	sum := sha256.Sum256(b)
	o.BodyLen, o.BodySHA = int64(len(b)), hex.EncodeToString(sum[:])
	if len(b) <= 64<<10 {
		o.Body = b
	}
}

// abClient is ApacheBench: always HTTP/1.0; with keepAlive (-k) it asks
// for keep-alive connections. A cell is one ab run of r.N requests.
func abClient(keepAlive bool) *peerClient {
	name, title := "ab", "ab (HTTP/1.0, new connection per request)"
	if keepAlive {
		name, title = "ab-k", "ab -k (HTTP/1.0 with Connection: Keep-Alive)"
	}
	return &peerClient{
		name: name, title: title, bin: "ab", pkg: "apache2-utils",
		cannot: func(r request) string {
			switch {
			case r.Raw != "":
				return "a raw request (no Host): the raw client's row"
			case r.Chunked:
				return "ab cannot send a chunked body"
			case r.Expect:
				return "ab cannot wait for 100 Continue"
			case r.Close && keepAlive:
				return "ab -k asks for keep-alive"
			}
			return ""
		},
		run: func(t *testing.T, x *interopRun, base string, r request) outcome {
			args := []string{"-n", strconv.Itoa(r.N), "-c", strconv.Itoa(r.C), "-s", "30"}
			if keepAlive {
				args = append(args, "-k")
			}
			switch {
			case r.Method == http.MethodHead:
				args = append(args, "-i")
			case r.Body != "" && r.Method == http.MethodPut:
				args = append(args, "-u", r.Body, "-T", "application/octet-stream")
			case r.Body != "":
				args = append(args, "-p", r.Body, "-T", "application/octet-stream")
			}
			if r.Close {
				args = append(args, "-H", "Connection: close")
			}
			for _, h := range r.Header {
				args = append(args, "-H", h)
			}
			args = append(args, base+r.Path)
			stdout, stderr, err := runTool(x.tool("ab"), args...)
			var o outcome
			o.AB = parseAB(stdout)
			if err != nil {
				o.Err = "ab " + exitDetail(err, stderr)
			} else if o.AB.Failed > 0 {
				o.Err = fmt.Sprintf("ab: %d failed requests %s", o.AB.Failed, o.AB.FailDetail)
			}
			return o
		},
	}
}

var (
	abLine       = regexp.MustCompile(`(?m)^(Complete requests|Failed requests|Non-2xx responses|Keep-Alive requests|Document Length|HTML transferred):\s+(\d+)`)
	abFailDetail = regexp.MustCompile(`\(Connect: \d+, Receive: \d+, Length: \d+, Exceptions: \d+\)`)
)

func parseAB(out []byte) *abStats {
	a := &abStats{}
	for _, m := range abLine.FindAllSubmatch(out, -1) {
		v, _ := strconv.ParseInt(string(m[2]), 10, 64)
		switch string(m[1]) {
		case "Complete requests":
			a.Complete = int(v)
		case "Failed requests":
			a.Failed = int(v)
		case "Non-2xx responses":
			a.Non2xx = int(v)
		case "Keep-Alive requests":
			a.KeepAlive = int(v)
		case "Document Length":
			a.DocLen = v
		case "HTML transferred":
			a.HTML = v
		}
	}
	a.FailDetail = string(abFailDetail.Find(out))
	return a
}

// scriptResult is the JSON line client.py and client.js print.
type scriptResult struct {
	Status   int         `json:"status"`
	Headers  [][2]string `json:"headers"`
	Trailers [][2]string `json:"trailers"`
	Interim  []int       `json:"interim"`
	BodyLen  int64       `json:"body_len"`
	BodySHA  string      `json:"body_sha256"`
	BodyB64  string      `json:"body_b64"`
	Error    *string     `json:"error"`
}

func (s *scriptResult) outcome() outcome {
	o := outcome{Status: s.Status, Interim: s.Interim, Header: http.Header{}, Trailer: http.Header{}, BodyLen: s.BodyLen, BodySHA: s.BodySHA}
	for _, kv := range s.Headers {
		k := textproto.CanonicalMIMEHeaderKey(kv[0])
		o.Header[k] = append(o.Header[k], kv[1])
	}
	for _, kv := range s.Trailers {
		k := textproto.CanonicalMIMEHeaderKey(kv[0])
		o.Trailer[k] = append(o.Trailer[k], kv[1])
	}
	if s.BodyB64 != "" {
		o.Body, _ = base64.StdEncoding.DecodeString(s.BodyB64)
	} else if s.BodyLen == 0 {
		o.Body = []byte{}
	}
	if s.Error != nil {
		o.Err = *s.Error
	}
	return o
}

func scriptArgs(r request, base string) []string {
	args := []string{"--url", base + r.Path, "--method", r.Method}
	for _, h := range r.Header {
		args = append(args, "--header", h)
	}
	if r.Body != "" {
		args = append(args, "--body-file", r.Body)
	}
	if r.Chunked {
		args = append(args, "--chunked")
	}
	if r.Close {
		args = append(args, "--close")
	}
	return args
}

func runScript(bin string, args []string) outcome {
	stdout, stderr, err := runTool(bin, args...)
	var s scriptResult
	if jerr := json.Unmarshal(bytes.TrimSpace(stdout), &s); jerr != nil {
		return outcome{Err: fmt.Sprintf("no result from %s (%v): %s", filepath.Base(bin), jerr, exitDetail(err, stderr))}
	}
	o := s.outcome()
	if err != nil && o.Err == "" {
		o.Err = exitDetail(err, stderr)
	}
	return o
}

// pyClient is testdata/interop/client.py with urllib.request or
// http.client. urllib always sends Connection: close and speaks HTTP/1.1;
// neither waits for 100 Continue (the body follows the head at once).
func pyClient(lib string) *peerClient {
	c := &peerClient{name: "urllib", title: "Python urllib.request (HTTP/1.1, always Connection: close)", bin: "python3", pkg: "python3"}
	if lib == "httpclient" {
		c.name, c.title = "http.client", "Python http.client (HTTP/1.1, or HTTP/1.0 without Host)"
	}
	c.cannot = func(r request) string {
		switch {
		case r.Raw != "":
			return "a raw request (no Host): the raw client's row"
		case r.HTTP10 && lib == "urllib":
			return "urllib speaks HTTP/1.1 only"
		}
		return ""
	}
	c.run = func(t *testing.T, x *interopRun, base string, r request) outcome {
		args := append([]string{filepath.Join(x.testdata, "client.py"), "--lib", lib}, scriptArgs(r, base)...)
		if r.HTTP10 {
			args = append(args, "--http10")
		}
		return runScript(x.tool("python3"), args)
	}
	return c
}

// nodeClient is testdata/interop/client.js with fetch (undici) or
// http.request. Both run with --max-http-header-size=1 MiB: Node's default
// (16 KiB) refuses the header-heavy responses directly as well.
func nodeClient(lib string) *peerClient {
	c := &peerClient{name: "fetch", title: "Node.js fetch (undici, keep-alive)", bin: "node", pkg: "nodejs"}
	if lib == "http" {
		c.name, c.title = "http.request", "Node.js http.request (waits for 100 Continue, reports trailers)"
	}
	c.cannot = func(r request) string {
		switch {
		case r.Raw != "":
			return "a raw request (no Host): the raw client's row"
		case r.HTTP10:
			return "Node's clients speak HTTP/1.1 only"
		case r.Expect && lib == "fetch":
			return "undici refuses Expect (UND_ERR_NOT_SUPPORTED)"
		}
		return ""
	}
	c.run = func(t *testing.T, x *interopRun, base string, r request) outcome {
		args := append([]string{"--max-http-header-size=1048576", filepath.Join(x.testdata, "client.js"), "--lib", lib}, scriptArgs(r, base)...)
		if r.Expect {
			args = append(args, "--expect")
		}
		return runScript(x.tool("node"), args)
	}
	return c
}

// rawClient writes r.Raw on a TCP connection and reads the response with
// net/http's parser (strict framing), the body until its end or the close.
var rawClient = &peerClient{
	name: "raw", title: "raw socket (Go): request bytes as written, response parsed by net/http",
	cannot: func(r request) string {
		if r.Raw == "" {
			return "sends only the raw request (no Host)"
		}
		return ""
	},
	run: func(t *testing.T, x *interopRun, base string, r request) outcome {
		var o outcome
		c, err := net.DialTimeout("tcp", strings.TrimPrefix(base, "http://"), 10*time.Second)
		if err != nil {
			o.Err = err.Error()
			return o
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(safetyNet))
		if _, err := io.WriteString(c, r.Raw); err != nil {
			o.Err = err.Error()
			return o
		}
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			o.Err = err.Error()
			return o
		}
		defer resp.Body.Close()
		o.Status, o.Header = resp.StatusCode, resp.Header
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			o.Err = "reading body: " + err.Error()
		}
		o.Trailer = resp.Trailer
		if o.Trailer == nil {
			o.Trailer = http.Header{}
		}
		setBody(&o, b)
		return o
	},
}
