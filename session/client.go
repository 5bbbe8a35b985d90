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
	quicConf *quic.Config
	resolve  func(ctx context.Context, host string) ([]netip.Addr, error)
	clock    clock
	bo       *backoff
	dialed   bool // Run loop only: the transport was initialised by a Dial

	// cur is the published session (nil when none): written by Run, read by
	// RoundTrip and the stats accessors.
	cur atomic.Pointer[clientSession]

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
		quicConf:  QUICConfig(o.Transport, false),
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
	c.tr = &quic.Transport{Conn: udp}
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
		c.mu.Unlock()
		reason := c.m.LastError()
		if reason == nil {
			reason = errFirstAttempt
		}
		return nil, &NotReadyError{Reason: reason}
	}
	c.inflight++
	c.mu.Unlock()

	resp, err := s.cc.RoundTrip(req)
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
		c.udp.Close()
	})
}

func (c *Client) markFirstDone() { c.firstOnce.Do(func() { close(c.firstDone) }) }

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
			select {
			case <-ch:
			case <-ctx.Done():
				stop()
			case <-c.drainCh:
				stop()
			}
		}
		if err := c.stopIfAsked(ctx, nil); err != errContinue {
			return err
		}

		attempt++
		c.m.attempt = attempt
		c.m.fire(ctx, EvDial, nil)
		s, err := c.connect(ctx)
		if !buffersSet && c.dialed {
			// quic-go sized the buffers when the transport initialised
			// during the first Dial; now apply the user's values.
			buffersSet = true
			applySocketBuffers(c.udp, c.o.Transport, c.log)
		}
		if err != nil {
			if err := c.stopIfAsked(ctx, nil); err != errContinue {
				return err
			}
			c.m.fire(ctx, EvFail, err)
			c.markFirstDone()
			delay = c.bo.next()
			continue
		}
		if err := c.stopIfAsked(ctx, s); err != errContinue {
			return err
		}

		gen++
		s.gen = gen
		c.cur.Store(s)
		c.m.attempt = attempt
		c.m.fire(ctx, EvEstablished, nil)
		c.markFirstDone()
		c.bo.reset()
		attempt = 0
		c.m.attempt = 0

		// state: ready. Only the current session's context is watched, so
		// a message from an older generation cannot reach the loop.
		select {
		case <-s.conn.Context().Done():
			c.cur.CompareAndSwap(s, nil)
			c.m.fire(ctx, EvLost, lostReason(context.Cause(s.conn.Context())))
			delay = 0 // retry at once: the server usually restarts
		case <-ctx.Done():
			return c.stopReady(ctx, s)
		case <-c.drainCh:
			return c.stopReady(ctx, s)
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
		select {
		case <-c.inflightIdle():
		case <-ctx.Done():
		case <-s.conn.Context().Done():
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
func (c *Client) connect(ctx context.Context) (*clientSession, error) {
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
		return nil, err
	}
	c.dialed = true
	conn, err := c.tr.Dial(actx, addr, c.o.TLS, c.quicConf)
	if err != nil {
		if cause := context.Cause(actx); cause != nil && actx.Err() != nil {
			return nil, cause
		}
		return nil, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	cc := (&http3.Transport{DisableCompression: true, Logger: c.log}).NewClientConn(conn)
	select {
	case <-cc.ReceivedSettings():
		return &clientSession{conn: conn, cc: cc}, nil
	case <-conn.Context().Done():
		return nil, fmt.Errorf("connecting to %s: %w", addr, context.Cause(conn.Context()))
	case <-actx.Done():
		_ = cc.CloseWithError(quic.ApplicationErrorCode(http3.ErrCodeNoError), "")
		return nil, context.Cause(actx)
	}
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
