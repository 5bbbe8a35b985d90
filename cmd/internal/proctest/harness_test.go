package proctest

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/ptproxy/ptproxy/session/pki"
)

// ptproxyBin is the binary under test, built once by TestMain.
var ptproxyBin string

// TestMain builds ./cmd/ptproxy into a temporary directory (with -race when
// the tests themselves run with it, so the processes are checked for races
// too), runs the tests, and fails on goroutines left behind in the test
// process (relays, origins, log readers).
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ptproxy-proctest-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin := filepath.Join(dir, "ptproxy")
	args := []string{"build", "-o", bin}
	if raceEnabled {
		args = append(args, "-race")
	}
	args = append(args, "github.com/ptproxy/ptproxy/cmd/ptproxy")
	goTool, err := exec.LookPath("go") // go test puts GOROOT/bin first in PATH
	if err != nil {
		goTool = filepath.Join(os.Getenv("GOROOT"), "bin", "go")
	}
	if out, err := exec.Command(goTool, args...).CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building ptproxy: %v\n%s", err, out)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	ptproxyBin = bin
	goleak.VerifyTestMain(m, goleak.Cleanup(func(code int) {
		os.RemoveAll(dir)
		os.Exit(code)
	}))
}

// Names the test certificates are issued for.
const (
	clientName = "client.test"
	serverName = "server.test"
)

// Transport settings of every process test. They are what the assertions
// are about ("lost within max_idle_timeout", "back within connect_interval
// plus a handshake"), but no test asserts a duration: durations are logged
// (MEASURED lines) and recorded in docs/reliability.md.
const (
	maxIdleTimeoutMs  = 2000
	keepAliveMs       = 500
	connectIntervalMs = 500
)

// writePKI writes ca.pem, client.pem/-key.pem and server.pem/-key.pem.
func writePKI(t *testing.T, dir string) {
	t.Helper()
	ca, err := pki.NewCA("proctest CA")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ca.Client(clientName)
	if err != nil {
		t.Fatal(err)
	}
	sv, err := ca.Server(serverName)
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFiles(dir, ca, map[string]*pki.Leaf{"client": cl, "server": sv}); err != nil {
		t.Fatal(err)
	}
}

// env is the test's working directory: certificates and config files.
type env struct {
	t   *testing.T
	dir string
}

func newEnv(t *testing.T) *env {
	e := &env{t: t, dir: t.TempDir()}
	writePKI(t, e.dir)
	return e
}

const commonSections = `
[transport]
max_idle_timeout = %d
keep_alive_interval = %d

[system]
connect_interval = %d
log_format = "json"
log_level = "debug"
drain_timeout = 2000
`

// serverConfig writes a Server config listening on 127.0.0.1:quicPort and
// forwarding to origin; relative TLS paths resolve against e.dir.
func (e *env) serverConfig(name string, quicPort int, origin string) string {
	return e.write(name, fmt.Sprintf(`[general]
mode = "Server"
peer_hostname = %q
bind_address = "127.0.0.1"
quic_port = %d
http_connect_address = %q

[tls]
ca = "ca.pem"
cert = "server.pem"
key = "server-key.pem"
`+commonSections, clientName, quicPort, origin, maxIdleTimeoutMs, keepAliveMs, connectIntervalMs))
}

// clientConfig writes a Client config dialling 127.0.0.1:quicPort, with an
// ephemeral HTTP/1.1 port (read back from the log).
func (e *env) clientConfig(name string, quicPort int) string {
	return e.write(name, fmt.Sprintf(`[general]
mode = "Client"
peer_hostname = %q
connect_address = "127.0.0.1"
bind_address = "127.0.0.1"
quic_port = %d
http_bind_address = "127.0.0.1:0"

[tls]
ca = "ca.pem"
cert = "client.pem"
key = "client-key.pem"
`+commonSections, serverName, quicPort, maxIdleTimeoutMs, keepAliveMs, connectIntervalMs))
}

func (e *env) write(name, content string) string {
	e.t.Helper()
	p := filepath.Join(e.dir, name)
	if err := os.WriteFile(p, []byte(content), 0o644); err != nil {
		e.t.Fatal(err)
	}
	return p
}

// record is one JSON log line of a process.
type record map[string]any

func (r record) str(k string) string { s, _ := r[k].(string); return s }

func (r record) time() time.Time {
	tm, _ := time.Parse(time.RFC3339Nano, r.str("time"))
	return tm
}

// proc is a running ptproxy process. Its stderr (the JSON operator log) is
// written to a file and parsed on demand.
type proc struct {
	t       *testing.T
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan struct{} // closed when the process exited
	waitErr error
}

// startProc runs ptproxy -c cfg. The process is stopped by pid at cleanup
// (SIGTERM, then SIGKILL if it does not exit), and a data race reported by
// a -race binary fails the test.
func startProc(t *testing.T, name, cfg string) *proc {
	t.Helper()
	p := &proc{t: t, name: name, logPath: filepath.Join(t.TempDir(), name+".log"), done: make(chan struct{})}
	logf, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	p.cmd = exec.Command(ptproxyBin, "-c", cfg)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	p.cmd.Env = cleanEnv()
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatal(err)
	}
	go func() {
		p.waitErr = p.cmd.Wait()
		logf.Close()
		close(p.done)
	}()
	t.Cleanup(func() {
		p.stop()
		raw, _ := os.ReadFile(p.logPath)
		if bytes.Contains(raw, []byte("WARNING: DATA RACE")) {
			t.Errorf("%s: data race reported by the process", name)
		}
		if t.Failed() {
			t.Logf("%s log (pid %d):\n%s", name, p.cmd.Process.Pid, raw)
		}
	})
	return p
}

// cleanEnv is the test's environment without PTPROXY_ overrides, which
// would change the configuration under test.
func cleanEnv() []string {
	var out []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "PTPROXY_") {
			out = append(out, kv)
		}
	}
	return out
}

func (p *proc) pid() int { return p.cmd.Process.Pid }

// kill sends SIGKILL to this process (by its pid) and waits for it to die.
func (p *proc) kill() {
	p.t.Helper()
	if err := syscall.Kill(p.pid(), syscall.SIGKILL); err != nil {
		p.t.Fatalf("kill %s: %v", p.name, err)
	}
	select {
	case <-p.done:
	case <-time.After(60 * time.Second): // safety net
		p.t.Fatalf("%s survived SIGKILL", p.name)
	}
}

// stop ends the process if it still runs: SIGTERM (graceful drain), then
// SIGKILL after a safety net.
func (p *proc) stop() {
	select {
	case <-p.done:
		return
	default:
	}
	syscall.Kill(p.pid(), syscall.SIGTERM)
	select {
	case <-p.done:
		return
	case <-time.After(20 * time.Second):
	}
	syscall.Kill(p.pid(), syscall.SIGKILL)
	<-p.done
}

// logs parses the process log so far (non-JSON lines are skipped).
func (p *proc) logs() []record {
	raw, err := os.ReadFile(p.logPath)
	if err != nil {
		return nil
	}
	var out []record
	sc := bufio.NewScanner(bytes.NewReader(raw))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var r record
		if json.Unmarshal(sc.Bytes(), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// find returns the records with message msg that match (all if nil).
func (p *proc) find(msg string, match func(record) bool) []record {
	var out []record
	for _, r := range p.logs() {
		if r.str("msg") == msg && (match == nil || match(r)) {
			out = append(out, r)
		}
	}
	return out
}

// waitLog waits for the (after+1)-th record with message msg that matches
// and returns it. The deadline is a safety net against a hung test.
func (p *proc) waitLog(what, msg string, after int, match func(record) bool) record {
	p.t.Helper()
	var got record
	eventually(p.t, p.name+": "+what, func() bool {
		recs := p.find(msg, match)
		if len(recs) > after {
			got = recs[after]
			return true
		}
		select {
		case <-p.done:
			p.t.Fatalf("%s exited while waiting for %s: %v", p.name, what, p.waitErr)
		default:
		}
		return false
	})
	return got
}

// event matches a session transition record by its event.
func event(ev string) func(record) bool {
	return func(r record) bool { return r.str("event") == ev }
}

// httpAddr is the client's HTTP/1.1 address, from its startup log line.
func (p *proc) httpAddr() string {
	p.t.Helper()
	return p.waitLog("HTTP listener", "listening for HTTP/1.1", 0, nil).str("address")
}

// eventually polls cond; the deadline is a safety net, not an assertion.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// within waits for ch; the deadline is a safety net that turns a hang into
// a failure naming what hung.
func within(t *testing.T, what string, ch <-chan struct{}) {
	t.Helper()
	select {
	case <-ch:
	case <-time.After(60 * time.Second):
		t.Fatalf("hang: %s did not end", what)
	}
}

// startOrigin serves h on loopback and returns its address.
func startOrigin(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: h}
	var wg sync.WaitGroup
	wg.Go(func() { srv.Serve(ln) })
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(ctx)
		srv.Close()
		wg.Wait()
	})
	return ln.Addr().String()
}

// ms is d in milliseconds, for MEASURED lines.
func ms(d time.Duration) int64 { return d.Milliseconds() }
