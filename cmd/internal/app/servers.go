package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/ptproxy/ptproxy/pipeline"
	"github.com/ptproxy/ptproxy/session"
)

// Several servers from one client (docs/routes.md "Several servers"):
// one session.Client per server, each with its own UDP socket and TLS
// config (the server name differs), all started, reloaded and drained
// together; multiTunnel picks one for each request.

// serverSession is one server of the client and its session.
type serverSession struct {
	srv    config.Server // with its defaults and Name (config.EffectiveServers)
	client *session.Client
	// lastFailure is the reason of this session's latest failed attempt
	// or lost session, kept after recovery (for /status).
	lastFailure atomic.Pointer[string]
}

// clientTLS builds the TLS config of one server: the same CA, certificate
// and key for every server, the server's own peer_hostname.
func clientTLS(cfg *config.Config, peer string) (*tls.Config, error) {
	c, err := session.ClientTLS(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key, peer)
	return c, step("building client TLS config", err)
}

// newSessions creates the session client of every server of cfg (not yet
// running). On error the clients created so far are closed.
func (in *Instance) newSessions(cfg *config.Config) ([]*serverSession, error) {
	var out []*serverSession
	fail := func(err error) ([]*serverSession, error) {
		for _, s := range out {
			s.client.Close()
		}
		return nil, err
	}
	for i, srv := range cfg.EffectiveServers() {
		tlsConf, err := clientTLS(cfg, srv.PeerHostname)
		if err != nil {
			return fail(err)
		}
		if i == 0 {
			if err := in.keyLogTo(tlsConf); err != nil {
				return fail(err)
			}
		} else if in.keyLog != nil {
			tlsConf.KeyLogWriter = in.keyLog
		}
		ss := &serverSession{srv: srv}
		name := srv.Name
		client, err := session.NewClient(session.ClientOptions{
			PeerHostname:    srv.PeerHostname,
			ConnectAddress:  srv.ConnectAddress,
			Port:            srv.QUICPort,
			BindAddress:     cfg.General.BindAddress,
			TLS:             tlsConf,
			Transport:       transportOf(cfg),
			ConnectInterval: cfg.System.ConnectInterval.Duration(),
			SessionWait:     cfg.System.SessionWaitTimeout.Duration(),
			// The server relays origin heads up to this bound.
			MaxFieldSectionSize: fieldSectionSize(int64(cfg.Transport.MaxResponseHeaderBytes), 0),
			Logger:              in.log,
			// Hooks tell the sessions apart by Peer: the server's name,
			// which differs from peer_hostname only when two servers
			// share one.
			OnTransition: func(t session.Transition) {
				t.Peer = name
				if (t.Event == session.EvFail || t.Event == session.EvLost) && t.Reason != nil {
					r := t.Reason.Error()
					ss.lastFailure.Store(&r)
				}
				in.onTransition(t)
			},
		})
		if err := step("creating QUIC endpoint", err); err != nil {
			return fail(fmt.Errorf("%w (server %s)", err, name))
		}
		ss.client = client
		out = append(out, ss)
	}
	return out, nil
}

// sessionsTLS builds the TLS config of every session under cfg (a
// reload), all before any is used, so a reload that fails changes none.
func (in *Instance) sessionsTLS(cfg *config.Config) ([]*tls.Config, error) {
	confs := make([]*tls.Config, len(in.sessions))
	for i, s := range in.sessions {
		c, err := clientTLS(cfg, s.srv.PeerHostname)
		if err != nil {
			return nil, err
		}
		if in.keyLog != nil {
			c.KeyLogWriter = in.keyLog
		}
		confs[i] = c
	}
	return confs, nil
}

// drainSessions drains every session at once and returns the first error.
func (in *Instance) drainSessions(ctx context.Context) error {
	errs := make([]error, len(in.sessions))
	var wg sync.WaitGroup
	for i, s := range in.sessions {
		wg.Go(func() { errs[i] = s.client.Drain(ctx) })
	}
	wg.Wait()
	return errors.Join(errs...)
}

// waitFirstAttempts returns once the first connection attempt of every
// session ended (systemd READY with wait_for_first_attempt), or when stop
// is closed. Each attempt is bounded, so the wait is too.
func waitFirstAttempts(sessions []*serverSession, stop <-chan struct{}) {
	for _, s := range sessions {
		select {
		case <-s.client.FirstAttemptDone():
		case <-stop:
			return
		}
	}
}

// multiTunnel is the pipeline's Tunnel over several sessions.
//
// A request goes to a session that is usable now (session.Client.Usable:
// up, no GOAWAY, not draining): with "priority" the first in list order,
// with "active_active" the next in a round robin over the usable ones.
// When none is usable the request waits, up to session_wait_timeout in
// all, and is sent as soon as ANY session becomes ready (ready is a
// broadcast from the transition hook); then it is answered 503 with every
// session's reason. A request that a session refused before sending it
// (NotReadyError from Open: nothing reached a server) goes to the next
// usable session. Once a request was sent, it is sent again only where the
// session package would send it again on its own server (session.Open):
// refused unprocessed (GOAWAY, REQUEST_REJECTED), or bodiless, replayable
// and lost with its connection (close to what nginx's proxy_next_upstream
// does by default). Its own session sends it again while it is usable; otherwise
// the tunnel sends it to the next usable server (multiStream), or waits
// for any, so a request never waits for its first server while another is
// ready. A request with a body, or one that is not idempotent and may
// have been processed, is never sent twice.
type multiTunnel struct {
	sessions  []*serverSession
	selection config.ServerSelection
	wait      time.Duration   // session_wait_timeout
	draining  <-chan struct{} // closed when the instance drains
	rr        atomic.Uint64   // active_active: the next pick
	log       *slog.Logger

	mu      sync.Mutex
	readyCh chan struct{} // closed, then replaced, when a session became ready
}

func newMultiTunnel(sessions []*serverSession, selection config.ServerSelection, wait time.Duration, draining <-chan struct{}, log *slog.Logger) *multiTunnel {
	return &multiTunnel{sessions: sessions, selection: selection, wait: wait, draining: draining, log: log, readyCh: make(chan struct{})}
}

// name is the server name of the session c.
func (t *multiTunnel) name(c *session.Client) string {
	for _, s := range t.sessions {
		if s.client == c {
			return s.srv.Name
		}
	}
	return ""
}

// transition is the instance's transition hook: a session that became
// ready wakes the waiting requests. It runs on the session actors and
// never blocks.
func (t *multiTunnel) transition(tr session.Transition) {
	if tr.To != session.Ready {
		return
	}
	t.mu.Lock()
	close(t.readyCh)
	t.readyCh = make(chan struct{})
	t.mu.Unlock()
}

// changed is closed the next time a session becomes ready.
func (t *multiTunnel) changed() <-chan struct{} {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.readyCh
}

// candidates are the usable sessions in the order this request tries
// them.
func (t *multiTunnel) candidates() []*session.Client {
	var out []*session.Client
	for _, s := range t.sessions {
		if s.client.Usable() {
			out = append(out, s.client)
		}
	}
	if t.selection == config.SelectActiveActive && len(out) > 1 {
		k := int(t.rr.Add(1)-1) % len(out)
		out = append(append(make([]*session.Client, 0, len(out)), out[k:]...), out[:k]...)
	}
	return out
}

func (t *multiTunnel) Open(ctx context.Context, h *h3.Head, bodiless bool) (pipeline.TunnelStream, error) {
	x, c, err := t.open(ctx, h, bodiless)
	if err != nil {
		return nil, err
	}
	if !bodiless {
		// A streamed body cannot be sent twice (Exchange.Resendable is
		// never true): no stream to replace.
		return tunnelStream{x}, nil
	}
	return &multiStream{t: t, ctx: ctx, head: h, x: x, on: c}, nil
}

// open sends h on the first candidate that takes it, waiting for any
// session to become ready when none does.
func (t *multiTunnel) open(ctx context.Context, h *h3.Head, bodiless bool) (*session.Exchange, *session.Client, error) {
	var timer *time.Timer
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	for {
		// Taken before the sessions are looked at, so a session that
		// becomes ready after the look still wakes this request.
		ch := t.changed()
		var missed *session.Client // a usable session that did not take it
		var missedErr error
		for _, c := range t.candidates() {
			// The tunnel does the waiting, for any session: a session
			// must not hold a request for itself while another is ready.
			x, err := c.OpenNoWait(ctx, h, bodiless)
			if err == nil {
				if missed != nil {
					t.log.Debug("request not taken by its server; sent through another session",
						"method", h.Method, "reason", missedErr.Error(), "from", t.name(missed), "to", t.name(c))
				}
				return x, c, nil
			}
			if !errors.Is(err, session.ErrNotReady) {
				return nil, nil, tunnelErr(err)
			}
			// Not sent (the session went out of use, or refused the
			// stream): the next usable session may take it.
			if missed == nil {
				missed, missedErr = c, err
			}
		}
		if t.wait <= 0 {
			return nil, nil, t.notReady()
		}
		if timer == nil {
			timer = time.NewTimer(t.wait)
		}
		select {
		case <-ch:
		case <-timer.C:
			return nil, nil, t.notReady()
		case <-ctx.Done():
			return nil, nil, ctx.Err()
		case <-t.draining:
			return nil, nil, tunnelErr(session.ErrDraining)
		}
	}
}

// multiStream is one exchange of a multiTunnel. When the server's stream
// fails before any response head and the request may be sent again
// (session.Exchange.Resendable: refused unprocessed, or a replayable
// request lost with its connection) while its own session cannot take it
// now, ReadHead sends it through the tunnel again, so it reaches another
// server instead of waiting for this one to come back.
//
// Only bodiless requests get one; its request side ended with Open, so
// only the response side and Cancel ever see x replaced.
type multiStream struct {
	t      *multiTunnel
	ctx    context.Context
	head   *h3.Head
	on     *session.Client // the session x was sent on
	resent int

	mu        sync.Mutex // orders Cancel against ReadHead replacing x
	x         *session.Exchange
	cancelled bool
}

func (s *multiStream) ReadHead() (*h3.Head, error) {
	for {
		h, err := s.x.ReadHead()
		if err == nil || !s.x.Resendable() || s.resent >= len(s.t.sessions) {
			return h, tunnelErr(err)
		}
		s.resent++
		x, c, oerr := s.t.open(s.ctx, s.head, true)
		if oerr != nil {
			// The caller learns why nothing took it: the 503 of no
			// session, or the first failure when that says more.
			if errors.Is(oerr, pipeline.ErrTunnelDown) {
				return nil, tunnelErr(err)
			}
			return nil, oerr
		}
		s.t.log.Debug("request not answered by its server; sent through another session",
			"method", s.head.Method, "reason", err.Error(), "from", s.t.name(s.on), "to", s.t.name(c))
		s.mu.Lock()
		old, cancelled := s.x, s.cancelled
		s.x, s.on = x, c
		s.mu.Unlock()
		old.Close()
		if cancelled {
			x.Cancel()
		}
	}
}

func (s *multiStream) current() *session.Exchange {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.x
}

func (s *multiStream) Cancel() {
	s.mu.Lock()
	s.cancelled = true
	x := s.x
	s.mu.Unlock()
	x.Cancel()
}

func (s *multiStream) WriteData(p []byte) error                { return s.x.WriteData(p) }
func (s *multiStream) CloseWrite(trailers httpio.Header) error { return s.x.CloseWrite(trailers) }
func (s *multiStream) SetNoBody()                              { s.x.SetNoBody() }
func (s *multiStream) NextData() (int64, error)                { return s.x.NextData() }
func (s *multiStream) ReadData(p []byte) (int, error)          { return s.x.ReadData(p) }
func (s *multiStream) FrameLeft() int64                        { return s.x.FrameLeft() }
func (s *multiStream) Trailers() httpio.Header                 { return s.x.Trailers() }
func (s *multiStream) Close()                                  { s.current().Close() }

// notReady is the answer when no session took the request: every
// server's state and latest failure.
func (t *multiTunnel) notReady() error {
	parts := make([]string, len(t.sessions))
	for i, s := range t.sessions {
		parts[i] = s.srv.Name + " " + s.client.State().String()
		if err := s.client.LastError(); err != nil {
			parts[i] += " (" + err.Error() + ")"
		}
	}
	return tunnelErr(&session.NotReadyError{Reason: errors.New("no server ready: " + strings.Join(parts, "; "))})
}

// SessionStatus is one session of a client in /status.
type SessionStatus struct {
	Server      string    `json:"server"` // the name in logs and metric labels
	Peer        string    `json:"peer"`
	PeerAddress string    `json:"peer_address"` // host:port dialled
	State       string    `json:"state"`
	Ready       bool      `json:"ready"`
	Since       time.Time `json:"since"`
	LastFailure string    `json:"last_failure,omitempty"`
	SessionStats
	// FEC is this server's part of Status.FEC (each session has its own
	// socket), present when Status.FEC is.
	FEC *SessionFEC `json:"fec,omitempty"`
}

// SessionFEC is the FEC counters of one session's socket since the start.
type SessionFEC struct {
	Recovered     uint64 `json:"recovered_datagrams"`
	Unrecoverable uint64 `json:"unrecoverable_datagrams"`
	Mismatched    uint64 `json:"mismatched_datagrams"`
	DataReceived  uint64 `json:"data_datagrams_received"`
	// Resending on request (mode "auto"), as in FECStatus.
	Retrieved uint64 `json:"retrieved_datagrams,omitempty"`
	Resent    uint64 `json:"resent_datagrams,omitempty"`
}

// SessionStats are the statistics of a session while it is up (in
// Status and in each SessionStatus; JSON flattens them into both).
type SessionStats struct {
	SmoothedRTTms    *float64 `json:"smoothed_rtt_ms,omitempty"`
	MinRTTms         *float64 `json:"min_rtt_ms,omitempty"`
	LatestRTTms      *float64 `json:"latest_rtt_ms,omitempty"`
	CongestionWindow *uint64  `json:"congestion_window_bytes,omitempty"`
}

func (s *serverSession) status() SessionStatus {
	st := SessionStatus{
		Server: s.srv.Name, Peer: s.srv.PeerHostname, PeerAddress: s.srv.Addr(),
		State: s.client.State().String(), Ready: s.client.State() == session.Ready, Since: s.client.Since(),
	}
	if f := s.lastFailure.Load(); f != nil {
		st.LastFailure = *f
	}
	if cs, ok := s.client.ConnStats(); ok {
		ms := func(d time.Duration) *float64 { v := float64(d.Microseconds()) / 1000; return &v }
		st.SmoothedRTTms, st.MinRTTms, st.LatestRTTms = ms(cs.SmoothedRTT), ms(cs.MinRTT), ms(cs.LatestRTT)
		cw := cs.CongestionWindow
		st.CongestionWindow = &cw
	}
	return st
}

// sessionsStatus fills the client part of st: every session, and at the
// top the tunnel as a whole, described by the first ready session (the
// first session when none is): ready while any session is.
func (in *Instance) sessionsStatus(st *Status) {
	for _, s := range in.sessions {
		st.Sessions = append(st.Sessions, s.status())
	}
	top := st.Sessions[0]
	for _, s := range st.Sessions {
		if s.Ready {
			top = s
			break
		}
	}
	st.State, st.Ready, st.Since, st.Peer = top.State, top.Ready, top.Since, top.Peer
	st.PeerAddress = in.cfg.General.ConnectAddress
	if top.Server != in.sessions[0].srv.Name {
		st.PeerAddress = top.PeerAddress
	}
	st.SessionStats = top.SessionStats
	if f := in.lastFailure.Load(); f != nil {
		st.LastFailure = *f
	}
}

// tunnelsStatus is the systemd STATUS of a client with several servers:
// one line with every session's state, e.g. "tunnels: a.example ready,
// b.example connecting (last failure: ...)".
type tunnelsStatus struct {
	mu     sync.Mutex
	names  []string
	states map[string]string
}

func newTunnelsStatus(names []string) *tunnelsStatus {
	ts := &tunnelsStatus{names: names, states: map[string]string{}}
	for _, n := range names {
		ts.states[n] = session.Idle.String()
	}
	return ts
}

// update records t (its Peer is the server's name) and returns the line.
// The sessions' actors call it concurrently.
func (ts *tunnelsStatus) update(t session.Transition) string {
	ts.mu.Lock()
	defer ts.mu.Unlock()
	s := t.To.String()
	if (t.To == session.Idle || t.To == session.Connecting) && t.Reason != nil {
		s += " (last failure: " + t.Reason.Error() + ")"
	} else if t.To == session.Connecting {
		// Keep the failure that sent the session back to idle.
		if prev, ok := strings.CutPrefix(ts.states[t.Peer], "idle"); ok && prev != "" {
			s += prev
		}
	}
	ts.states[t.Peer] = s
	parts := make([]string, len(ts.names))
	for i, n := range ts.names {
		parts[i] = n + " " + ts.states[n]
	}
	return "tunnels: " + strings.Join(parts, ", ")
}
