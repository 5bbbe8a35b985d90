package session

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/quic-go/quic-go"
)

// ServerOptions configure a [Server]. TLS and Handler are required.
type ServerOptions struct {
	BindAddress string        // local IP; default "::"
	Port        int           // UDP port; 0 binds an ephemeral port (tests, the demo): callers pass quic_port
	TLS         *tls.Config   // from ServerTLS
	Transport   Transport     // QUIC knobs
	Handler     StreamHandler // serves every HTTP/3 request stream
	// MaxFieldSectionSize bounds a request head from the client (RFC 9114
	// 4.2.2 size); 0 means the codec's default (64 KiB).
	MaxFieldSectionSize uint64
	Logger              *slog.Logger // default slog.Default()
	OnTransition        func(Transition)
	PeerHostname        string // the pinned client name, for logs
	// PeerIdentities are the accepted client names in order (the names
	// given to ServerTLS); the first one a connection's certificate
	// matches is its identity (ServerStream.PeerIdentity). Default
	// [PeerHostname].
	PeerIdentities []string
	KeyLogWriter   io.Writer // when non-nil, receives TLS secrets (SSLKEYLOGFILE)
}

// drainLinger bounds how long Drain waits, after the last handler returned,
// for clients to close their connections themselves (an HTTP/3 client that
// received GOAWAY closes with H3_NO_ERROR once its last stream is done,
// which guarantees it received every response byte).
const drainLinger = 2 * time.Second

// Server accepts any number of authenticated QUIC connections and serves
// HTTP/3 on each: its own HTTP/3 layer (h3Conn for the control streams, one
// goroutine per request stream running the handler).
//
// Lifecycle: NewServer (idle) -> Listen (ready) -> Serve ... -> Drain
// (draining -> stopped) or Close (stopped). The lifecycle methods are the
// actor: they fire transitions under s.life, never while waiting.
type Server struct {
	o   ServerOptions
	log *slog.Logger
	m   *machine

	life sync.Mutex // serialises fires and the fields below it
	udp  *net.UDPConn
	tr   *quic.Transport
	fec  *fecLayer // FEC below QUIC, or the watcher of a peer's FEC (fecconn.go)
	ln   *quic.EarlyListener

	linger  time.Duration // drainLinger; tests change it
	probeCh chan struct{} // received from by Serve's loop (Probe)
	// testHookAccepted, when set, runs on Serve's goroutine for each
	// accepted connection (tests use it to stall the actor).
	testHookAccepted atomic.Pointer[func()]

	serving    atomic.Bool   // Serve was called
	closing    atomic.Bool   // Drain or Close started: accept errors are expected
	acceptDone chan struct{} // closed when Serve's accept loop exited
	finished   chan struct{} // closed when the server reached stopped
	finishOnce sync.Once

	connWG  sync.WaitGroup // one per served connection goroutine (owned by Serve)
	connsMu sync.Mutex
	conns   map[*quic.Conn]*serverConn // serverConn nil until its HTTP/3 layer is up

	hMu      sync.Mutex // guards handlers and hIdle
	handlers int        // handlers running
	hIdle    chan struct{}

	// perHS is what every handshake gets (see handshakeTLS); SetTLS
	// replaces it for the handshakes that follow.
	perHS atomic.Pointer[func(*tls.ClientHelloInfo) (*tls.Config, error)]
	// verifyPeer is the handshakes' check of a client (chain and names)
	// without its log line, for RecheckPeers.
	verifyPeer atomic.Pointer[func(tls.ConnectionState) error]
	// names are the accepted client names in order (identity);
	// SetPeerIdentities replaces them.
	names atomic.Pointer[[]string]
}

// NewServer validates o. Nothing is bound until Listen.
func NewServer(o ServerOptions) (*Server, error) {
	if o.TLS == nil {
		return nil, errors.New("session: ServerOptions.TLS is required")
	}
	if o.Handler == nil {
		return nil, errors.New("session: ServerOptions.Handler is required")
	}
	if o.BindAddress == "" {
		o.BindAddress = DefaultBindAddress
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.TLS = withKeyLog(o.TLS, o.KeyLogWriter)
	srv := &Server{
		o:          o,
		log:        o.Logger,
		m:          newMachine(o.Logger, o.PeerHostname, o.OnTransition),
		linger:     drainLinger,
		acceptDone: make(chan struct{}),
		finished:   make(chan struct{}),
		probeCh:    make(chan struct{}),
		conns:      map[*quic.Conn]*serverConn{},
	}
	srv.SetPeerIdentities(o.PeerIdentities)
	return srv, nil
}

// SetPeerIdentities replaces the accepted client names the identities of
// new connections are taken from (ServerOptions.PeerIdentities; empty:
// [PeerHostname]). The names the handshake accepts are the TLS config's
// (SetTLS); give both the same list.
func (s *Server) SetPeerIdentities(names []string) {
	if len(names) == 0 {
		names = []string{s.o.PeerHostname}
	}
	names = slices.Clone(names)
	s.names.Store(&names)
}

// RecheckPeers checks every established connection's client certificate
// again, as a new handshake would now (SetTLS, SetPeerIdentities): the
// chain against the CA and the time now, and the accepted names. A
// connection that fails, or whose identity is no longer the same, is
// closed with a WARN line that names its identity and the reason, and its
// requests in flight are cut: a reload that removes a client's trust
// takes effect at once. It returns how many were closed.
func (s *Server) RecheckPeers() int {
	verify := s.verifyPeer.Load()
	s.connsMu.Lock()
	type refusal struct {
		sc  *serverConn
		err error
	}
	var refused []refusal
	for _, sc := range s.conns {
		if sc == nil {
			continue // still in its handshake, under the config it began with
		}
		st := sc.conn.ConnectionState().TLS
		if len(st.PeerCertificates) == 0 {
			continue // a test server without client authentication
		}
		var err error
		if verify != nil {
			err = (*verify)(st)
		}
		if err == nil && s.identity(st) != sc.identity {
			err = fmt.Errorf("its identity is now %q", s.identity(st))
		}
		if err != nil {
			refused = append(refused, refusal{sc, err})
		}
	}
	s.connsMu.Unlock()
	for _, r := range refused {
		s.log.Warn("closing connection: the client is no longer accepted", KeyRemoteAddr, r.sc.conn.RemoteAddr().String(),
			KeyIdentity, r.sc.identity, KeyReason, r.err.Error(), KeyPeer, s.o.PeerHostname)
		_ = r.sc.conn.CloseWithError(quic.ApplicationErrorCode(h3.ErrCodeNoError), "client no longer accepted")
	}
	return len(refused)
}

// State returns the current state (lock-free snapshot).
func (s *Server) State() State { return s.m.State() }

// Since returns when the current state was entered.
func (s *Server) Since() time.Time { return s.m.Since() }

// Addr returns the bound UDP address (nil before Listen).
func (s *Server) Addr() net.Addr {
	s.life.Lock()
	defer s.life.Unlock()
	if s.udp == nil {
		return nil
	}
	return s.udp.LocalAddr()
}

// Listen binds bind_address:port now, so bind errors surface before READY,
// and starts accepting QUIC handshakes (state ready).
func (s *Server) Listen() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.m.State() != Idle {
		return fmt.Errorf("%w: Listen in state %s", ErrClosed, s.m.State())
	}
	udp, err := listenUDP(s.o.BindAddress, s.o.Port)
	if err != nil {
		return fmt.Errorf("binding QUIC endpoint socket: %w", err)
	}
	tr, fl, err := newQUICTransport(udp, s.o.Transport, s.log)
	if err != nil {
		udp.Close()
		return fmt.Errorf("creating QUIC endpoint: %w", err)
	}
	qc := QUICConfig(s.o.Transport, true)
	ln, err := tr.ListenEarly(s.handshakeTLS(), qc)
	if err != nil {
		tr.Close()
		fl.close()
		udp.Close()
		return fmt.Errorf("creating QUIC endpoint: %w", err)
	}
	fl.startWatch(tr, s.log)
	s.fec = fl
	// quic-go sized the buffers in Listen; the user's values win.
	applySocketBuffers(udp, s.o.Transport, s.log)
	s.udp, s.tr, s.ln = udp, tr, ln
	s.m.fire(context.Background(), EvListen, nil)
	s.log.Info("accepting connections", KeyLocalAddr, udp.LocalAddr().String(), KeyPeer, s.o.PeerHostname)
	return nil
}

// handshakeTLS returns the listener's TLS config: a GetConfigForClient hook
// hands every handshake its own config whose VerifyConnection knows the
// remote address, so each refusal is logged once at Warn with the address
// and a clear reason. To see refusals that crypto/tls would otherwise
// reject before any callback (no certificate, unknown authority, expired),
// the per-handshake config requests the certificate (RequestClientCert) and
// verifies the chain itself with the same rules as
// RequireAndVerifyClientCert (see strictClientVerifier), then runs the
// caller's VerifyConnection (the peer_hostname pin of ServerTLS).
func (s *Server) handshakeTLS() *tls.Config {
	base := s.o.TLS.Clone()
	s.storeTLS(base)
	base.GetConfigForClient = func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		return (*s.perHS.Load())(chi)
	}
	return base
}

// SetTLS replaces the TLS config of the handshakes that follow (a reload of
// certificates or CA); connections already established keep theirs. c is
// built like ServerOptions.TLS; the key log writer stays.
func (s *Server) SetTLS(c *tls.Config) {
	s.storeTLS(withKeyLog(c, s.o.KeyLogWriter).Clone())
}

// storeTLS derives the per-handshake config from base (see handshakeTLS).
func (s *Server) storeTLS(base *tls.Config) {
	perHS := base.Clone()
	userVerify := base.VerifyConnection
	var chain func(tls.ConnectionState) error
	if base.ClientAuth == tls.RequireAndVerifyClientCert {
		perHS.ClientAuth = tls.RequestClientCert
		chain = strictClientVerifier(base.ClientCAs, "")
		// Send an empty list of acceptable CAs, as the original did: a
		// Go client then presents its certificate even when it is from
		// another CA, and the refusal says "unknown authority" rather
		// than "no client certificate".
		perHS.ClientCAs = nil
	}
	verify := func(cs tls.ConnectionState) error {
		var err error
		if chain != nil {
			err = chain(cs)
		}
		if err == nil && userVerify != nil {
			err = userVerify(cs)
		}
		return err
	}
	s.verifyPeer.Store(&verify)
	get := func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
		remote := "unknown"
		if chi.Conn != nil && chi.Conn.RemoteAddr() != nil {
			remote = chi.Conn.RemoteAddr().String()
		}
		cfg := perHS.Clone()
		cfg.VerifyConnection = func(cs tls.ConnectionState) error {
			err := verify(cs)
			if err != nil {
				s.log.Warn("handshake refused", KeyRemoteAddr, remote, KeyReason, err.Error(), KeyPeer, s.o.PeerHostname)
			}
			return err
		}
		return cfg, nil
	}
	s.perHS.Store(&get)
}

// Serve runs the accept loop until Drain or Close, or until ctx ends (which
// closes the server immediately). Each connection is served by
// http3.Server.ServeQUICConn in a goroutine Serve owns; Serve returns after
// all of them ended and the server is stopped.
func (s *Server) Serve(ctx context.Context) error {
	s.life.Lock()
	if s.m.State() != Ready || s.ln == nil {
		st := s.m.State()
		s.life.Unlock()
		return fmt.Errorf("%w: Serve in state %s (call Listen first)", ErrClosed, st)
	}
	if !s.serving.CompareAndSwap(false, true) {
		s.life.Unlock()
		return errors.New("session: Serve called twice")
	}
	ln := s.ln
	s.life.Unlock()

	closedByCtx := make(chan struct{})
	stop := context.AfterFunc(ctx, func() {
		_ = s.Close()
		close(closedByCtx)
	})
	defer func() {
		if !stop() {
			<-closedByCtx // the AfterFunc goroutine is ours too
		}
	}()

	// quic-go's Accept blocks without a way to interleave probes, so a
	// helper goroutine accepts and hands each connection to this loop,
	// which is the actor that probes reach (Probe).
	type accepted struct {
		conn *quic.Conn
		err  error
	}
	acceptCh := make(chan accepted)
	acceptorDone := make(chan struct{})
	go func() {
		defer close(acceptorDone)
		for {
			conn, err := ln.Accept(context.Background())
			acceptCh <- accepted{conn, err}
			if err != nil {
				return
			}
		}
	}()
	var acceptErr error
loop:
	for {
		select {
		case a := <-acceptCh:
			if a.err != nil {
				if !s.closing.Load() {
					acceptErr = fmt.Errorf("accepting QUIC connection: %w", a.err)
				}
				break loop
			}
			if h := s.testHookAccepted.Load(); h != nil {
				(*h)()
			}
			s.connWG.Add(1)
			go s.serveConn(a.conn)
		case <-s.probeCh:
		}
	}
	<-acceptorDone
	close(s.acceptDone)
	if acceptErr != nil {
		_ = s.Close()
	}
	<-s.finished
	if acceptErr != nil {
		return acceptErr
	}
	if ctx.Err() != nil {
		return context.Cause(ctx)
	}
	return nil
}

func (s *Server) serveConn(conn *quic.Conn) {
	defer s.connWG.Done()
	s.connsMu.Lock()
	s.conns[conn] = nil
	s.connsMu.Unlock()
	defer func() {
		s.connsMu.Lock()
		delete(s.conns, conn)
		s.connsMu.Unlock()
	}()

	remote := conn.RemoteAddr().String()
	// The listener hands out connections before their handshake completed
	// (ListenEarly, for 0-RTT). Unless the client resumed a session with
	// early data (its ticket was issued after a full, verified handshake
	// with the same certificate), wait for the handshake: the server must
	// not send SETTINGS (which the client takes as "accepted") before the
	// client certificate was verified. A refused handshake was already
	// logged by VerifyConnection.
	if !conn.ConnectionState().Used0RTT {
		select {
		case <-conn.HandshakeComplete():
		case <-conn.Context().Done():
			s.log.Debug("connection closed during its handshake", KeyRemoteAddr, remote,
				KeyReason, serverCloseReason(context.Cause(conn.Context())).Error(), KeyPeer, s.o.PeerHostname)
			return
		}
	}
	st := conn.ConnectionState()
	identity := s.identity(st.TLS)
	s.log.Info("connection established", KeyRemoteAddr, remote, KeySubject, clientSubject(conn), KeyIdentity, identity, KeyPeer, s.o.PeerHostname,
		KeyResumed, st.TLS.DidResume, KeyEarlyData, st.Used0RTT, KeyGSO, st.GSO)
	hc, err := newH3Conn(conn, true, s.o.MaxFieldSectionSize, s.log)
	if err != nil {
		s.log.Warn("connection closed", KeyRemoteAddr, remote, KeyReason, err.Error(), KeyPeer, s.o.PeerHostname)
		return
	}
	sc := &serverConn{s: s, conn: conn, h3: hc, identity: identity}
	s.connsMu.Lock()
	s.conns[conn] = sc
	s.connsMu.Unlock()
	sc.acceptRequests()
	// Accept fails once the connection is closing; its context carries the
	// reason a moment later.
	<-conn.Context().Done()
	hc.wait()
	s.log.Info("connection closed", KeyRemoteAddr, remote, KeyReason, serverCloseReason(context.Cause(conn.Context())).Error(), KeyPeer, s.o.PeerHostname)
}

// identity is the accepted client name the connection's certificate
// matched (the handshake refused any other). A connection without a
// certificate (a test server without client authentication) has none.
func (s *Server) identity(st tls.ConnectionState) string {
	if len(st.PeerCertificates) == 0 {
		return ""
	}
	id, _ := PeerIdentity(st.PeerCertificates[0], *s.names.Load())
	return id
}

func clientSubject(conn *quic.Conn) string {
	certs := conn.ConnectionState().TLS.PeerCertificates
	if len(certs) == 0 {
		return ""
	}
	return describeCert(certs[0])
}

func describeCert(c *x509.Certificate) string {
	return fmt.Sprintf("%s (SAN %s)", c.Subject.String(), certNames(c))
}

// Probe proves the server's actor loop (Serve) is alive: nil once the loop
// took the probe, ErrClosed once the server stopped accepting, an error
// when ctx ends first (the loop is stuck). Before Serve runs it checks the
// lifecycle lock only.
func (s *Server) Probe(ctx context.Context) error {
	if !s.serving.Load() {
		s.life.Lock()
		st := s.m.State()
		s.life.Unlock()
		if st == Stopped {
			return ErrClosed
		}
		return nil
	}
	select {
	case s.probeCh <- struct{}{}:
		return nil
	case <-s.acceptDone:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("session server loop did not answer (state %s): %w", s.State(), context.Cause(ctx))
	}
}

// handlerStarted and handlerDone count running handlers so Drain can wait
// for them.
func (s *Server) handlerStarted() {
	s.hMu.Lock()
	s.handlers++
	s.hMu.Unlock()
}

func (s *Server) handlerDone() {
	s.hMu.Lock()
	s.handlers--
	if s.handlers == 0 && s.hIdle != nil {
		close(s.hIdle)
		s.hIdle = nil
	}
	s.hMu.Unlock()
}

// InFlight returns the number of requests being handled.
func (s *Server) InFlight() int {
	s.hMu.Lock()
	defer s.hMu.Unlock()
	return s.handlers
}

func (s *Server) handlersIdle() <-chan struct{} {
	s.hMu.Lock()
	defer s.hMu.Unlock()
	if s.handlers == 0 {
		ch := make(chan struct{})
		close(ch)
		return ch
	}
	if s.hIdle == nil {
		s.hIdle = make(chan struct{})
	}
	return s.hIdle
}

func (s *Server) connCount() int {
	s.connsMu.Lock()
	defer s.connsMu.Unlock()
	return len(s.conns)
}

// Drain stops accepting new QUIC connections, sends GOAWAY on every
// connection (RFC 9114 5.2), waits for in-flight handlers, then
// closes the remaining connections with H3_NO_ERROR so clients know at once.
// If ctx ends first, the rest is closed immediately and ctx's cause returned.
func (s *Server) Drain(ctx context.Context) error {
	s.life.Lock()
	switch s.m.State() {
	case Stopped, Draining:
		s.life.Unlock()
		<-s.finished
		return nil
	case Idle:
		s.life.Unlock()
		return s.Close()
	}
	s.closing.Store(true)
	s.m.fire(ctx, EvDrain, nil)
	_ = s.ln.Close() // stop accepting; Serve's loop ends
	s.life.Unlock()
	if s.serving.Load() {
		<-s.acceptDone
	}
	s.goAwayAll()

	var err error
wait:
	for {
		select {
		case <-s.handlersIdle():
		case <-ctx.Done():
			err = context.Cause(ctx)
			break wait
		}
		s.closeHandshaking()
		if s.connCount() == 0 {
			break
		}
		// Handlers are done: let GOAWAY-honouring clients close by
		// themselves (they then received every byte), bounded.
		t := time.NewTimer(s.linger)
		select {
		case <-t.C:
		case <-ctx.Done():
		case <-s.allConnsClosed():
		}
		t.Stop()
		if s.connCount() == 0 || ctx.Err() != nil {
			break
		}
		select {
		case <-s.handlersIdle():
			break wait // still idle after the linger: close the rest
		default: // a late request started; wait for it too
		}
	}
	s.closeConns()
	s.finish(nil)
	return err
}

// allConnsClosed returns a channel closed when no connection is left. The
// goroutine behind it ends as soon as that happens, which Drain forces.
func (s *Server) allConnsClosed() <-chan struct{} {
	ch := make(chan struct{})
	go func() {
		s.connWG.Wait()
		close(ch)
	}()
	return ch
}

// closeHandshaking closes the connections whose handshake has not completed
// and which carry no early data: nothing runs on them, and nobody may be
// there any more. quic-go drops a cancelled dial without a word, so a
// client's abandoned attempt (such as the losing dials of a hedged
// reconnection, see Client) stays open here until the handshake timeout;
// a client that is only now connecting meets a server going away and
// retries. Drain does not linger on them.
func (s *Server) closeHandshaking() {
	s.connsMu.Lock()
	var hs []*quic.Conn
	for c := range s.conns {
		select {
		case <-c.HandshakeComplete():
		default:
			if !c.ConnectionState().Used0RTT {
				hs = append(hs, c)
			}
		}
	}
	s.connsMu.Unlock()
	for _, c := range hs {
		_ = c.CloseWithError(quic.ApplicationErrorCode(h3.ErrCodeNoError), "server shutting down")
	}
}

func (s *Server) closeConns() {
	s.connsMu.Lock()
	conns := make([]*quic.Conn, 0, len(s.conns))
	for c := range s.conns {
		conns = append(conns, c)
	}
	s.connsMu.Unlock()
	for _, c := range conns {
		_ = c.CloseWithError(quic.ApplicationErrorCode(h3.ErrCodeNoError), "server shutting down")
	}
}

// Close closes the server immediately: listener, every connection (with
// H3_NO_ERROR; running handlers see their request context end) and the
// socket. It returns once everything ended.
func (s *Server) Close() error {
	s.life.Lock()
	if s.m.State() == Idle {
		s.m.fire(context.Background(), EvStop, nil)
		s.life.Unlock()
		s.finishOnce.Do(func() { close(s.finished) })
		return nil
	}
	s.closing.Store(true)
	if s.ln != nil {
		_ = s.ln.Close()
	}
	s.life.Unlock()
	if s.serving.Load() {
		<-s.acceptDone
	}
	s.closeConns()
	s.finish(nil)
	return nil
}

// finish tears down the transport and socket after every connection
// goroutine ended, then fires stop. Safe to call from Drain and Close.
func (s *Server) finish(reason error) {
	s.connWG.Wait()
	s.life.Lock()
	defer s.life.Unlock()
	s.finishOnce.Do(func() {
		if s.tr != nil {
			_ = s.tr.Close()
		}
		s.fec.close()
		if s.udp != nil {
			_ = s.udp.Close()
		}
		s.m.fire(context.Background(), EvStop, reason)
		close(s.finished)
	})
}
