package app

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/ptproxy/ptproxy/pipeline"
	"github.com/ptproxy/ptproxy/session"
	"github.com/ptproxy/ptproxy/session/fec"
)

// StepError is a fatal startup or main-loop error, printed as the original
// does: "failed at <step>: <cause>".
type StepError struct {
	Step string
	Err  error
}

func (e *StepError) Error() string { return "failed at " + e.Step + ": " + e.Err.Error() }
func (e *StepError) Unwrap() error { return e.Err }

func step(name string, err error) error {
	if err == nil {
		return nil
	}
	return &StepError{Step: name, Err: err}
}

// Instance is one running ptproxy, client or server. It owns every
// goroutine it starts; Drain and Close end them all.
type Instance struct {
	cfg *config.Config
	log *slog.Logger

	// runCtx ends everything at once (second signal, drain timeout);
	// drainCtx ends when a graceful drain starts.
	runCtx     context.Context
	cancelRun  context.CancelFunc
	drainCtx   context.Context
	startDrain context.CancelFunc

	wg sync.WaitGroup

	// client mode: one session per server, general.peer_hostname's first
	// (client is its session.Client); tunnel carries the requests.
	client   *session.Client
	sessions []*serverSession
	tunnel   pipeline.Tunnel
	lis      []*httpListener // general.http_bind_address first, then [[listeners]]
	ln       net.Listener    // the first listener's
	// listenerCert is the certificate of a TLS listener (tls.listener_cert;
	// nil: plain HTTP), replaced by a reload.
	listenerCert atomic.Pointer[tls.Certificate]

	// server mode
	server  *session.Server
	handler *pipeline.Handler
	// routesMu guards the origin groups and endpoints in force (routes.go),
	// which a reload replaces; stopHealth ends their health checks.
	routesMu   sync.RWMutex
	groups     []*pipeline.OriginGroup
	endpoints  []*pipeline.Endpoint
	stopHealth context.CancelFunc

	// reloadMu serialises reloads; live is the configuration in force
	// (cfg with what reloads switched; the rest needs a restart).
	reloadMu sync.Mutex
	live     *config.Config
	keyLog   io.Writer // SSLKEYLOGFILE, kept across reloads

	ready    chan struct{} // closed when the instance counts as started (systemd READY)
	stopOnce sync.Once

	// transitionHooks observe every session FSM transition (systemd status,
	// metrics). They are set before the session starts and only read after.
	transitionHooks []func(session.Transition)

	// observability
	started  time.Time
	metrics  *metrics
	inflight atomic.Int64
	// lastFailure is the reason of the latest failed attempt or lost
	// session, kept after recovery.
	lastFailure atomic.Pointer[string]
	admin       *http.Server
	adminLn     net.Listener
}

// observer is what the pipeline reports exchanges to: metrics, the
// in-flight count of /status and, when enabled, the access log.
func (in *Instance) observer(cfg *config.Config) pipeline.Observer {
	obs := observers{in.metrics, inflightCounter{&in.inflight}}
	if cfg.System.AccessLog {
		obs = append(obs, accessLog{in.log.With("log", "access")})
	}
	return obs
}

// onTransition fans a session transition out to the hooks; the session
// calls it from its actor goroutine, so hooks must not block.
func (in *Instance) onTransition(t session.Transition) {
	for _, h := range in.transitionHooks {
		h(t)
	}
}

// Option adjusts an instance before it starts (see WithTransitionHook).
type Option func(*Instance)

// WithTransitionHook adds a hook that observes every session transition
// (systemd STATUS). Hooks run on the session actor and must not block.
func WithTransitionHook(h func(session.Transition)) Option {
	return func(in *Instance) { in.transitionHooks = append(in.transitionHooks, h) }
}

// Start builds and starts an instance from cfg. The returned instance runs
// until Drain or Close.
func Start(cfg *config.Config, log *slog.Logger, opts ...Option) (*Instance, error) {
	in := &Instance{cfg: cfg, live: cfg, log: log, ready: make(chan struct{}), started: time.Now()}
	in.metrics = newMetrics(string(cfg.General.Mode))
	in.transitionHooks = append(in.transitionHooks, in.metrics.transition, in.recordFailure)
	for _, o := range opts {
		o(in)
	}
	in.runCtx, in.cancelRun = context.WithCancel(context.Background())
	in.drainCtx, in.startDrain = context.WithCancel(context.Background())
	for _, w := range cfg.Warnings() {
		log.Warn(w)
	}
	var err error
	if cfg.General.Mode == config.ModeClient {
		err = in.startClient()
	} else {
		err = in.startServer()
	}
	if err == nil && cfg.System.AdminAddress != "" {
		err = in.startAdmin(cfg.System.AdminAddress)
	}
	if err != nil {
		in.Close()
		return nil, err
	}
	return in, nil
}

func transportOf(cfg *config.Config) session.Transport {
	t := cfg.Transport
	return session.Transport{
		MaxIdleTimeout:       t.MaxIdleTimeout.Duration(),
		KeepAliveInterval:    t.KeepAliveInterval.Duration(),
		MaxConcurrentStreams: t.MaxConcurrentHTTPStreams,
		StreamReceiveWindow:  uint64(t.StreamReceiveWindow),
		ReceiveWindow:        uint64(t.ReceiveWindow),
		SocketReceiveBuffer:  int(t.SocketReceiveBufferSize),
		SocketSendBuffer:     int(t.SocketSendBufferSize),
		QlogDir:              t.QlogDir,
		FEC:                  t.FEC == config.FECOn || t.FEC == config.FECAuto,
		FECAuto:              t.FEC == config.FECAuto,
		FECGroupSize:         t.FECGroupSize,
		FECRepair:            fecRepair(cfg),
		FECPacketSize:        t.FECPacketSize,
	}
}

// fecRepair is transport.fec_repair for the FEC layer: with "auto" the
// ceiling of the adaptive repairs when set explicitly, else the layer's
// default ceiling, a quarter of the group (the default 2 would hold the
// repairs below what 3% loss needs).
func fecRepair(cfg *config.Config) int {
	if cfg.Transport.FEC == config.FECAuto && !cfg.IsSet("transport.fec_repair") {
		return fec.DefaultAutoRepair(cfg.Transport.FECGroupSize)
	}
	return cfg.Transport.FECRepair
}

// fecByServer returns the FEC counters of every server session (client),
// or of the one endpoint (server, under the name "").
func (in *Instance) fecByServer() []serverFEC {
	switch {
	case in.client != nil:
		out := make([]serverFEC, len(in.sessions))
		for i, s := range in.sessions {
			out[i] = serverFEC{Server: s.srv.Name, Stats: s.client.FECStats()}
		}
		return out
	case in.server != nil:
		return []serverFEC{{Stats: in.server.FECStats()}}
	}
	return nil
}

func limitsOf(cfg *config.Config) httpio.Limits {
	return httpio.Limits{
		MaxLineBytes:   cfg.Transport.MaxRequestLineBytes,
		MaxHeaderBytes: cfg.Transport.MaxHeaderBytes,
		MaxHeaderCount: cfg.Transport.MaxHeaderCount,
	}
}

// keyLogWarning is logged at startup, and printed by ptproxy check, when
// SSLKEYLOGFILE is set.
const keyLogWarning = "SSLKEYLOGFILE is set: TLS session secrets are written to it; anyone who reads it can decrypt captured traffic"

// tlsConfig builds the TLS config of cfg's mode; its error is the fatal
// startup message. ptproxy check calls it too, so that it refuses what
// startup refuses.
func tlsConfig(cfg *config.Config) (*tls.Config, error) {
	if cfg.General.Mode == config.ModeClient {
		return clientTLS(cfg, cfg.General.PeerHostname)
	}
	c, err := session.ServerTLS(cfg.TLS.CA, cfg.TLS.Cert, cfg.TLS.Key, cfg.General.PeerHostname, cfg.General.PeerHostnames...)
	return c, step("building server TLS config", err)
}

// keyLogTo makes c write TLS secrets to SSLKEYLOGFILE when that is set, for
// packet captures. The file stays open for the life of the process.
func (in *Instance) keyLogTo(c *tls.Config) error {
	path := os.Getenv("SSLKEYLOGFILE")
	if path == "" {
		return nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return step("opening key log", fmt.Errorf("SSLKEYLOGFILE %s: %w", path, err))
	}
	in.log.Warn(keyLogWarning, "file", path)
	c.KeyLogWriter = f
	in.keyLog = f
	return nil
}

func (in *Instance) startClient() error {
	cfg := in.cfg
	if cfg.TLS.ListenerCert != "" {
		if err := in.loadListenerCert(cfg); err != nil {
			return err
		}
	}
	// The first listener is general.http_bind_address (the original's
	// one); [[listeners]] add more, each with its default endpoint.
	specs := append([]config.Listener{{Address: cfg.General.HTTPBindAddress}}, cfg.Listeners...)
	for i, spec := range specs {
		ln, err := in.listen(cfg, spec.Address)
		if err != nil {
			return err
		}
		if i == 0 {
			ln = newProbeListener(ln) // the watchdog proves the accept loop alive (systemd.go)
			in.ln = ln
		}
		in.lis = append(in.lis, &httpListener{
			ln:       ln,
			name:     spec.Address,
			endpoint: spec.Endpoint,
			noDelay:  cfg.System.TCPNodelay,
			maxConn:  cfg.System.MaxConnections,
			log:      in.log,
		})
	}
	sessions, err := in.newSessions(cfg)
	if err != nil {
		return err
	}
	in.sessions = sessions
	in.client = sessions[0].client
	if len(sessions) == 1 {
		// One server: exactly the single-session tunnel of before.
		in.tunnel = tunnel{in.client}
	} else {
		mt := newMultiTunnel(sessions, cfg.General.ServerSelection, cfg.System.SessionWaitTimeout.Duration(), in.drainCtx.Done(), in.log)
		in.transitionHooks = append(in.transitionHooks, mt.transition)
		in.tunnel = mt
	}
	names := make([]string, len(sessions))
	for i, s := range sessions {
		names[i] = s.srv.Name
		in.metrics.addServer(s.srv.Name)
	}
	in.metrics.reg.MustRegister(newQUICCollector(sessions))
	in.metrics.reg.MustRegister(newFECCollector(in.fecByServer, true))
	for _, s := range sessions {
		in.wg.Go(func() {
			if err := s.client.Run(in.runCtx); err != nil && !errors.Is(err, context.Canceled) {
				in.log.Error("failed at main loop", "error", err, session.KeyPeer, s.srv.Name)
			}
		})
	}
	for _, l := range in.lis {
		l.router = pipeline.NewRouter(listenerRoutes(cfg, l.name), l.endpoint)
		l.opts.Store(in.clientOptions(cfg, l))
		in.wg.Go(func() { l.serve(in.runCtx) })
		in.log.Info("listening for HTTP/1.1", "address", l.ln.Addr().String(), "endpoint", l.endpoint)
	}
	if len(sessions) > 1 {
		in.log.Info("servers", "names", strings.Join(names, ","), "selection", string(cfg.General.ServerSelection))
	}
	if cfg.System.WaitForFirstAttempt {
		in.wg.Go(func() {
			waitFirstAttempts(sessions, in.runCtx.Done())
			in.markReady()
		})
	} else {
		in.markReady()
	}
	return nil
}

func (in *Instance) startServer() error {
	cfg := in.cfg
	tlsConf, err := tlsConfig(cfg)
	if err != nil {
		return err
	}
	if err := in.keyLogTo(tlsConf); err != nil {
		return err
	}
	groups, endpoints, err := in.buildRoutes(cfg)
	if err != nil {
		return err
	}
	handler := pipeline.NewHandler(in.serverOptions(cfg, endpoints))
	in.handler = handler
	srv, err := session.NewServer(session.ServerOptions{
		BindAddress: cfg.General.BindAddress,
		Port:        cfg.General.QUICPort,
		TLS:         tlsConf,
		Transport:   transportOf(cfg),
		Handler:     session.HandlerFunc(func(s *session.ServerStream) { handler.ServeStream(s) }),
		// The client relays caller heads up to its own bounds.
		MaxFieldSectionSize: fieldSectionSize(int64(cfg.Transport.MaxHeaderBytes), cfg.Transport.MaxHeaderCount),
		Logger:              in.log,
		PeerHostname:        cfg.General.PeerHostname,
		PeerIdentities:      cfg.PeerIdentities(),
		OnTransition:        in.onTransition,
	})
	if err := step("creating QUIC endpoint", err); err != nil {
		return err
	}
	if err := step("binding QUIC endpoint socket", srv.Listen()); err != nil {
		return err
	}
	in.server = srv
	in.metrics.addServer("")
	in.metrics.reg.MustRegister(newFECCollector(in.fecByServer, false))
	in.metrics.reg.MustRegister(newRouteCollector(in))
	in.useRoutes(groups, endpoints)
	in.wg.Go(func() {
		if err := srv.Serve(in.runCtx); err != nil && !errors.Is(err, context.Canceled) && !errors.Is(err, session.ErrClosed) {
			in.log.Error("failed at main loop", "error", err)
		}
	})
	in.markReady()
	return nil
}

// listenerRoutes are the [[routes]] of the listener named name.
func listenerRoutes(cfg *config.Config, name string) []pipeline.ClientRoute {
	var routes []pipeline.ClientRoute
	for _, r := range cfg.Routes {
		if r.Listener == "" || r.Listener == name {
			routes = append(routes, pipeline.ClientRoute{Host: r.Host, PathPrefix: r.PathPrefix, Endpoint: r.Endpoint, StripPrefix: r.StripPrefix})
		}
	}
	return routes
}

// listen opens one HTTP/1.1 listener of the client, with TLS when
// tls.listener_cert is set. A listener opened before a failure is closed
// by Close.
func (in *Instance) listen(cfg *config.Config, addr string) (net.Listener, error) {
	ln, err := net.Listen("tcp", addr)
	if err := step("binding listener socket "+addr, err); err != nil {
		return nil, err
	}
	if cfg.TLS.ListenerCert != "" {
		// The handshake runs on the connection's goroutine, at its first
		// read, never in the accept loop.
		ln = tls.NewListener(ln, &tls.Config{
			MinVersion: tls.VersionTLS12,
			NextProtos: []string{"http/1.1"},
			GetCertificate: func(*tls.ClientHelloInfo) (*tls.Certificate, error) {
				return in.listenerCert.Load(), nil
			},
		})
	}
	return ln, nil
}

// loadListenerCert loads tls.listener_cert and tls.listener_key for the
// TLS listener.
func (in *Instance) loadListenerCert(cfg *config.Config) error {
	cert, err := session.LoadKeyPair(cfg.TLS.ListenerCert, cfg.TLS.ListenerKey)
	if err == nil {
		in.listenerCert.Store(&cert)
	}
	return step("loading the listener's certificate (tls.listener_cert)", err)
}

// clientOptions are the pipeline options of the caller connections under
// cfg (client mode; in.client is set).
func (in *Instance) clientOptions(cfg *config.Config, l *httpListener) *pipeline.ClientOptions {
	return &pipeline.ClientOptions{
		Router:            l.router,
		Tunnel:            in.tunnel,
		AddForwarded:      cfg.System.AddForwarded,
		Limits:            limitsOf(cfg),
		HeaderReadTimeout: cfg.System.HeaderReadTimeout.Duration(),
		DefaultHost:       cfg.System.DefaultHost,
		Logger:            in.log,
		Draining:          in.drainCtx,
		Observer:          in.observer(cfg),
	}
}

// serverOptions are the pipeline options of the request streams under cfg
// (server mode).
func (in *Instance) serverOptions(cfg *config.Config, endpoints []*pipeline.Endpoint) *pipeline.ServerOptions {
	return &pipeline.ServerOptions{
		Endpoints:       endpoints,
		AddForwarded:    cfg.System.AddForwarded,
		UpstreamTimeout: cfg.System.UpstreamTimeout.Duration(),
		Logger:          in.log,
		Observer:        in.observer(cfg),
	}
}

func (in *Instance) markReady() {
	select {
	case <-in.ready:
	default:
		close(in.ready)
	}
}

// Ready is closed when the instance counts as started: the server listens;
// the client's first connection attempt ended (or at once without
// wait_for_first_attempt).
func (in *Instance) Ready() <-chan struct{} { return in.ready }

// closeListeners stops accepting on every listener.
func (in *Instance) closeListeners() {
	for _, l := range in.lis {
		l.ln.Close()
	}
}

// waitListeners waits for every caller connection to end.
func (in *Instance) waitListeners() {
	for _, l := range in.lis {
		l.wait()
	}
}

// HTTPAddrs are the addresses of every HTTP/1.1 listener (client mode),
// general.http_bind_address's first.
func (in *Instance) HTTPAddrs() []net.Addr {
	var out []net.Addr
	for _, l := range in.lis {
		out = append(out, l.ln.Addr())
	}
	return out
}

// HTTPAddr is the client's HTTP/1.1 listen address (nil in server mode).
func (in *Instance) HTTPAddr() net.Addr {
	if in.ln == nil {
		return nil
	}
	return in.ln.Addr()
}

// QUICAddr is the server's UDP address (nil in client mode).
func (in *Instance) QUICAddr() net.Addr {
	if in.server == nil {
		return nil
	}
	return in.server.Addr()
}

// Client is the session client of the first server (nil in server mode),
// for status reporting.
func (in *Instance) Client() *session.Client { return in.client }

// Drain stops taking new work, lets in-flight requests finish until ctx
// ends, then closes everything. Order: stop accepting, finish exchanges,
// close the QUIC session cleanly, stop the actors.
func (in *Instance) Drain(ctx context.Context) error {
	in.startDrain()
	var err error
	if in.client != nil {
		in.closeListeners()
		done := make(chan struct{})
		go func() { in.waitListeners(); close(done) }()
		select {
		case <-done:
		case <-ctx.Done():
			err = fmt.Errorf("drain: connections still busy: %w", context.Cause(ctx))
		}
		if derr := in.drainSessions(ctx); derr != nil && err == nil {
			err = fmt.Errorf("drain: %w", derr)
		}
	}
	if in.server != nil {
		if derr := in.server.Drain(ctx); derr != nil {
			err = fmt.Errorf("drain: %w", derr)
		}
		in.closeGroups()
	}
	in.Close()
	return err
}

// Close stops everything at once and waits for the goroutines to end.
func (in *Instance) Close() error {
	in.stopOnce.Do(func() {
		in.startDrain()
		in.cancelRun()
		in.closeListeners()
		if in.server != nil {
			in.server.Close()
		}
		in.stopAdmin()
		in.wg.Wait()
		in.waitListeners()
		in.closeGroups()
	})
	return nil
}

// closeGroups closes the idle origin connections of every group.
func (in *Instance) closeGroups() {
	in.routesMu.RLock()
	defer in.routesMu.RUnlock()
	for _, g := range in.groups {
		g.Close()
	}
}

// tunnel adapts the session client to the pipeline's Tunnel, mapping "no
// session" and "draining" to the errors the pipeline answers with 503. The
// client itself waits up to session_wait_timeout for a session (ended at
// once by a drain or the caller hanging up) and sends again requests the
// server never processed (see session.Client.Open).
type tunnel struct{ c *session.Client }

func (t tunnel) Open(ctx context.Context, h *h3.Head, bodiless bool) (pipeline.TunnelStream, error) {
	x, err := t.c.Open(ctx, h, bodiless)
	if err != nil {
		return nil, tunnelErr(err)
	}
	return tunnelStream{x}, nil
}

// tunnelStream is a session exchange whose head errors are mapped too (a
// refused request that cannot be sent again is a 503).
type tunnelStream struct{ *session.Exchange }

func (s tunnelStream) ReadHead() (*h3.Head, error) {
	h, err := s.Exchange.ReadHead()
	return h, tunnelErr(err)
}

func tunnelErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, session.ErrNotReady):
		return unavailable{kind: pipeline.ErrTunnelDown, err: err}
	case errors.Is(err, session.ErrDraining):
		return unavailable{kind: pipeline.ErrDraining, err: err}
	default:
		return err
	}
}

// fieldSectionSize converts an HTTP/1.1 head bound into the HTTP/3 field
// section size that carries the same head (RFC 9114 4.2.2 counts 32 bytes
// per field on top of name and value; the pseudo-fields add a few).
func fieldSectionSize(headBytes int64, fields int) uint64 {
	if headBytes <= 0 {
		return 0
	}
	if fields <= 0 {
		fields = int(headBytes / 4) // the shortest field line, "a:\r\n"
	}
	return uint64(headBytes) + 32*uint64(fields+5)
}

// unavailable carries the session's reason text while matching the
// pipeline's sentinel.
type unavailable struct {
	kind error
	err  error
}

func (u unavailable) Error() string   { return u.err.Error() }
func (u unavailable) Unwrap() []error { return []error{u.kind, u.err} }
