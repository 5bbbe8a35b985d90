package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/config"
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
// usable session. Once a request was sent, the session package's rules
// apply unchanged: it is retried only on the same server, as with one
// server, so a request the server may have processed is never sent to
// another one.
type multiTunnel struct {
	sessions  []*serverSession
	selection config.ServerSelection
	wait      time.Duration   // session_wait_timeout
	draining  <-chan struct{} // closed when the instance drains
	rr        atomic.Uint64   // active_active: the next pick

	mu      sync.Mutex
	readyCh chan struct{} // closed, then replaced, when a session became ready
}

func newMultiTunnel(sessions []*serverSession, selection config.ServerSelection, wait time.Duration, draining <-chan struct{}) *multiTunnel {
	return &multiTunnel{sessions: sessions, selection: selection, wait: wait, draining: draining, readyCh: make(chan struct{})}
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
		for _, c := range t.candidates() {
			x, err := c.Open(ctx, h, bodiless)
			if err == nil {
				return tunnelStream{x}, nil
			}
			if !errors.Is(err, session.ErrNotReady) {
				return nil, tunnelErr(err)
			}
			// Not sent: the next usable session may take it.
		}
		if t.wait <= 0 {
			return nil, t.notReady()
		}
		if timer == nil {
			timer = time.NewTimer(t.wait)
		}
		select {
		case <-ch:
		case <-timer.C:
			return nil, t.notReady()
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-t.draining:
			return nil, tunnelErr(session.ErrDraining)
		}
	}
}

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
