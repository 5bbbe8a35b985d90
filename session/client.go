package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"

	"github.com/quic-go/quic-go"
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
	// SessionWait bounds how long RoundTrip waits for a session when none
	// is usable (session_wait_timeout); 0 answers ErrNotReady at once.
	SessionWait time.Duration
	// ZeroRTT lets a reconnection resume with 0-RTT early data, carrying
	// bodiless GET/HEAD requests before the handshake completed. Off by
	// default: in quic-go v0.65 opening a stream during 0-RTT races with
	// the handshake (quic-go issue 4303, a data race on the peer's
	// transport parameters), which -race builds report. Without it the
	// client dials with Dial (TLS resumption still works, no early data).
	ZeroRTT bool
	// MaxFieldSectionSize bounds a response head from the server (RFC 9114
	// 4.2.2 size); 0 means the codec's default (64 KiB). The composition
	// root passes transport.max_response_header_bytes, the bound the
	// server applies to the origin's heads.
	MaxFieldSectionSize uint64
	Logger              *slog.Logger // default slog.Default()
	OnTransition        func(Transition)
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
	o ClientOptions
	// tls is the config of the next dial (o.TLS until SetTLS).
	tls      atomic.Pointer[tls.Config]
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
	// (see RoundTrip, earlySession). Written by the attempt's primary dial,
	// read by RoundTrip.
	early atomic.Pointer[earlySession]

	// probeCh is received from by every blocking select of Run: a send
	// proves the actor loop is alive (Probe, the systemd watchdog).
	probeCh chan struct{}
	// testHookReady, when set, runs on the Run goroutine right after a
	// session was established (tests use it to stall the actor).
	testHookReady atomic.Pointer[func()]
	// testHookSent, when set, runs on the requester's goroutine right
	// after a request head was written on a session.
	testHookSent atomic.Pointer[func()]
	// testHookHead, when set, runs between the request head's write and
	// the FIN of a bodiless request, with its stream (tests).
	testHookHead atomic.Pointer[func(*quic.Stream)]
	// testHookEarly, when set, runs on the attempt's goroutine right after
	// an early (0-RTT) session was published.
	testHookEarly atomic.Pointer[func()]
	// testNoHedge disables hedged dials (tests that need the primary dial
	// to carry the reconnection).
	testNoHedge atomic.Bool

	mu       sync.Mutex // guards the five fields below
	inflight int        // requests from RoundTrip until the body hit EOF or was closed
	waiting  int        // requests in RoundTrip waiting for a session
	draining bool       // set by Drain and when Run stops; RoundTrip refuses then
	idleCh   chan struct{}
	// sessCh is closed (and replaced) whenever a session or an early
	// session is published: the broadcast that wakes waiting requests.
	sessCh chan struct{}

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
	h3   *h3Conn
	// refused is set once a request learned that this session takes no new
	// requests (GOAWAY, connection gone); requests then wait for the next
	// session. Run still owns the session until its connection ends.
	refused atomic.Pointer[errBox]
	// active counts the exchanges on this session (Open to Close); away is
	// set when the server's GOAWAY came. The session is closed (H3_NO_ERROR)
	// once both hold, so the draining server knows at once that the client
	// received every byte instead of waiting out its linger.
	active atomic.Int64
	away   atomic.Bool
}

// goneAway runs when the server's GOAWAY arrived: no new request goes on
// s, and s closes once its last exchange ended.
func (s *clientSession) goneAway() {
	s.refuse(ErrServerGoaway)
	s.away.Store(true)
	if s.active.Load() == 0 {
		s.h3.close("")
	}
}

// exchangeDone ends one exchange on s (see goneAway).
func (s *clientSession) exchangeDone() {
	if s.active.Add(-1) == 0 && s.away.Load() {
		s.h3.close("")
	}
}

// usable reports whether new requests may be sent on s.
func (s *clientSession) usable() bool {
	if s.refused.Load() != nil || s.conn.Context().Err() != nil {
		return false
	}
	select {
	case <-s.h3.GoAway():
		s.refuse(ErrServerGoaway)
		return false
	default:
		return true
	}
}

func (s *clientSession) refuse(reason error) { s.refused.CompareAndSwap(nil, &errBox{reason}) }

// refusal is why s takes no new requests, nil when it does.
func (s *clientSession) refusal() error {
	if b := s.refused.Load(); b != nil {
		return b.err
	}
	if s.conn.Context().Err() != nil {
		return lostReason(context.Cause(s.conn.Context()))
	}
	select {
	case <-s.h3.GoAway():
		return ErrServerGoaway
	default:
		return nil
	}
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
		sessCh:    make(chan struct{}),
	}
	c.tls.Store(o.TLS)
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

// State returns the current state (lock-free snapshot).
func (c *Client) State() State { return c.m.State() }

// Since returns when the current state was entered.
func (c *Client) Since() time.Time { return c.m.Since() }

// LastError returns the latest attempt or session failure, nil while ready.
func (c *Client) LastError() error { return c.m.LastError() }

// Usable reports whether a request opened now would be sent at once: a
// session is published, it takes new requests (no GOAWAY from the server,
// connection not gone) and the client is not draining. State can still
// say ready while the session refuses (between the server's GOAWAY and the
// connection's end); a caller choosing among several clients asks this
// instead, so that it never waits on a server that is going away.
func (c *Client) Usable() bool {
	c.mu.Lock()
	draining := c.draining
	c.mu.Unlock()
	s := c.cur.Load()
	return !draining && s != nil && s.usable()
}

// FirstAttemptDone is closed when the first attempt ended, successfully or
// not (systemd READY with wait_for_first_attempt), or when Run stopped.
func (c *Client) FirstAttemptDone() <-chan struct{} { return c.firstDone }

// InFlight returns the number of requests in flight over the tunnel.
func (c *Client) InFlight() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inflight
}

// Waiting returns the number of requests waiting for a session (see
// ClientOptions.SessionWait); they are not in flight.
func (c *Client) Waiting() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.waiting
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
		lostRTT    time.Duration // smoothed RTT of the session lost last (0: none)
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
		hedgeRTT := time.Duration(0)
		if attempt <= hedgeAttempts {
			hedgeRTT = lostRTT
		}
		s, early, err := c.connectServingProbes(ctx, hedgeRTT)
		if !buffersSet && c.dialed {
			// quic-go sized the buffers when the transport initialised
			// during the first Dial; now apply the user's values.
			buffersSet = true
			applySocketBuffers(c.udp, c.o.Transport, c.log)
		}
		if err != nil {
			settle(early)
			if err := c.stopIfAsked(ctx, nil); err != errContinue {
				return err
			}
			c.m.fire(ctx, EvFail, err)
			c.markFirstDone()
			delay = c.bo.next()
			continue
		}
		if err := c.stopIfAsked(ctx, s); err != errContinue {
			settle(early)
			return err
		}

		gen++
		s.gen = gen
		c.cur.Store(s)
		settle(early)
		c.notifySession()
		lostRTT = 0
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
				// lost first: its reason is the answer of a request that
				// finds no session (s itself is unusable meanwhile).
				c.m.fire(ctx, EvLost, lostReason(context.Cause(s.conn.Context())))
				c.cur.CompareAndSwap(s, nil)
				delay = 0 // retry at once: the server usually restarts
				lostRTT = s.conn.ConnectionStats().SmoothedRTT
				s.h3.wait()
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

// settle wakes the requests that rode the attempt's early session and
// were not answered on it (after cur was published, so they find it).
func settle(e *earlySession) {
	if e != nil {
		e.settle()
	}
}

type connectResult struct {
	s      *clientSession
	early  *earlySession
	err    error
	dialed bool
}

// connectServingProbes runs one attempt in a goroutine and answers probes
// while it runs; the attempt itself is bounded (see connect).
func (c *Client) connectServingProbes(ctx context.Context, hedgeRTT time.Duration) (*clientSession, *earlySession, error) {
	res := make(chan connectResult, 1)
	go func() {
		s, early, dialed, err := c.connect(ctx, hedgeRTT)
		res <- connectResult{s: s, early: early, err: err, dialed: dialed}
	}()
	for {
		select {
		case r := <-res:
			if r.dialed {
				c.dialed = true
			}
			return r.s, r.early, r.err
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
	s.h3.close("")
	s.h3.wait()
}

// SetTLS replaces the TLS config of the dials that follow (a reload of
// certificates or CA); the session in use keeps its connection. c is built
// like ClientOptions.TLS; the key log writer stays. Session tickets cached
// under the old config are not carried over: the new CA may not trust
// what they resume.
func (c *Client) SetTLS(t *tls.Config) {
	c.tls.Store(withKeyLog(t, c.o.KeyLogWriter))
}
