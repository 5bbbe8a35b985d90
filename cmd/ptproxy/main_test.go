package main

// Process-level tests: the real binary (built once in TestMain), real
// client and server processes configured by TOML files, an origin on
// loopback in the test process, signals sent by pid, and systemd notify
// messages read from a unixgram socket the test owns (NOTIFY_SOCKET).
// Nothing asserts on durations; deadlines are safety nets.

import (
	"bytes"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/session/nettest"
	"github.com/ptproxy/ptproxy/session/pki"
)

var binPath string

const safety = 60 * time.Second

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ptproxy-bin")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	binPath = filepath.Join(dir, "ptproxy")
	build := exec.Command("go", "build", "-o", binPath, ".")
	build.Stdout, build.Stderr = os.Stderr, os.Stderr
	if err := build.Run(); err != nil {
		fmt.Fprintln(os.Stderr, "building ptproxy:", err)
		os.RemoveAll(dir)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// notifySock is a unixgram socket standing in for systemd's notify socket.
type notifySock struct {
	path string
	conn *net.UnixConn
	mu   sync.Mutex
	msgs []string
	done chan struct{}
}

func newNotifySock(t *testing.T) *notifySock {
	t.Helper()
	dir, err := os.MkdirTemp("", "sd") // short: sun_path is ~108 bytes
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "notify.sock")
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	n := &notifySock{path: path, conn: conn, done: make(chan struct{})}
	go func() {
		defer close(n.done)
		buf := make([]byte, 4096)
		for {
			k, err := conn.Read(buf)
			if err != nil {
				return
			}
			n.mu.Lock()
			n.msgs = append(n.msgs, string(buf[:k]))
			n.mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		conn.Close()
		<-n.done
		os.RemoveAll(dir)
		if t.Failed() {
			t.Logf("notify messages on %s:\n%s", path, strings.Join(n.all(), "\n--\n"))
		}
	})
	return n
}

func (n *notifySock) all() []string {
	n.mu.Lock()
	defer n.mu.Unlock()
	return append([]string(nil), n.msgs...)
}

// index returns the index of the first message containing line, or -1.
func (n *notifySock) index(line string) int {
	for i, m := range n.all() {
		for _, l := range strings.Split(m, "\n") {
			if l == line || (strings.HasSuffix(line, "*") && strings.HasPrefix(l, strings.TrimSuffix(line, "*"))) {
				return i
			}
		}
	}
	return -1
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// proc is one ptproxy process.
type proc struct {
	name   string
	cmd    *exec.Cmd
	stderr *syncBuf
	done   chan struct{}
}

func startProc(t *testing.T, name, cfgPath string, env ...string) *proc {
	t.Helper()
	cmd := exec.Command(binPath, "-c", cfgPath)
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "NOTIFY_SOCKET=") || strings.HasPrefix(kv, "WATCHDOG_") || strings.HasPrefix(kv, "PTPROXY_") || strings.HasPrefix(kv, "SSLKEYLOGFILE=") {
			continue
		}
		cmd.Env = append(cmd.Env, kv)
	}
	cmd.Env = append(cmd.Env, env...)
	p := &proc{name: name, cmd: cmd, stderr: &syncBuf{}, done: make(chan struct{})}
	cmd.Stderr = p.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { cmd.Wait(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
		default:
			cmd.Process.Kill() // by pid: only the process this test started
			<-p.done
		}
		if t.Failed() {
			t.Logf("%s (pid %d) stderr:\n%s", name, cmd.Process.Pid, p.stderr.String())
		}
	})
	return p
}

func (p *proc) signal(t *testing.T, sig os.Signal) {
	t.Helper()
	if err := p.cmd.Process.Signal(sig); err != nil {
		t.Fatalf("signalling %s: %v", p.name, err)
	}
}

// exitCode waits for the process to end (safety deadline) and returns its
// exit status.
func (p *proc) exitCode(t *testing.T) int {
	t.Helper()
	select {
	case <-p.done:
		return p.cmd.ProcessState.ExitCode()
	case <-time.After(safety):
		t.Fatalf("%s did not exit", p.name)
		return -1
	}
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(safety)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("gave up waiting for %s", what)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// slowOrigin holds /slow requests until release is closed; /fast answers
// at once.
type slowOrigin struct {
	addr    string
	entered atomic.Int32
	release chan struct{}
	once    sync.Once
}

func startOrigin(t *testing.T) *slowOrigin {
	t.Helper()
	o := &slowOrigin{release: make(chan struct{})}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	o.addr = ln.Addr().String()
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			o.entered.Add(1)
			<-o.release
		}
		io.WriteString(w, "done "+r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { o.free(); srv.Close() })
	return o
}

func (o *slowOrigin) free() { o.once.Do(func() { close(o.release) }) }

type setup struct {
	dir               string
	quicPort          int
	httpAddr          string
	serverCfg, client string
	ca                *pki.CA // signed the files in dir
}

func freeTCPAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// writeConfigs writes a PKI and the two TOML files (relative certificate
// paths, resolved against the file's directory, as deployed).
func writeConfigs(t *testing.T, origin string, drainTimeoutMS int) *setup {
	t.Helper()
	s := &setup{dir: t.TempDir(), quicPort: nettest.FreePort(t, "udp"), httpAddr: freeTCPAddr(t)}
	ca, err := pki.NewCA("process test CA")
	if err != nil {
		t.Fatal(err)
	}
	cl, err := ca.Client("client.test")
	if err != nil {
		t.Fatal(err)
	}
	sv, err := ca.Server("server.test")
	if err != nil {
		t.Fatal(err)
	}
	if err := pki.WriteFiles(s.dir, ca, map[string]*pki.Leaf{"client": cl, "server": sv}); err != nil {
		t.Fatal(err)
	}
	s.ca = ca
	s.serverCfg = filepath.Join(s.dir, "server.toml")
	s.client = filepath.Join(s.dir, "client.toml")
	server := fmt.Sprintf(`[general]
mode = "Server"
peer_hostname = "client.test"
bind_address = "127.0.0.1"
quic_port = %d
http_connect_address = %q

[tls]
ca = "ca.pem"
cert = "server.pem"
key = "server-key.pem"

[system]
drain_timeout = %d
log_format = "json"
log_level = "debug"
`, s.quicPort, origin, drainTimeoutMS)
	client := fmt.Sprintf(`[general]
mode = "Client"
peer_hostname = "server.test"
connect_address = "127.0.0.1"
bind_address = "127.0.0.1"
quic_port = %d
http_bind_address = %q

[tls]
ca = "ca.pem"
cert = "client.pem"
key = "client-key.pem"

[system]
connect_interval = 200
drain_timeout = %d
log_format = "json"
log_level = "debug"
`, s.quicPort, s.httpAddr, drainTimeoutMS)
	for path, body := range map[string]string{s.serverCfg: server, s.client: client} {
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

func sdEnv(n *notifySock) []string {
	return []string{"NOTIFY_SOCKET=" + n.path, "WATCHDOG_USEC=200000"}
}

type result struct {
	status int
	body   string
	err    error
}

// fire sends n concurrent GET path requests on separate connections.
func fire(addr, path string, n int) <-chan result {
	out := make(chan result, n)
	for range n {
		go func() {
			c := &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}
			resp, err := c.Get("http://" + addr + path)
			if err != nil {
				out <- result{err: err}
				return
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			out <- result{resp.StatusCode, string(b), err}
		}()
	}
	return out
}

// The client drains: in-flight slow requests all complete with 200, new
// connections are refused, exit 0; the notify messages come in order.
func TestDrainClientWithInflightRequests(t *testing.T) {
	origin := startOrigin(t)
	s := writeConfigs(t, origin.addr, 30000)
	srvSock, cliSock := newNotifySock(t), newNotifySock(t)
	server := startProc(t, "server", s.serverCfg, sdEnv(srvSock)...)
	eventually(t, "server READY", func() bool { return srvSock.index("READY=1") >= 0 })
	client := startProc(t, "client", s.client, sdEnv(cliSock)...)
	eventually(t, "client READY", func() bool { return cliSock.index("READY=1") >= 0 })
	eventually(t, "client WATCHDOG", func() bool { return cliSock.index("WATCHDOG=1") >= 0 })

	const n = 5
	results := fire(s.httpAddr, "/slow", n)
	eventually(t, "all slow requests at the origin", func() bool { return origin.entered.Load() == n })

	client.signal(t, syscall.SIGTERM)
	eventually(t, "client STOPPING", func() bool { return cliSock.index("STOPPING=1") >= 0 })
	eventually(t, "new connections refused", func() bool {
		c, err := net.DialTimeout("tcp", s.httpAddr, time.Second)
		if err != nil {
			return true
		}
		c.Close()
		return false
	})
	origin.free()
	for range n {
		select {
		case r := <-results:
			if r.err != nil || r.status != http.StatusOK || r.body != "done /slow" {
				t.Errorf("in-flight request: %d %q %v", r.status, r.body, r.err)
			}
		case <-time.After(safety):
			t.Fatal("in-flight request did not finish")
		}
	}
	if code := client.exitCode(t); code != 0 {
		t.Fatalf("client exit %d, want 0", code)
	}

	// The process has exited, but its last datagrams may still sit in the
	// socket queue ahead of our reader.
	eventually(t, "client STATUS=stopped read", func() bool { return cliSock.index("STATUS=stopped") >= 0 })
	// Order: STATUS (first attempt) -> READY with "tunnel established" ->
	// WATCHDOG pings -> STOPPING with the in-flight count -> STATUS stopped.
	msgs := cliSock.all()
	first, ready := cliSock.index("STATUS=attempting first connection"), cliSock.index("READY=1")
	watchdog, stopping, stopped := cliSock.index("WATCHDOG=1"), cliSock.index("STOPPING=1"), cliSock.index("STATUS=stopped")
	if !(first >= 0 && first < ready && ready < watchdog && watchdog < stopping && stopping < stopped) {
		t.Errorf("order: first status %d, READY %d, WATCHDOG %d, STOPPING %d, stopped %d", first, ready, watchdog, stopping, stopped)
	}
	if !strings.Contains(msgs[ready], "STATUS=tunnel established") {
		t.Errorf("READY message %q", msgs[ready])
	}
	if !strings.Contains(msgs[stopping], fmt.Sprintf("STATUS=stopping: draining %d in-flight requests", n)) {
		t.Errorf("STOPPING message %q", msgs[stopping])
	}
	ready1 := 0
	for _, m := range msgs {
		if strings.Contains(m, "READY=1") {
			ready1++
		}
	}
	if ready1 != 1 {
		t.Errorf("READY sent %d times", ready1)
	}

	server.signal(t, syscall.SIGINT)
	if code := server.exitCode(t); code != 0 {
		t.Fatalf("server exit %d, want 0", code)
	}
	eventually(t, "server STATUS=stopped read", func() bool { return srvSock.index("STATUS=stopped") >= 0 })
	if i := srvSock.index("READY=1"); i < 0 || !strings.Contains(srvSock.all()[i], "STATUS=accepting connections") {
		t.Errorf("server READY: %q", srvSock.all())
	}
	if srvSock.index("STOPPING=1") < 0 {
		t.Errorf("server STOPPING/stopped missing")
	}
}

// The server drains: GOAWAY; in-flight requests complete with 200, requests
// arriving meanwhile get 503 (never 502, never a hang); exit 0; the client
// learns at once and reports the reason in STATUS.
func TestDrainServerWithInflightRequests(t *testing.T) {
	origin := startOrigin(t)
	s := writeConfigs(t, origin.addr, 30000)
	srvSock, cliSock := newNotifySock(t), newNotifySock(t)
	server := startProc(t, "server", s.serverCfg, sdEnv(srvSock)...)
	eventually(t, "server READY", func() bool { return srvSock.index("READY=1") >= 0 })
	startProc(t, "client", s.client, sdEnv(cliSock)...)
	eventually(t, "client READY", func() bool { return cliSock.index("STATUS=tunnel established") >= 0 })

	const n = 3
	results := fire(s.httpAddr, "/slow", n)
	eventually(t, "all slow requests at the origin", func() bool { return origin.entered.Load() == n })
	server.signal(t, syscall.SIGTERM)
	eventually(t, "server STOPPING", func() bool { return srvSock.index("STOPPING=1") >= 0 })
	eventually(t, "a request refused with 503 while draining", func() bool {
		r := <-fire(s.httpAddr, "/fast", 1)
		if r.err != nil {
			t.Fatalf("request while draining: %v", r.err)
		}
		switch r.status {
		case http.StatusOK:
			return false // sent before the GOAWAY arrived
		case http.StatusServiceUnavailable:
			return true
		default:
			t.Fatalf("request while draining: %d %q", r.status, r.body)
			return false
		}
	})
	origin.free()
	for range n {
		r := <-results
		if r.err != nil || r.status != http.StatusOK {
			t.Errorf("in-flight request: %d %q %v", r.status, r.body, r.err)
		}
	}
	if code := server.exitCode(t); code != 0 {
		t.Fatalf("server exit %d, want 0", code)
	}
	eventually(t, "client STATUS with the reason", func() bool {
		return cliSock.index("STATUS=client connection failed: server closed the connection") >= 0 ||
			cliSock.index("STATUS=client connection failed: server is shutting down (GOAWAY)") >= 0
	})
}

// A second signal during the drain exits at once with 130.
func TestSecondSignalExits130(t *testing.T) {
	origin := startOrigin(t)
	s := writeConfigs(t, origin.addr, 0) // drain without limit
	srvSock, cliSock := newNotifySock(t), newNotifySock(t)
	startProc(t, "server", s.serverCfg, sdEnv(srvSock)...)
	eventually(t, "server READY", func() bool { return srvSock.index("READY=1") >= 0 })
	client := startProc(t, "client", s.client, sdEnv(cliSock)...)
	eventually(t, "client READY", func() bool { return cliSock.index("STATUS=tunnel established") >= 0 })
	results := fire(s.httpAddr, "/slow", 1)
	eventually(t, "slow request at the origin", func() bool { return origin.entered.Load() == 1 })
	client.signal(t, syscall.SIGINT)
	eventually(t, "client STOPPING", func() bool { return cliSock.index("STOPPING=1") >= 0 })
	client.signal(t, syscall.SIGINT)
	if code := client.exitCode(t); code != 130 {
		t.Fatalf("exit %d, want 130", code)
	}
	origin.free()
	<-results
}

// A fatal start error is reported as STATUS before exit 1.
func TestFatalErrorStatus(t *testing.T) {
	origin := startOrigin(t)
	s := writeConfigs(t, origin.addr, 1000)
	os.Remove(filepath.Join(s.dir, "client.pem"))
	sock := newNotifySock(t)
	client := startProc(t, "client", s.client, sdEnv(sock)...)
	if code := client.exitCode(t); code != 1 {
		t.Fatalf("exit %d, want 1", code)
	}
	// The process has exited; its last datagram may still be queued.
	eventually(t, "the failure STATUS", func() bool {
		return sock.index("STATUS=failed at building client TLS config: *") >= 0
	})
	if sock.index("READY=1") >= 0 {
		t.Fatal("READY sent before a fatal error")
	}
}

// ptproxy check on configuration files: exit 0 for a good pair (and
// nothing is started: the process ends by itself), 1 for the README's
// example without its certificates and for an invalid file, with the
// problems on standard output.
func TestCheckCommand(t *testing.T) {
	s := writeConfigs(t, "127.0.0.1:1", 1000)
	readme := filepath.Join("..", "..", "config", "testdata", "valid", "client.toml")
	invalid := filepath.Join("..", "..", "config", "testdata", "invalid", "bad-enums.toml")
	for _, tc := range []struct {
		config string
		exit   int
		want   string
	}{
		{s.serverCfg, 0, "result:      OK\n"},
		{s.client, 0, "result:      OK\n"},
		{readme, 1, "tls.ca: loading root CA certificates (" + filepath.Join(filepath.Dir(readme), "rootCA.pem") + ")"},
		{invalid, 1, `transport.fec: invalid value "On"`},
	} {
		cmd := exec.Command(binPath, "check", "-c", tc.config)
		for _, kv := range os.Environ() {
			if !strings.HasPrefix(kv, "PTPROXY_") && !strings.HasPrefix(kv, "SSLKEYLOGFILE=") {
				cmd.Env = append(cmd.Env, kv)
			}
		}
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		done := make(chan error, 1)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		go func() { done <- cmd.Wait() }()
		select {
		case <-done:
		case <-time.After(safety):
			cmd.Process.Kill() // by pid: only the process this test started
			<-done
			t.Fatalf("check -c %s did not exit", tc.config)
		}
		if code := cmd.ProcessState.ExitCode(); code != tc.exit || !strings.Contains(stdout.String(), tc.want) {
			t.Errorf("check -c %s: exit %d (want %d), output lacks %q:\n%s%s", tc.config, code, tc.exit, tc.want, stdout.String(), stderr.String())
		}
	}
}
