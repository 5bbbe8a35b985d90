package session

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"math/rand/v2"
	"net"
	"net/netip"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/quic-go/quic-go"
)

// Hedged dials (fast re-dial after a lost session, see connect).
const (
	// hedgeAttempts is how many attempts after a lost session hedge.
	hedgeAttempts = 3
	// minHedgeInterval is the floor of the wait between two dials of an
	// attempt; the interval is 2 x the lost session's smoothed RTT (a
	// handshake with a live server completes within about 1 RTT, so a
	// hedge is only started against a silent one).
	minHedgeInterval = 100 * time.Millisecond
	// maxHedges bounds the hedged dials in flight at once, besides the
	// attempt's primary dial.
	maxHedges = 3
)

// hedgeInterval is the wait between two dials of an attempt after a
// session with smoothed RTT rtt was lost; 0 disables hedging (no RTT
// known: the first connection).
func hedgeInterval(rtt, bound time.Duration) time.Duration {
	if rtt <= 0 {
		return 0
	}
	return min(max(2*rtt, minHedgeInterval), bound/2)
}

// earlySession is a connection whose TLS handshake is not complete yet but
// which can already carry 0-RTT data (resumed session with early data).
//
// Early request streams are only opened while the early data's fate is
// open: a request holds mu for reading while it opens and sends its stream,
// and the dial retires the session (write lock) once the handshake
// completed, before NextConnection switches quic-go to the stream maps of
// the 1-RTT connection. So every early stream belongs to the 0-RTT epoch,
// and after a rejection none is touched again (see roundTripEarly).
type earlySession struct {
	conn *quic.Conn
	h3   *h3Conn

	mu      sync.RWMutex
	retired bool // guarded by mu

	// openCtx ends when the early data's fate is known: it bounds a
	// request blocked opening a stream (stream limit), so retiring never
	// waits for it.
	openCtx  context.Context
	stopOpen context.CancelFunc
	// decided ends once accepted is final (handshake completed, or the
	// dial ended without it).
	decided  context.Context
	decide   context.CancelFunc
	accepted atomic.Bool
	once     sync.Once

	// settled is closed by Run when the attempt ended, after it published
	// its session (if any): a request whose early data was not accepted
	// waits for it, then retries on that session.
	settled    chan struct{}
	settleOnce sync.Once
}

func newEarlySession(conn *quic.Conn, hc *h3Conn) *earlySession {
	e := &earlySession{conn: conn, h3: hc, settled: make(chan struct{})}
	e.openCtx, e.stopOpen = context.WithCancel(context.Background())
	e.decided, e.decide = context.WithCancel(context.Background())
	return e
}

// open opens a request stream as 0-RTT data. It fails once the session is
// retired.
func (e *earlySession) open(ctx context.Context) (*quic.Stream, error) {
	e.mu.RLock()
	defer e.mu.RUnlock()
	if e.retired {
		return nil, errEarlyGone
	}
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	stop := context.AfterFunc(e.openCtx, func() { cancel(errEarlyGone) })
	defer stop()
	return e.conn.OpenStreamSync(ctx)
}

// retire ends the early phase (idempotent): no stream is opened any more,
// and accepted is final.
func (e *earlySession) retire(accepted bool) {
	e.once.Do(func() {
		e.stopOpen()
		e.mu.Lock()
		e.retired = true
		e.mu.Unlock()
		e.accepted.Store(accepted)
		e.decide()
	})
}

func (e *earlySession) settle() {
	e.settleOnce.Do(func() { close(e.settled) })
}

// dialResult is the end of one dial of an attempt.
type dialResult struct {
	conn  *quic.Conn
	h3    *h3Conn       // nil for a hedge (set up by the winner)
	early *earlySession // the primary dial's early session, if any
	hedge bool
	err   error
}

// connect performs one attempt: resolve, pick an address at random, dial,
// set up HTTP/3 and wait for the server's SETTINGS. Waiting for SETTINGS
// matters with mutual TLS 1.3: the client's handshake completes before the
// server has checked the client certificate, so a refused client would
// otherwise look established for a moment. The server sends SETTINGS only
// once it accepted us.
//
// 0-RTT (ClientOptions.ZeroRTT only): the primary dial is DialEarly. When
// the TLS session cache holds a ticket with early data for this server,
// DialEarly returns before the handshake completed; the connection is then
// published as the early session, which RoundTrip uses for bodiless
// GET/HEAD only (see Early0RTT).
// If the server rejects the early data (it restarted and lost its ticket
// keys, or its settings changed), the connection continues as a 1-RTT
// connection (NextConnection) with a fresh HTTP/3 layer.
//
// Hedging (hedgeRTT > 0: the smoothed RTT of the session that was just
// lost): while no dial has completed its handshake, another dial starts
// every hedgeInterval (at most maxHedges at once, none after the primary
// dial ended), each sending a fresh Initial. quic-go retransmits an
// unanswered Initial only after 200 ms, 600 ms, 1.4 s (no RTT sample), so a
// server that restarts is otherwise found up to several hundred ms after
// it listens again. The first dial to complete wins; the others are
// cancelled (a silent dial ends without a packet to the server). A dial
// that fails other than by silence ends the attempt with its error (the
// server answered: trying again at once would meet the same answer).
//
// early is the attempt's early session (nil when none), for Run to settle;
// dialed reports whether a dial was started (the transport was
// initialised).
func (c *Client) connect(ctx context.Context, hedgeRTT time.Duration) (_ *clientSession, early *earlySession, dialed bool, _ error) {
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
		return nil, nil, false, err
	}
	every := hedgeInterval(hedgeRTT, bound)
	if c.testNoHedge.Load() {
		every = 0
	}
	conn, hc, early, err := c.dial(actx, addr, every)
	if err != nil {
		if cause := context.Cause(actx); cause != nil && actx.Err() != nil {
			return nil, early, true, cause
		}
		return nil, early, true, fmt.Errorf("connecting to %s: %w", addr, err)
	}
	select {
	case <-hc.ReceivedSettings():
		s := &clientSession{conn: conn, h3: hc}
		hc.setGoAwayHook(s.goneAway)
		return s, early, true, nil
	case <-conn.Context().Done():
		hc.wait()
		return nil, early, true, fmt.Errorf("connecting to %s: %w", addr, context.Cause(conn.Context()))
	case <-actx.Done():
		hc.close("")
		hc.wait()
		return nil, early, true, context.Cause(actx)
	}
}

// dial runs the primary dial and, every > 0, the hedged ones; it returns
// the first connection whose handshake completed, with its HTTP/3 layer,
// after every other dial ended (each in a goroutine owned here, cancelled
// through dctx).
func (c *Client) dial(ctx context.Context, addr *net.UDPAddr, every time.Duration) (*quic.Conn, *h3Conn, *earlySession, error) {
	dctx, cancel := context.WithCancel(ctx)
	defer cancel()
	results := make(chan dialResult, 1+maxHedges) // at most that many in flight
	pending := 1
	go func() { results <- c.dialPrimary(dctx, addr) }()

	var (
		hedgeC    <-chan time.Time // nil: no (more) hedges
		timer     *time.Timer
		hedgeConf *quic.Config
		hedgeTLS  *tls.Config
	)
	if every > 0 {
		timer = time.NewTimer(every)
		defer timer.Stop()
		hedgeC = timer.C
		// A hedge only needs to outlive one exchange with the server; the
		// primary dial keeps the full bound for a slow handshake.
		hedgeConf = c.quicConf.Clone()
		hedgeConf.HandshakeIdleTimeout = min(3*every, c.quicConf.HandshakeIdleTimeout)
		hedgeTLS = hedgeTLSConfig(c.tls.Load())
	}
	var (
		win               dialResult
		won               bool
		early             *earlySession
		primaryErr, other error
		hedges            int
	)
	for pending > 0 && !won {
		select {
		case r := <-results:
			pending--
			if r.early != nil {
				early = r.early
			}
			switch {
			case r.err == nil:
				win, won = r, true
			case !r.hedge:
				primaryErr = r.err
				hedgeC = nil // no hedge after the primary dial ended
				if !silent(r.err) {
					cancel()
				}
			default:
				if other == nil {
					other = r.err
				}
				if !silent(r.err) {
					hedgeC = nil
					cancel()
				}
			}
		case <-hedgeC:
			if pending-1 < maxHedges && dctx.Err() == nil {
				pending++
				hedges++
				go func() {
					conn, err := c.tr.Dial(dctx, addr, hedgeTLS, hedgeConf)
					results <- dialResult{conn: conn, hedge: true, err: err}
				}()
			}
			timer.Reset(every)
		}
	}
	cancel() // the losers
	for ; pending > 0; pending-- {
		r := <-results
		if r.early != nil {
			early = r.early
		}
		if r.err == nil {
			_ = r.conn.CloseWithError(quic.ApplicationErrorCode(h3.ErrCodeNoError), "")
		}
	}
	if hedges > 0 {
		c.log.Debug("hedged dials", "dials", hedges+1, "won_by_hedge", won && win.hedge, KeyPeer, c.o.PeerHostname)
	}
	if !won {
		if primaryErr == nil {
			primaryErr = other
		}
		return nil, nil, early, primaryErr
	}
	if win.h3 == nil {
		hc, err := newH3Conn(win.conn, false, c.o.MaxFieldSectionSize, c.log)
		if err != nil {
			return nil, nil, early, err
		}
		win.h3 = hc
	}
	return win.conn, win.h3, early, nil
}

// hedgeTLSConfig is the TLS config of hedged dials: they never resume a
// cached session (concurrent handshakes resuming one cached session state
// race in quic-go, which writes to it; a hedge meets a restarted server
// whose ticket keys are new anyway) but store the tickets they receive, so
// the next reconnection can resume.
func hedgeTLSConfig(base *tls.Config) *tls.Config {
	cfg := base.Clone()
	if cfg.ClientSessionCache != nil {
		cfg.ClientSessionCache = putOnlyCache{cfg.ClientSessionCache}
	}
	return cfg
}

// putOnlyCache stores tickets in the client's cache and never offers one.
type putOnlyCache struct{ tls.ClientSessionCache }

func (putOnlyCache) Get(string) (*tls.ClientSessionState, bool) { return nil, false }

// silent reports whether a dial ended because the server never answered
// (handshake idle or overall timeout), as opposed to an answer (TLS alert,
// version negotiation, ...) or a cancellation.
func silent(err error) bool {
	if _, ok := errors.AsType[*quic.IdleTimeoutError](err); ok {
		return true
	}
	_, ok := errors.AsType[*quic.HandshakeTimeoutError](err)
	return ok
}

// dialPrimary is the attempt's first dial. With ZeroRTT it is DialEarly,
// with the early session published while 0-RTT is possible (see
// earlySession); otherwise Dial, which returns once the handshake
// completed, so no stream is opened before.
func (c *Client) dialPrimary(ctx context.Context, addr *net.UDPAddr) dialResult {
	if !c.o.ZeroRTT {
		conn, err := c.tr.Dial(ctx, addr, c.tls.Load(), c.quicConf)
		if err != nil {
			return dialResult{err: err}
		}
		hc, err := newH3Conn(conn, false, c.o.MaxFieldSectionSize, c.log)
		if err != nil {
			return dialResult{err: err}
		}
		return dialResult{conn: conn, h3: hc}
	}
	conn, err := c.tr.DialEarly(ctx, addr, c.tls.Load(), c.quicConf)
	if err != nil {
		return dialResult{err: err}
	}
	hc, err := newH3Conn(conn, false, c.o.MaxFieldSectionSize, c.log)
	if err != nil {
		return dialResult{err: err}
	}
	select {
	case <-conn.HandshakeComplete():
		return dialResult{conn: conn, h3: hc}
	default:
	}
	e := newEarlySession(conn, hc)
	c.early.Store(e)
	c.notifySession()
	if h := c.testHookEarly.Load(); h != nil {
		(*h)()
	}
	retire := func(accepted bool) {
		e.retire(accepted)
		c.early.CompareAndSwap(e, nil)
	}
	select {
	case <-conn.HandshakeComplete():
	case <-conn.Context().Done():
		retire(false)
		hc.wait()
		return dialResult{early: e, err: context.Cause(conn.Context())}
	case <-ctx.Done():
		retire(false)
		hc.close("")
		hc.wait()
		return dialResult{early: e, err: context.Cause(ctx)}
	}
	// quic-go has already reset its stream maps if the server rejected the
	// early data (that precedes handshake completion); retiring now, before
	// NextConnection enables the new maps, keeps every early stream in the
	// 0-RTT epoch.
	accepted := conn.ConnectionState().Used0RTT
	retire(accepted)
	if !accepted {
		c.log.Debug("0-RTT rejected by the server; continuing with 1-RTT", KeyPeer, c.o.PeerHostname)
		// The early HTTP/3 layer's streams were discarded with the early
		// data; its stream acceptor saw the rejection and ended, so it
		// cannot take a stream of the 1-RTT connection.
		hc.waitAcceptor()
		next, err := conn.NextConnection(ctx)
		if err != nil {
			_ = conn.CloseWithError(quic.ApplicationErrorCode(h3.ErrCodeNoError), "")
			hc.wait()
			return dialResult{early: e, err: err}
		}
		conn = next
		if hc, err = newH3Conn(conn, false, c.o.MaxFieldSectionSize, c.log); err != nil {
			return dialResult{early: e, err: err}
		}
	}
	return dialResult{conn: conn, h3: hc, early: e}
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

func defaultResolve(ctx context.Context, host string) ([]netip.Addr, error) {
	if ip, err := netip.ParseAddr(host); err == nil {
		return []netip.Addr{ip}, nil
	}
	return net.DefaultResolver.LookupNetIP(ctx, "ip", host)
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
