package app

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coreos/go-systemd/v22/daemon"

	"github.com/ptproxy/ptproxy/session"
)

// notifier sends one sd_notify(3) datagram ("KEY=value" lines). Tests
// substitute a recorder; production uses go-systemd, which is a no-op
// without NOTIFY_SOCKET.
type notifier interface {
	Notify(state string) error
}

type sdNotifier struct{}

func (sdNotifier) Notify(state string) error {
	_, err := daemon.SdNotify(false, state)
	return err
}

// systemd reports the service state to the service manager: READY once,
// STATUS on every session transition (with the latest failure reason while
// the tunnel is down), STOPPING at the first signal, WATCHDOG pings while
// every actor answers its probe, and the fatal error before a non-zero
// exit. Messages are queued and sent in order by one goroutine, so the
// session's transition hook (called on the actor goroutine) never blocks
// on the socket.
type systemd struct {
	n   notifier
	log *slog.Logger

	mu       sync.Mutex
	queue    []string
	status   string // latest STATUS text
	ready    bool
	stopping bool
	closed   bool
	wake     chan struct{}
	done     chan struct{}
}

func newSystemd(n notifier, log *slog.Logger) *systemd {
	s := &systemd{n: n, log: log, wake: make(chan struct{}, 1), done: make(chan struct{})}
	go s.run()
	return s
}

func (s *systemd) run() {
	defer close(s.done)
	for {
		s.mu.Lock()
		q := s.queue
		s.queue = nil
		closed := s.closed
		s.mu.Unlock()
		for _, m := range q {
			if err := s.n.Notify(m); err != nil {
				s.log.Debug("sd_notify failed", "error", err, "message", m)
			}
		}
		if closed && len(q) == 0 {
			return
		}
		if len(q) == 0 {
			<-s.wake
		}
	}
}

// maxQueued bounds the messages waiting for the sender. Only a plain
// STATUS update can be dropped: when the queue is full, a new STATUS
// replaces the last queued one (the manager only shows the latest anyway),
// so READY, STOPPING and WATCHDOG are never lost and memory stays bounded
// even if the notify socket stalls during a reconnect storm.
const maxQueued = 64

func (s *systemd) send(m string) {
	s.mu.Lock()
	if !s.closed {
		n := len(s.queue)
		if n >= maxQueued && strings.HasPrefix(m, "STATUS=") && strings.HasPrefix(s.queue[n-1], "STATUS=") {
			s.queue[n-1] = m
		} else {
			s.queue = append(s.queue, m)
		}
	}
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// close sends what is queued and stops the sender.
func (s *systemd) close() {
	s.mu.Lock()
	s.closed = true
	s.mu.Unlock()
	select {
	case s.wake <- struct{}{}:
	default:
	}
	<-s.done
}

// reloading brackets a configuration reload the way systemd's
// Type=notify-reload expects: RELOADING=1 with the monotonic time, then
// READY=1 with the outcome as STATUS once it is over.
func (s *systemd) reloading() {
	m := "RELOADING=1"
	if us := monotonicUsec(); us > 0 {
		m += fmt.Sprintf("\nMONOTONIC_USEC=%d", us)
	}
	s.send(m)
}

func (s *systemd) reloaded(err error) {
	s.mu.Lock()
	st := s.status
	s.mu.Unlock()
	m := daemon.SdNotifyReady
	if err != nil {
		m += "\nSTATUS=reload refused: " + err.Error()
	} else if st != "" {
		m += "\nSTATUS=" + st
	}
	s.send(m)
}

// setStatus sends STATUS=text.
func (s *systemd) setStatus(text string) {
	s.mu.Lock()
	s.status = text
	s.mu.Unlock()
	s.send("STATUS=" + text)
}

// markReady sends READY=1 (once) with the current status.
func (s *systemd) markReady() {
	s.mu.Lock()
	if s.ready || s.stopping {
		s.mu.Unlock()
		return
	}
	s.ready = true
	st := s.status
	s.mu.Unlock()
	m := daemon.SdNotifyReady
	if st != "" {
		m += "\nSTATUS=" + st
	}
	s.send(m)
}

// markStopping sends STOPPING=1 with a status text; from then on the
// transition hook still updates STATUS, and the watchdog pings without
// probing (the drain is bounded by drain_timeout).
func (s *systemd) markStopping(text string) {
	s.mu.Lock()
	s.stopping = true
	s.status = text
	s.mu.Unlock()
	s.send(daemon.SdNotifyStopping + "\nSTATUS=" + text)
}

func (s *systemd) isStopping() bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.stopping
}

// fatal sends the failure reason as STATUS ("failed at <step>: <cause>").
func (s *systemd) fatal(err error) {
	text := err.Error()
	if _, ok := errors.AsType[*StepError](err); !ok && !strings.HasPrefix(text, "failed at ") {
		text = "failed at starting: " + text
	}
	s.setStatus(text)
}

// transitionStatus is the STATUS text of a session transition. client
// selects the client wording (the original's "tunnel established" and
// "client connection failed: <reason>").
func transitionStatus(t session.Transition, client bool, lastErr error) string {
	reason := ""
	if t.Reason != nil {
		reason = t.Reason.Error()
	}
	if client {
		switch t.To {
		case session.Connecting:
			if lastErr == nil {
				if t.Attempt <= 1 {
					return "attempting first connection"
				}
				return fmt.Sprintf("connecting (attempt %d)", t.Attempt)
			}
			return fmt.Sprintf("connecting (attempt %d); last failure: %s", t.Attempt, lastErr)
		case session.Ready:
			return "tunnel established"
		case session.Idle:
			if reason == "" {
				reason = "connection ended"
			}
			return "client connection failed: " + reason
		case session.Draining:
			return "draining: waiting for in-flight requests over the tunnel"
		case session.Stopped:
			return "stopped"
		}
		return t.To.String()
	}
	switch t.To {
	case session.Ready:
		return "accepting connections"
	case session.Draining:
		return "stopping server: waiting for outstanding connections to close"
	case session.Stopped:
		return "stopped"
	}
	return t.To.String()
}

// transitionHook returns the session hook that turns transitions into
// STATUS messages. It runs on the session actor and does not block.
// servers are the names of a client's servers: with more than one, STATUS
// is one line with every session's state (tunnelsStatus).
func (s *systemd) transitionHook(client bool, servers []string) func(session.Transition) {
	if client && len(servers) > 1 {
		ts := newTunnelsStatus(servers)
		return func(t session.Transition) { s.setStatus(ts.update(t)) }
	}
	var lastErr error // only touched by the one actor goroutine
	return func(t session.Transition) {
		switch {
		case t.Event == session.EvFail || t.Event == session.EvLost:
			lastErr = t.Reason
		case t.To == session.Ready:
			lastErr = nil
		}
		s.setStatus(transitionStatus(t, client, lastErr))
	}
}

// prober is a long-lived actor that can prove it is alive.
type prober interface {
	Probe(ctx context.Context) error
}

type namedProber struct {
	name string
	p    prober
}

// watchdog pings WATCHDOG=1 every interval while every prober answered
// within that interval; a stuck actor stops the pings, so systemd restarts
// the service after WatchdogSec. After STOPPING the pings continue
// unconditionally.
type watchdog struct {
	sd       *systemd
	log      *slog.Logger
	interval time.Duration
	probers  []namedProber
}

// watchdogInterval returns WATCHDOG_USEC / factor, or 0 when the watchdog
// is off (no WATCHDOG_USEC, or WATCHDOG_PID names another process).
func watchdogInterval(factor float64, log *slog.Logger) time.Duration {
	d, err := daemon.SdWatchdogEnabled(false)
	if err != nil {
		log.Warn("systemd watchdog disabled: bad environment", "error", err)
		return 0
	}
	if d <= 0 {
		return 0
	}
	if factor <= 0 {
		factor = 1.5
	}
	return time.Duration(float64(d) / factor)
}

// run pings until ctx ends.
func (w *watchdog) run(ctx context.Context) {
	t := time.NewTicker(w.interval)
	defer t.Stop()
	var failing string // last failure, logged once per change
	for {
		if w.sd.isStopping() {
			w.sd.send(daemon.SdNotifyWatchdog)
		} else if err := w.probe(ctx); err != nil {
			if ctx.Err() != nil {
				return
			}
			if msg := err.Error(); msg != failing {
				failing = msg
				w.log.Error("watchdog: not pinging systemd, an actor is stuck", "error", msg)
			}
		} else {
			if failing != "" {
				w.log.Info("watchdog: actors answer again")
				failing = ""
			}
			w.sd.send(daemon.SdNotifyWatchdog)
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// probe asks every prober concurrently; all must answer within interval.
func (w *watchdog) probe(ctx context.Context) error {
	pctx, cancel := context.WithTimeout(ctx, w.interval)
	defer cancel()
	errs := make([]error, len(w.probers))
	var wg sync.WaitGroup
	for i, p := range w.probers {
		wg.Go(func() {
			if err := p.p.Probe(pctx); err != nil {
				errs[i] = fmt.Errorf("%s: %w", p.name, err)
			}
		})
	}
	wg.Wait()
	return errors.Join(errs...)
}

// probers lists the instance's long-lived actors: the session actor
// (client Run loop / server accept loop) and, in client mode, the
// HTTP/1.1 accept loop.
func (in *Instance) probers() []namedProber {
	var ps []namedProber
	for i, s := range in.sessions {
		name := "session client loop"
		if i > 0 || len(in.sessions) > 1 {
			name += " (" + s.srv.Name + ")"
		}
		ps = append(ps, namedProber{name, s.client})
	}
	if in.server != nil {
		ps = append(ps, namedProber{"session server accept loop", in.server})
	}
	if pl, ok := in.ln.(*probeListener); ok {
		ps = append(ps, namedProber{"HTTP/1.1 accept loop", pl})
	}
	return ps
}

// inFlight is the number of requests in flight (for the STOPPING status).
func (in *Instance) inFlight() int {
	n := 0
	for _, s := range in.sessions {
		n += s.client.InFlight()
	}
	if in.server != nil {
		n += in.server.InFlight()
	}
	return n
}

// probeListener wraps the HTTP/1.1 listener so the watchdog can prove the
// accept loop is still calling Accept: Probe dials the listener over
// loopback and waits until Accept saw that connection. A probe connection
// registered before Accept returned it is closed inside Accept and never
// reaches the pipeline; one that Accept returned before Probe could
// register it (the kernel completes the TCP handshake on its own) is found
// in the short record of recent loopback accepts, and the pipeline sees a
// connection that closes without sending anything, which it ignores.
type probeListener struct {
	net.Listener
	mu      sync.Mutex
	pending map[string]chan struct{} // local address of a probe dial -> closed on accept
	recent  map[string]struct{}      // remote addresses of recent loopback accepts
	order   []string                 // insertion order of recent, bounded
	probes  atomic.Int64             // probe connections accepted (tests)
}

const recentAccepts = 1024

func newProbeListener(ln net.Listener) *probeListener {
	return &probeListener{Listener: ln, pending: map[string]chan struct{}{}, recent: map[string]struct{}{}}
}

func (l *probeListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return c, err
		}
		key := c.RemoteAddr().String()
		l.mu.Lock()
		ch, ok := l.pending[key]
		if ok {
			delete(l.pending, key)
		} else if a, isTCP := c.RemoteAddr().(*net.TCPAddr); isTCP && a.IP.IsLoopback() {
			if len(l.order) >= recentAccepts {
				delete(l.recent, l.order[0])
				l.order = l.order[1:]
			}
			l.recent[key] = struct{}{}
			l.order = append(l.order, key)
		}
		l.mu.Unlock()
		if !ok {
			return c, nil
		}
		c.Close()
		l.probes.Add(1)
		close(ch)
	}
}

// dialAddr is where a probe connects: the listen address, with a wildcard
// replaced by the loopback address of the same family.
func (l *probeListener) dialAddr() string {
	a, ok := l.Addr().(*net.TCPAddr)
	if !ok {
		return l.Addr().String()
	}
	ip := a.IP
	switch {
	case ip == nil || ip.Equal(net.IPv6unspecified):
		ip = net.IPv6loopback
	case ip.Equal(net.IPv4zero):
		ip = net.IPv4(127, 0, 0, 1)
	}
	return net.JoinHostPort(ip.String(), fmt.Sprint(a.Port))
}

// Probe connects to the listener and waits for the accept loop to take the
// connection.
func (l *probeListener) Probe(ctx context.Context) error {
	var d net.Dialer
	addr := l.dialAddr()
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil && strings.Contains(addr, "[::1]") {
		// A "::" listener on a host without IPv6 loopback: try IPv4.
		_, port, _ := net.SplitHostPort(addr)
		c, err = d.DialContext(ctx, "tcp", net.JoinHostPort("127.0.0.1", port))
	}
	if err != nil {
		return fmt.Errorf("connecting to own listener: %w", err)
	}
	defer c.Close()
	ch := make(chan struct{})
	key := c.LocalAddr().String()
	l.mu.Lock()
	if _, seen := l.recent[key]; seen {
		delete(l.recent, key) // accepted already (and handed to the pipeline)
		l.mu.Unlock()
		l.probes.Add(1)
		return nil
	}
	l.pending[key] = ch
	l.mu.Unlock()
	defer func() {
		l.mu.Lock()
		delete(l.pending, key)
		l.mu.Unlock()
	}()
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("own connection not accepted: %w", context.Cause(ctx))
	}
}
