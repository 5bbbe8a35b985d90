package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/http3"
)

// ClientOptions configure a [Client]. Only TLS and PeerHostname are required.
type ClientOptions struct {
	PeerHostname    string        // SNI and the name verified (in TLS, see ClientTLS); logged as peer
	ConnectAddress  string        // host or IP dialled; default PeerHostname; resolved at EVERY attempt, one address picked at random
	Port            int           // UDP port dialled; default 20010
	BindAddress     string        // local IP of the UDP socket (port 0 = ephemeral); default "::"
	TLS             *tls.Config   // from ClientTLS
	Transport       Transport     // QUIC knobs
	ConnectInterval time.Duration // ceiling of the wait between failed attempts; default 1s
	Logger          *slog.Logger  // default slog.Default()
	OnTransition    func(Transition)
	// KeyLogWriter, when non-nil, receives TLS secrets (SSLKEYLOGFILE).
	KeyLogWriter io.Writer
	// Resolver resolves ConnectAddress; default net.DefaultResolver (an IP
	// literal is used as is). Injectable for tests.
	Resolver func(ctx context.Context, host string) ([]netip.Addr, error)
}

// Client keeps one persistent HTTP/3 session to the server ptproxy and
// re-dials it forever. It is an actor: [Client.Run] owns the loop, the QUIC
// transport and every connection; other methods only read snapshots or post
// to the loop.
type Client struct {
	o        ClientOptions
	log      *slog.Logger
	m        *machine // fired only by the Run goroutine
	udp      *net.UDPConn
	tr       *quic.Transport
	fec      *fecLayer // FEC below QUIC, or the watcher of a peer's FEC (fecconn.go)
	quicConf *quic.Config
	resolve  func(ctx context.Context, host string) ([]netip.Addr, error)
	clock    clock
	bo       *backoff
	dialed   bool // Run loop only: the transport was initialised by a Dial

	// cur is the published session (nil when none): written by Run, read by
	// RoundTrip and the stats accessors.
	cur atomic.Pointer[clientSession]
	// early is the session of the attempt in progress while its handshake
	// is not complete (0-RTT): only safe, bodiless GET/HEAD requests use it
	// (see RoundTrip). Written by Run and connect, read by RoundTrip.
	early atomic.Pointer[earlySession]

	// probeCh is received from by every blocking select of Run: a send
	// proves the actor loop is alive (Probe, the systemd watchdog).
	probeCh chan struct{}
	// testHookReady, when set, runs on the Run goroutine right after a
	// session was established (tests use it to stall the actor).
	testHookReady atomic.Pointer[func()]
	// testHookEarly, when set, runs on the attempt's goroutine right after
	// an early (0-RTT) session was published.
	testHookEarly atomic.Pointer[func()]

	mu       sync.Mutex // guards the three fields below
	inflight int        // requests from RoundTrip until the body hit EOF or was closed
	draining bool       // set by Drain and when Run stops; RoundTrip refuses then
	idleCh   chan struct{}

	drainCh   chan struct{} // closed once by Drain; Run selects on it
	drainOnce sync.Once
	firstDone chan struct{} // closed once when the first attempt ended
	firstOnce sync.Once
	started   atomic.Bool
	done      chan struct{} // closed when Run returned
	closeOnce sync.Once     // socket closing (Run's defer or Close before Run)
}

// clientSession is one published QUIC connection with its HTTP/3 layer.
type clientSession struct {
	gen  uint64
	conn *quic.Conn
	cc   *http3.ClientConn
}

// earlySession is a connection whose TLS handshake is not complete yet but
// which can already carry 0-RTT data (resumed session with early data).
// settled is closed when the attempt ended, after cur was published (on
// success), so a request waiting on it then finds the ready session.
type earlySession struct {
	conn    *quic.Conn
	cc      *http3.ClientConn
	settled chan struct{}
}

// NewClient validates o and binds the UDP socket now, so bind errors surface
// at startup. Run must then be called (it closes the socket when it
// returns); if Run will not be called, call Close.
func NewClient(o ClientOptions) (*Client, error) {
	if o.TLS == nil {
		return nil, errors.New("session: ClientOptions.TLS is required")
	}
	if o.PeerHostname == "" {
		return nil, errors.New("session: ClientOptions.PeerHostname is required")
	}
	if o.ConnectAddress == "" {
		o.ConnectAddress = o.PeerHostname
	}
	if o.Port == 0 {
		o.Port = DefaultPort
	}
	if o.BindAddress == "" {
		o.BindAddress = DefaultBindAddress
	}
	if o.ConnectInterval <= 0 {
		o.ConnectInterval = DefaultConnectInterval
	}
	if o.Logger == nil {
		o.Logger = slog.Default()
	}
	o.TLS = withKeyLog(o.TLS, o.KeyLogWriter)
	c := &Client{
		o:         o,
		log:       o.Logger,
		m:         newMachine(o.Logger, o.PeerHostname, o.OnTransition),
		quicConf:  clientQUICConfig(o.Transport, o.ConnectInterval),
		probeCh:   make(chan struct{}),
		resolve:   o.Resolver,
		clock:     realClock{},
		bo:        newBackoff(o.ConnectInterval),
		drainCh:   make(chan struct{}),
		firstDone: make(chan struct{}),
		done:      make(chan struct{}),
	}
	if c.resolve == nil {
		c.resolve = defaultResolve
	}
	udp, err := listenUDP(o.BindAddress, 0)
	if err != nil {
		return nil, fmt.Errorf("binding QUIC endpoint socket: %w", err)
	}
	c.udp = udp
	if c.tr, c.fec, err = newQUICTransport(udp, o.Transport, o.Logger); err != nil {
		udp.Close()
		return nil, fmt.Errorf("creating QUIC endpoint: %w", err)
	}
	c.fec.startWatch(c.tr, o.Logger)
	return c, nil
}

func defaultResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
}

// State returns the current state (lock-free snapshot).
func (c *Client) State() State { return c.m.State() }

// Since returns when the current state was entered.
func (c *Client) Since() time.Time { return c.m.Since() }

// LastError returns the latest attempt or session failure, nil while ready.
func (c *Client) LastError() error { return c.m.LastError() }

// FirstAttemptDone is closed when the first attempt ended, successfully or
// not (systemd READY with wait_for_first_attempt), or when Run stopped.
func (c *Client) FirstAttemptDone() <-chan struct{} { return c.firstDone }

// InFlight returns the number of requests in flight over the tunnel.
func (c *Client) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight
}

// LocalAddr is the bound UDP address.
func (c *Client) LocalAddr() net.Addr { return c.udp.LocalAddr() }

// ConnStats returns the statistics of the current session, if any.
func (c *Client) ConnStats() (quic.ConnectionStats, bool) {
	s := c.cur.Load()
	if s == nil {
		return quic.ConnectionStats{}, false
	}
	return s.conn.ConnectionStats(), true
}

// errFirstAttempt is the NotReadyError reason before any attempt ended.
var errFirstAttempt = errors.New("first connection attempt in progress")

// RoundTrip sends req over the current session. It never waits for a
// session: with none it returns a [*NotReadyError] at once (errors.Is
// ErrNotReady), and after Drain or stop it returns ErrDraining. The request
// counts as in flight until the response body hits EOF or is closed.
func (c *Client) RoundTrip(req *http.Request) (*http.Response, error) {
	c.mu.Lock()
	if c.draining {
		c.mu.Unlock()
		return nil, ErrDraining
	}
	s := c.cur.Load()
	if s == nil {
		// Only a request that may go as 0-RTT early data rides an attempt
		// in progress; every other one is answered at once, as without a
		// session (no queueing, as the original).
		if e := c.early.Load(); e != nil && Early0RTT(req) {
			c.inflight++
			c.mu.Unlock()
			return c.roundTripEarly(e, req)
		}
		c.mu.Unlock()
		return nil, c.notReady()
	}
	c.inflight++
	c.mu.Unlock()

	resp, err := s.cc.RoundTrip(req)
	if err != nil && isGoAway(err) {
		// The server sent GOAWAY (it drains): the request was not sent.
		// Same answer as with no session: 503, not 502.
		c.release()
		return nil, &NotReadyError{Reason: ErrServerGoaway}
	}
	return c.tracked(resp, err)
}

// isGoAway reports whether err says the request was refused unprocessed
// because the server is going away: http3's refusal to open a request
// stream after the server's GOAWAY (RFC 9114 5.2; quic-go does not export
// that error, so its text is matched), or the server's H3_REQUEST_REJECTED
// for a stream it received after sending GOAWAY. TestGoAwayIs503 pins it.
func isGoAway(err error) bool {
	if se, ok := errors.AsType[*quic.StreamError](err); ok && se.ErrorCode == quic.StreamErrorCode(http3.ErrCodeRequestRejected) {
		return true
	}
	return strings.Contains(err.Error(), "connection in graceful shutdown")
}

func (c *Client) notReady() error {
	reason := c.m.LastError()
	if reason == nil {
		reason = errFirstAttempt
	}
	return &NotReadyError{Reason: reason}
}

// Early0RTT reports whether req may be sent as 0-RTT early data: only the
// safe methods GET and HEAD (the only ones quic-go's http3 can send early),
// and only without a body, so a retry after a 0-RTT rejection is exact.
// Early data can be replayed by an attacker; a replayed GET or HEAD is
// harmless by RFC 9110's definition of safe methods, a replayed POST is not.
func Early0RTT(req *http.Request) bool {
	if req.Method != http.MethodGet && req.Method != http.MethodHead {
		return false
	}
	return req.ContentLength == 0 && (req.Body == nil || req.Body == http.NoBody)
}

// roundTripEarly sends req, which Early0RTT allows, as 0-RTT early data over
// a session whose handshake is in progress. If the attempt then fails the
// request gets ErrNotReady (503), as if it had come a moment earlier; if the
// server rejected 0-RTT it is retried once, exactly, on the session that
// follows (rejected early data never reached the server's application). The
// in-flight slot is already taken.
func (c *Client) roundTripEarly(e *earlySession, req *http.Request) (*http.Response, error) {
	r := *req
	r.Method = http3.MethodGet0RTT
	if req.Method == http.MethodHead {
		r.Method = http3.MethodHead0RTT
	}
	resp, err := e.cc.RoundTrip(&r)
	if err == nil {
		resp.Request = req
		return c.tracked(resp, nil)
	}
	select {
	case <-e.settled:
	case <-req.Context().Done():
		c.release()
		return nil, req.Context().Err()
	}
	s := c.cur.Load()
	if s == nil {
		c.release()
		return nil, c.notReady()
	}
	if !errors.Is(err, quic.Err0RTTRejected) {
		return c.tracked(nil, err)
	}
	resp, err = s.cc.RoundTrip(req)
	return c.tracked(resp, err)
}

// tracked releases the in-flight slot on error, or ties it to the body.
func (c *Client) tracked(resp *http.Response, err error) (*http.Response, error) {
	if err != nil {
		c.release()
		return nil, err
	}
	if resp.Body == nil {
		c.release()
		return resp, nil
	}
	resp.Body = &trackedBody{ReadCloser: resp.Body, release: c.release}
	return resp, nil
}

func (c *Client) release() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.inflight--
	if c.inflight == 0 && c.idleCh != nil {
		close(c.idleCh)
		c.idleCh = nil
	}
}

// trackedBody releases its in-flight slot once, at EOF or Close.
type trackedBody struct {
	io.ReadCloser
	release func()
	once    sync.Once
}

func (b *trackedBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err != nil {
		b.once.Do(b.release)
	}
	return n, err
}

func (b *trackedBody) Close() error {
	err := b.ReadCloser.Close()
	b.once.Do(b.release)
	return err
}

// Drain stops taking new requests (ErrDraining), lets in-flight requests
// finish, then closes the session with H3_NO_ERROR and stops Run. It returns
// when Run has returned, or with ctx's error when ctx ends first (Run keeps
// waiting for in-flight requests until its own context ends).
func (c *Client) Drain(ctx context.Context) error {
	c.mu.Lock()
	c.draining = true
	c.mu.Unlock()
	c.drainOnce.Do(func() { close(c.drainCh) })
	if !c.started.Load() {
		return nil
	}
	select {
	case <-c.done:
		return nil
	case <-ctx.Done():
		return context.Cause(ctx)
	}
}

// Close releases the socket when Run was never started. While Run runs,
// cancel Run's context instead.
func (c *Client) Close() error {
	if c.started.CompareAndSwap(false, true) {
		close(c.done)
		c.closeSockets()
		c.m.fire(context.Background(), EvStop, nil)
	}
	return nil
}

// inflightIdle returns a channel closed when no request is in flight.
func (c *Client) inflightIdle() <-chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch := make(chan struct{})
	if c.inflight == 0 {
		close(ch)
	} else {
		if c.idleCh != nil {
			return c.idleCh
		}
		c.idleCh = ch
	}
	return ch
}

func (c *Client) closeSockets() {
	c.closeOnce.Do(func() {
		c.mu.Lock()
		c.draining = true
		c.mu.Unlock()
		c.tr.Close()
		c.fec.close()
		c.udp.Close()
	})
}

func (c *Client) markFirstDone() { c.firstOnce.Do(func() { close(c.firstDone) }) }

// Probe proves the actor loop is alive: it returns nil once Run's loop took
// the probe from one of its blocking selects (backoff wait, connecting,
// ready, draining), ErrClosed after Run returned, and an error when ctx ends
// first (the loop is stuck). Every wait in Run is bounded or selects on the
// probe, so a healthy loop answers within a scheduling delay.
func (c *Client) Probe(ctx context.Context) error {
	select {
	case c.probeCh <- struct{}{}:
		return nil
	case <-c.done:
		return ErrClosed
	case <-ctx.Done():
		return fmt.Errorf("session client loop did not answer (state %s): %w", c.State(), context.Cause(ctx))
	}
}

// Run owns the connection loop. It returns nil after a Drain completed, or
// ctx's cause after ctx ended; in both cases everything it started has ended,
// the socket is closed and the state is stopped.
func (c *Client) Run(ctx context.Context) error {
	if !c.started.CompareAndSwap(false, true) {
		return ErrClosed
	}
	defer close(c.done)
	defer c.markFirstDone()
	defer c.closeSockets()

	var (
		delay      time.Duration // wait before the next attempt
		attempt    int           // attempts since the last established session
		gen        uint64        // generation of the last published session
		buffersSet bool
	)
	for {
		// state: idle
		if delay > 0 {
			ch, stop := c.clock.After(delay)
		backoffWait:
			for {
				select {
				case <-ch:
					break backoffWait
				case <-ctx.Done():
					stop()
					break backoffWait
				case <-c.drainCh:
					stop()
					break backoffWait
				case <-c.probeCh:
				}
			}
		}
		if err := c.stopIfAsked(ctx, nil); err != errContinue {
			return err
		}

		attempt++
		c.m.attempt = attempt
		c.m.fire(ctx, EvDial, nil)
		s, err := c.connectServingProbes(ctx)
		if !buffersSet && c.dialed {
			// quic-go sized the buffers when the transport initialised
			// during the first Dial; now apply the user's values.
			buffersSet = true
			applySocketBuffers(c.udp, c.o.Transport, c.log)
		}
		if err != nil {
			c.settleEarly()
			if err := c.stopIfAsked(ctx, nil); err != errContinue {
				return err
			}
			c.m.fire(ctx, EvFail, err)
			c.markFirstDone()
			delay = c.bo.next()
			continue
		}
		if err := c.stopIfAsked(ctx, s); err != errContinue {
			c.settleEarly()
			return err
		}

		gen++
		s.gen = gen
		c.cur.Store(s)
		c.settleEarly()
		c.m.attempt = attempt
		c.m.fire(ctx, EvEstablished, nil)
		c.markFirstDone()
		c.bo.reset()
		attempt = 0
		c.m.attempt = 0
		if h := c.testHookReady.Load(); h != nil {
			(*h)()
		}

		// state: ready. Only the current session's context is watched, so
		// a message from an older generation cannot reach the loop.
	ready:
		for {
			select {
			case <-s.conn.Context().Done():
				c.cur.CompareAndSwap(s, nil)
				c.m.fire(ctx, EvLost, lostReason(context.Cause(s.conn.Context())))
				delay = 0 // retry at once: the server usually restarts
				break ready
			case <-ctx.Done():
				return c.stopReady(ctx, s)
			case <-c.drainCh:
				return c.stopReady(ctx, s)
			case <-c.probeCh:
			}
		}
	}
}

// settleEarly unpublishes the early session of the attempt that just ended
// and wakes the requests waiting for it (after cur was published).
func (c *Client) settleEarly() {
	if e := c.early.Swap(nil); e != nil {
		close(e.settled)
	}
}

type connectResult struct {
	s      *clientSession
	err    error
	dialed bool
}

// connectServingProbes runs one attempt in a goroutine and answers probes
// while it runs; the attempt itself is bounded (see connect).
func (c *Client) connectServingProbes(ctx context.Context) (*clientSession, error) {
	res := make(chan connectResult, 1)
	go func() {
		s, dialed, err := c.connect(ctx)
		res <- connectResult{s: s, err: err, dialed: dialed}
	}()
	for {
		select {
		case r := <-res:
			if r.dialed {
				c.dialed = true
			}
			return r.s, r.err
		case <-c.probeCh:
		}
	}
}

// errContinue is a sentinel of stopIfAsked: nothing asked to stop.
var errContinue = errors.New("continue")

// stopIfAsked ends the loop when ctx ended or Drain was called, from the
// idle or connecting state. s is a just-established session to close.
func (c *Client) stopIfAsked(ctx context.Context, s *clientSession) error {
	select {
	case <-ctx.Done():
		if s != nil {
			s.close()
		}
		c.m.fire(ctx, EvStop, context.Cause(ctx))
		return context.Cause(ctx)
	case <-c.drainCh:
		if s != nil {
			s.close()
		}
		c.m.fire(ctx, EvDrain, nil)
		c.m.fire(ctx, EvStop, nil)
		return nil
	default:
		return errContinue
	}
}

// stopReady ends the loop from the ready state: on drain it waits for the
// in-flight requests first (or until ctx ends or the session dies).
func (c *Client) stopReady(ctx context.Context, s *clientSession) error {
	if ctx.Err() == nil {
		c.m.fire(ctx, EvDrain, nil)
		idle := c.inflightIdle()
	wait:
		for {
			select {
			case <-idle:
				break wait
			case <-ctx.Done():
				break wait
			case <-s.conn.Context().Done():
				break wait
			case <-c.probeCh:
			}
		}
	}
	c.cur.CompareAndSwap(s, nil)
	s.close()
	if err := ctx.Err(); err != nil {
		c.m.fire(ctx, EvStop, context.Cause(ctx))
		return context.Cause(ctx)
	}
	c.m.fire(ctx, EvStop, nil)
	return nil
}

func (s *clientSession) close() {
	_ = s.cc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
}

// connect performs one attempt: resolve, pick an address at random, dial,
// set up HTTP/3 and wait for the server's SETTINGS. Waiting for SETTINGS
// matters with mutual TLS 1.3: the client's handshake completes before the
// server has checked the client certificate, so a refused client would
// otherwise look established for a moment. The server sends SETTINGS only
// once it accepted us.
//
// 0-RTT: the dial is DialEarly. When the TLS session cache holds a ticket
// with early data for this server, DialEarly returns before the handshake
// completed; the connection is then published as the early session, which
// RoundTrip uses for bodiless GET/HEAD only (see Early0RTT). If the server
// rejects the early data (it restarted and lost its ticket keys, or its
// settings changed), the connection continues as a 1-RTT connection
// (NextConnection) with a fresh HTTP/3 layer. dialed reports whether a
// dial was started (the transport was initialised).
func (c *Client) connect(ctx context.Context) (_ *clientSession, dialed bool, _ error) {
	bound := c.quicConf.HandshakeIdleTimeout
	if bound <= 0 {
		bound = 5 * time.Second // quic-go's default HandshakeIdleTimeout
	}
	// quic-go bounds the handshake itself (idle timeout, 2x overall); the
	// extra margin only covers resolution and the SETTINGS wait.
	actx, cancel := context.WithTimeoutCause(ctx, 2*bound, fmt.Errorf("attempt timed out after %v", 2*bound))
	defer cancel()
	stop := context.AfterFunc(drainContext{c.drainCh}, cancel)
	defer stop()

	addr, err := c.pickAddr(actx)
	if err != nil {
		return nil, false, err
	}
	conn, err := c.tr.DialEarly(actx, addr, c.o.TLS, c.quicConf)
	if err != nil {
		if cause := context.Cause(actx); cause != nil && actx.Err() != nil {
			return nil, true, cause
		}
		return nil, true, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	cc := c.newClientConn(conn)
	early := false
	select {
	case <-conn.HandshakeComplete():
	default:
		early = true
		c.early.Store(&earlySession{conn: conn, cc: cc, settled: make(chan struct{})})
		if h := c.testHookEarly.Load(); h != nil {
			(*h)()
		}
	}
	fail := func(err error) (*clientSession, bool, error) {
		_ = conn.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		return nil, true, err
	}
	if early {
		select {
		case <-conn.HandshakeComplete():
		case <-conn.Context().Done():
			return nil, true, fmt.Errorf("connecting to %s: %w", addr, context.Cause(conn.Context()))
		case <-actx.Done():
			return fail(context.Cause(actx))
		}
		if !conn.ConnectionState().Used0RTT {
			c.log.Debug("0-RTT rejected by the server; continuing with 1-RTT", KeyPeer, c.o.PeerHostname)
			next, err := conn.NextConnection(actx)
			if err != nil {
				return fail(fmt.Errorf("connecting to %s: %w", addr, err))
			}
			conn = next
			cc = c.newClientConn(conn)
		}
	}
	select {
	case <-cc.ReceivedSettings():
		return &clientSession{conn: conn, cc: cc}, true, nil
	case <-conn.Context().Done():
		return nil, true, fmt.Errorf("connecting to %s: %w", addr, context.Cause(conn.Context()))
	case <-actx.Done():
		return fail(context.Cause(actx))
	}
}

func (c *Client) newClientConn(conn *quic.Conn) *http3.ClientConn {
	return (&http3.Transport{DisableCompression: true, Logger: c.log}).NewClientConn(conn)
}

func (c *Client) pickAddr(ctx context.Context) (*net.UDPAddr, error) {
	host := c.o.ConnectAddress
	addrs, err := c.resolve(ctx, host)
	if err != nil {
		return nil, fmt.Errorf("resolving %s: %w", host, err)
	}
	bind, _ := netip.ParseAddr(c.o.BindAddress)
	var usable []netip.Addr
	for _, a := range addrs {
		a = a.Unmap()
		switch {
		case bind.Is4() && !a.Is4():
			continue // an IPv4 socket cannot reach IPv6
		case bind.Is6() && !bind.IsUnspecified() && a.Is4():
			continue // a specific IPv6 address cannot reach IPv4
		}
		usable = append(usable, a)
	}
	if len(usable) == 0 {
		return nil, fmt.Errorf("resolving %s: no address usable from bind address %s (got %v)", host, c.o.BindAddress, addrs)
	}
	a := usable[rand.IntN(len(usable))]
	c.log.Debug("dialling", KeyAddress, net.JoinHostPort(a.String(), strconv.Itoa(c.o.Port)), KeyPeer, c.o.PeerHostname)
	return net.UDPAddrFromAddrPort(netip.AddrPortFrom(a, uint16(c.o.Port))), nil
}

// drainContext adapts the drain channel to a context for context.AfterFunc.
type drainContext struct{ ch chan struct{} }

func (d drainContext) Deadline() (time.Time, bool) { return time.Time{}, false }
func (d drainContext) Done() <-chan struct{}       { return d.ch }
func (d drainContext) Err() error {
	select {
	case <-d.ch:
		return context.Canceled
	default:
		return nil
	}
}
func (d drainContext) Value(any) any { return nil }
