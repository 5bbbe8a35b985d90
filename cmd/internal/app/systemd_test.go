package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/session"
	"github.com/ptproxy/ptproxy/session/nettest"
)

// recNotifier records sd_notify messages (the in-process view; the
// process-level test in cmd/ptproxy reads a real unixgram socket).
type recNotifier struct {
	mu   sync.Mutex
	msgs []string
}

func (r *recNotifier) Notify(m string) error {
	r.mu.Lock()
	r.msgs = append(r.msgs, m)
	r.mu.Unlock()
	return nil
}

func (r *recNotifier) all() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.msgs...)
}

func (r *recNotifier) index(prefix string) int {
	for i, m := range r.all() {
		if strings.HasPrefix(m, prefix) {
			return i
		}
	}
	return -1
}

func TestTransitionStatusTexts(t *testing.T) {
	reason := errors.New("connecting to 127.0.0.1:1: timeout: no recent network activity")
	for _, tc := range []struct {
		tr     session.Transition
		client bool
		last   error
		want   string
	}{
		{session.Transition{To: session.Connecting, Attempt: 1}, true, nil, "attempting first connection"},
		{session.Transition{To: session.Ready}, true, nil, "tunnel established"},
		{session.Transition{To: session.Idle, Event: session.EvFail, Reason: reason}, true, reason, "client connection failed: " + reason.Error()},
		{session.Transition{To: session.Idle, Event: session.EvLost, Reason: session.ErrServerClosed}, true, session.ErrServerClosed, "client connection failed: server closed the connection"},
		{session.Transition{To: session.Connecting, Attempt: 3}, true, reason, "connecting (attempt 3); last failure: " + reason.Error()},
		{session.Transition{To: session.Stopped}, true, nil, "stopped"},
		{session.Transition{To: session.Ready}, false, nil, "accepting connections"},
		{session.Transition{To: session.Draining}, false, nil, "stopping server: waiting for outstanding connections to close"},
	} {
		if got := transitionStatus(tc.tr, tc.client, tc.last); got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.tr, got, tc.want)
		}
	}
}

// stuckProber answers until stuck is set, then blocks until its context
// ends (an actor that stopped serving its loop).
type stuckProber struct {
	mu    sync.Mutex
	stuck bool
}

func (p *stuckProber) set(v bool) {
	p.mu.Lock()
	p.stuck = v
	p.mu.Unlock()
}

func (p *stuckProber) Probe(ctx context.Context) error {
	p.mu.Lock()
	stuck := p.stuck
	p.mu.Unlock()
	if !stuck {
		return nil
	}
	<-ctx.Done()
	return context.Cause(ctx)
}

func countPrefix(msgs []string, prefix string) int {
	n := 0
	for _, m := range msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// Pings flow while every actor answers, stop while one is stuck, and flow
// again when it recovers; after STOPPING they flow without probing.
func TestWatchdogStopsWhenAnActorIsStuck(t *testing.T) {
	rec := &recNotifier{}
	log, logs := newTestLogger(t)
	sd := newSystemd(rec, log)
	defer sd.close()
	healthy, stuck := &stuckProber{}, &stuckProber{}
	w := &watchdog{sd: sd, log: log, interval: 20 * time.Millisecond, probers: []namedProber{{"healthy", healthy}, {"pipeline", stuck}}}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { w.run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	pings := func() int { return countPrefix(rec.all(), "WATCHDOG=1") }
	eventually(t, "pings while healthy", func() bool { return pings() >= 3 })
	stuck.set(true)
	eventually(t, "the stuck actor reported", func() bool { return logs.contains("watchdog: not pinging", "pipeline") })
	// Once the failure was logged, no ping may follow while stuck: take a
	// snapshot, let several probe rounds fail, compare.
	before := pings()
	eventually(t, "several failed rounds", func() bool {
		n := 0
		for _, r := range logs.records() {
			if r["msg"] == "watchdog: not pinging systemd, an actor is stuck" {
				n++
			}
		}
		return n >= 1
	})
	for range 5 {
		w.probe(context.Background()) // each blocks for one interval while stuck
	}
	if got := pings(); got != before {
		t.Fatalf("%d pings while an actor was stuck", got-before)
	}
	stuck.set(false)
	eventually(t, "pings again", func() bool { return pings() > before })
	stuck.set(true)
	sd.markStopping("stopping: draining 0 in-flight requests")
	after := pings()
	eventually(t, "pings after STOPPING without probing", func() bool { return pings() > after+2 })
}

// The HTTP/1.1 accept-loop probe succeeds while something calls Accept,
// fails while nothing does, and probe connections never reach the caller.
func TestProbeListener(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	pl := newProbeListener(ln)
	defer pl.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	err = pl.Probe(ctx) // nobody accepts yet
	cancel()
	if err == nil {
		t.Fatal("probe succeeded with no accept loop")
	}
	// Room for every connection the accept loop can hand on before the
	// test reads them: the stale one from the first probe, any of the 20
	// probes that raced Accept, and the regular caller. A smaller buffer
	// would block the accept loop, and the probes with it.
	got := make(chan net.Conn, 32)
	go func() {
		for {
			c, err := pl.Accept()
			if err != nil {
				close(got)
				return
			}
			got <- c
		}
	}()
	ctx, cancel = context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for range 20 {
		if err := pl.Probe(ctx); err != nil {
			t.Fatal(err)
		}
	}
	// A regular caller still gets through.
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	c.Write([]byte("x"))
	defer c.Close()
	// Probe connections that raced Accept (returned before the probe could
	// register) reach the caller as connections that send nothing; the
	// regular one sends "x".
	deadline := time.After(30 * time.Second)
	for {
		select {
		case sc := <-got:
			sc.SetReadDeadline(time.Now().Add(5 * time.Second))
			b := make([]byte, 1)
			n, _ := sc.Read(b)
			sc.Close()
			if n == 1 && b[0] == 'x' {
				return
			}
		case <-deadline:
			t.Fatal("the regular connection never arrived")
		}
	}
}

// On a wildcard listener the probe dials the loopback address.
func TestProbeOnWildcardListeners(t *testing.T) {
	for _, addr := range []string{"[::]:0", "0.0.0.0:0", "127.0.0.1:0"} {
		ln, err := net.Listen("tcp", addr)
		if err != nil {
			t.Logf("skipping %s: %v", addr, err)
			continue
		}
		pl := newProbeListener(ln)
		go func() {
			for {
				c, err := pl.Accept()
				if err != nil {
					return
				}
				c.Close()
			}
		}()
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		err = pl.Probe(ctx)
		cancel()
		pl.Close()
		if err != nil {
			t.Errorf("%s (dial %s): %v", addr, pl.dialAddr(), err)
		}
	}
}

// serve reports READY, STATUS, WATCHDOG and STOPPING in order (recording
// notifier) and exits 0 after the first signal.
func TestServeNotifiesInOrder(t *testing.T) {
	p := startPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	cfg := p.pki.clientConfig(p.server.QUICAddr().(*net.UDPAddr).Port)
	t.Setenv("WATCHDOG_USEC", "60000")
	rec := &recNotifier{}
	log, _ := newTestLogger(t)
	sigs := make(chan os.Signal, 2)
	code := make(chan int, 1)
	go func() { code <- serve(cfg, log, sigs, rec, nil) }()
	eventually(t, "READY and a WATCHDOG ping", func() bool { return rec.index("WATCHDOG=1") >= 0 && rec.index("READY=1") >= 0 })
	sigs <- syscall.SIGTERM
	select {
	case c := <-code:
		if c != ExitOK {
			t.Fatalf("exit %d", c)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not return")
	}
	msgs := rec.all()
	ready, stopping := rec.index("READY=1"), rec.index("STOPPING=1")
	if ready < 0 || stopping < ready || rec.index("WATCHDOG=1") < ready {
		t.Fatalf("order READY < WATCHDOG, STOPPING wrong: %q", msgs)
	}
	if countPrefix(msgs, "READY=1") != 1 {
		t.Errorf("READY sent %d times", countPrefix(msgs, "READY=1"))
	}
	if !strings.Contains(msgs[ready], "STATUS=tunnel established") {
		t.Errorf("READY without the tunnel status: %q", msgs[ready])
	}
	if !strings.Contains(msgs[stopping], "STATUS=stopping: draining 0 in-flight requests") {
		t.Errorf("STOPPING message %q", msgs[stopping])
	}
	if last := msgs[len(msgs)-1]; last != "STATUS=stopped" && last != "WATCHDOG=1" {
		t.Errorf("last message %q", last)
	}
	if !strings.HasPrefix(msgs[0], "STATUS=attempting first connection") {
		t.Errorf("first message %q", msgs[0])
	}
}

// freeTCPAddr returns a loopback address that was free a moment ago.
func freeTCPAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// The first signal drains (a request is held at the origin), the second
// exits at once with 130.
func TestServeSecondSignalExits130(t *testing.T) {
	hold := make(chan struct{})
	entered := make(chan struct{}, 1)
	p := startPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case entered <- struct{}{}:
		default:
		}
		<-hold
	}))
	defer close(hold)
	cfg := p.pki.clientConfig(p.server.QUICAddr().(*net.UDPAddr).Port)
	cfg.General.HTTPBindAddress = freeTCPAddr(t)
	rec := &recNotifier{}
	log, _ := newTestLogger(t)
	sigs := make(chan os.Signal, 2)
	code := make(chan int, 1)
	go func() { code <- serve(cfg, log, sigs, rec, nil) }()
	eventually(t, "READY", func() bool { return rec.index("READY=1") >= 0 })
	reqDone := make(chan struct{})
	go func() {
		defer close(reqDone)
		resp, err := callerClient().Get("http://" + cfg.General.HTTPBindAddress + "/slow")
		if err == nil {
			resp.Body.Close()
		}
	}()
	<-entered
	sigs <- syscall.SIGINT
	eventually(t, "STOPPING", func() bool { return rec.index("STOPPING=1") >= 0 })
	if m := rec.all()[rec.index("STOPPING=1")]; !strings.Contains(m, "draining 1 in-flight requests") {
		t.Errorf("STOPPING message %q", m)
	}
	sigs <- syscall.SIGINT
	select {
	case c := <-code:
		if c != ExitForced {
			t.Fatalf("exit %d, want %d", c, ExitForced)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("serve did not return after the second signal")
	}
}

func TestServeFatalStatus(t *testing.T) {
	p := newTestPKI(t)
	cfg := p.clientConfig(1)
	cfg.TLS.Cert = filepath.Join(t.TempDir(), "missing.pem")
	rec := &recNotifier{}
	log, _ := newTestLogger(t)
	if c := serve(cfg, log, make(chan os.Signal), rec, nil); c != ExitFatal {
		t.Fatalf("exit %d", c)
	}
	msgs := rec.all()
	if len(msgs) == 0 || !strings.HasPrefix(msgs[len(msgs)-1], "STATUS=failed at building client TLS config: ") {
		t.Fatalf("messages %q", msgs)
	}
	if rec.index("READY=1") >= 0 {
		t.Fatal("READY after a fatal error")
	}
}

// Every [transport] field that quic-go honours reaches quic.Config (or the
// socket options), from a TOML file through config, transportOf and
// session.QUICConfig; the others are reported by warnings.
func TestTransportFieldsReachQUICConfig(t *testing.T) {
	p := newTestPKI(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "client.toml")
	toml := fmt.Sprintf(`[general]
mode = "Client"
peer_hostname = "server.test"
[tls]
ca = %q
cert = %q
key = %q
[transport]
max_idle_timeout = 7000
keep_alive_interval = 3000
initial_rtt = 50
max_concurrent_http_streams = 42
stream_receive_window = 2000000
initial_window = 100000
receive_window = 9000000
send_window = 500000
socket_receive_buffer_size = 4000000
socket_send_buffer_size = 3000000
congestion_algorithm = "Cubic"
qlog_dir = "qlog"
`, p.path("ca.pem"), p.path("client.pem"), p.path("client-key.pem"))
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	tr := transportOf(cfg)
	if tr.SocketReceiveBuffer != 4_000_000 || tr.SocketSendBuffer != 3_000_000 {
		t.Errorf("socket buffers %d %d", tr.SocketReceiveBuffer, tr.SocketSendBuffer)
	}
	if tr.QlogDir != filepath.Join(dir, "qlog") {
		t.Errorf("qlog dir %q", tr.QlogDir)
	}
	s := session.QUICConfig(tr, true)
	c := session.QUICConfig(tr, false)
	checks := []struct {
		field     string
		got, want any
	}{
		{"max_idle_timeout -> MaxIdleTimeout", s.MaxIdleTimeout, 7 * time.Second},
		{"max_idle_timeout -> HandshakeIdleTimeout (server)", s.HandshakeIdleTimeout, 7 * time.Second},
		{"keep_alive_interval -> KeepAlivePeriod", s.KeepAlivePeriod, 3 * time.Second},
		{"max_concurrent_http_streams -> MaxIncomingStreams (server)", s.MaxIncomingStreams, int64(42)},
		{"client MaxIncomingStreams", c.MaxIncomingStreams, int64(-1)},
		{"stream_receive_window -> InitialStreamReceiveWindow", s.InitialStreamReceiveWindow, uint64(2_000_000)},
		{"stream_receive_window -> MaxStreamReceiveWindow (auto-tuning ceiling)", s.MaxStreamReceiveWindow, uint64(session.MaxStreamWindow)},
		{"receive_window -> InitialConnectionReceiveWindow", s.InitialConnectionReceiveWindow, uint64(9_000_000)},
		{"receive_window -> MaxConnectionReceiveWindow", s.MaxConnectionReceiveWindow, uint64(9_000_000)},
		{"qlog_dir -> Tracer", s.Tracer != nil, true},
		{"server Allow0RTT", s.Allow0RTT, true},
		{"client attempt bound", session.AttemptIdleTimeout(tr, cfg.System.ConnectInterval.Duration()), time.Second},
	}
	for _, ck := range checks {
		if ck.got != ck.want {
			t.Errorf("%s: %v, want %v", ck.field, ck.got, ck.want)
		}
	}
	warnings := strings.Join(cfg.Warnings(), "\n")
	for _, f := range []string{"initial_rtt", "initial_window", "send_window", "congestion_algorithm"} {
		if !strings.Contains(warnings, "transport."+f) || !strings.Contains(warnings, "no effect") {
			t.Errorf("no warning for %s: %s", f, warnings)
		}
	}

	// Defaults: the receive window does not cap a fast link.
	d := config.Defaults()
	dt := session.QUICConfig(transportOf(&d), true)
	if dt.MaxConnectionReceiveWindow < 15<<20 || dt.MaxIdleTimeout != 5*time.Second || dt.KeepAlivePeriod != 2*time.Second || dt.MaxIncomingStreams != 100 || dt.MaxStreamReceiveWindow != session.MaxStreamWindow || dt.InitialStreamReceiveWindow != 1_000_000 {
		t.Errorf("defaults: %+v", dt)
	}
}

// The fields without effect are warned about once each at start.
func TestStartWarnsAboutFieldsWithoutEffect(t *testing.T) {
	p := newTestPKI(t)
	path := filepath.Join(t.TempDir(), "server.toml")
	toml := fmt.Sprintf(`[general]
mode = "Server"
peer_hostname = "client.test"
bind_address = "127.0.0.1"
quic_port = %d
http_connect_address = "127.0.0.1:1"
[tls]
ca = %q
cert = %q
key = %q
[transport]
initial_rtt = 50
initial_window = 100000
send_window = 500000
congestion_algorithm = "Bbr"
`, nettest.FreePort(t, "udp"), p.path("ca.pem"), p.path("server.pem"), p.path("server-key.pem"))
	if err := os.WriteFile(path, []byte(toml), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.Load(path)
	if err != nil {
		t.Fatal(err)
	}
	log, logs := newTestLogger(t)
	startInstance(t, cfg, log)
	for _, f := range []string{"initial_rtt", "initial_window", "send_window", "congestion_algorithm"} {
		n := 0
		for _, r := range logs.records() {
			if r["level"] == "WARN" && strings.Contains(fmt.Sprint(r["msg"]), "transport."+f) {
				n++
			}
		}
		if n != 1 {
			t.Errorf("%d warnings for %s", n, f)
		}
	}
}

// SSLKEYLOGFILE: off unless set; when set, key lines are written and a
// warning is logged.
func TestSSLKeyLogFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "keys.log")
	t.Setenv("SSLKEYLOGFILE", path)
	p := startPair(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {}))
	if !p.clientLog.contains("SSLKEYLOGFILE is set") || !p.serverLog.contains("SSLKEYLOGFILE is set") {
		t.Fatal("no SSLKEYLOGFILE warning")
	}
	eventually(t, "key log lines", func() bool {
		b, _ := os.ReadFile(path)
		return strings.Contains(string(b), "CLIENT_HANDSHAKE_TRAFFIC_SECRET") && strings.Contains(string(b), "CLIENT_TRAFFIC_SECRET_0")
	})
}

func TestNoKeyLogWithoutVariable(t *testing.T) {
	t.Setenv("SSLKEYLOGFILE", "")
	log, logs := newTestLogger(t)
	in := &Instance{log: log}
	c := &tls.Config{}
	if err := in.keyLogTo(c); err != nil || c.KeyLogWriter != nil || logs.contains("SSLKEYLOGFILE") {
		t.Fatalf("key log set up without the variable: %v %v", c.KeyLogWriter, err)
	}
}

// quic-go's UDP buffer warning goes through the standard log package; the
// bridge routes it into the operator log.
func TestStdlogBridge(t *testing.T) {
	prevOut, prevFlags := log.Writer(), log.Flags()
	defer func() { log.SetOutput(prevOut); log.SetFlags(prevFlags) }()
	l, logs := newTestLogger(t)
	stdlogBridge(l)
	log.Printf("%s. See https://github.com/quic-go/quic-go/wiki/UDP-Buffer-Sizes for details.", "failed to sufficiently increase receive buffer size (was: 208 kiB, wanted: 7168 kiB, got: 416 kiB)")
	if !logs.contains("failed to sufficiently increase receive buffer size", "quic-go", "WARN") {
		t.Fatal("quic-go's line did not reach slog")
	}
}
