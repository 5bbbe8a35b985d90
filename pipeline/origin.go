package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// OriginOptions configure connections to the origin (server side).
type OriginOptions struct {
	// Address is http_connect_address: host:port, resolved per new
	// connection.
	Address   string
	NoDelay   bool
	KeepAlive time.Duration // TCP keep-alive period; ptproxy uses 15 s
	MaxIdle   int           // idle connections kept; default 100
	// IdleTime is how long an idle keep-alive connection may wait for its
	// next request (default DefaultOriginIdleTime). An origin that announces
	// a shorter timeout in Keep-Alive gets that, less a margin.
	IdleTime    time.Duration
	Limits      httpio.Limits // for response heads: see ResponseLimits
	Names       httpio.NameCase
	DialTimeout time.Duration // default 10 s
	// TLS, when set, makes the connections HTTPS: the handshake is part
	// of connecting (its failure is a connect failure: nothing was sent).
	// ServerName must be set (the caller derives it from the address).
	TLS *tls.Config
}

// DefaultOriginIdleTime is below the idle timeouts of the common origin
// servers (Node.js, Apache httpd and uvicorn close after 5 s), so a pooled
// connection is retired before the origin can close it under a request.
// Connections an origin closes earlier are found by the liveness check.
const DefaultOriginIdleTime = 4 * time.Second

// ResponseLimits are the default limits for origin response heads: as
// generous as Go's HTTP client (10 MiB for the whole head, no separate line
// or field-count limit: a field line takes at least 4 bytes, so the count
// never binds first). Node.js accepts less (16 KiB by default).
func ResponseLimits(maxHeadBytes int) httpio.Limits {
	if maxHeadBytes <= 0 {
		maxHeadBytes = 10 << 20
	}
	return httpio.Limits{MaxLineBytes: maxHeadBytes, MaxHeaderBytes: maxHeadBytes, MaxHeaderCount: maxHeadBytes/4 + 1}
}

// OriginPool keeps idle keep-alive connections to the origin. It starts no
// goroutines: expired or dead connections are closed when found on get and
// by Close.
type OriginPool struct {
	o      OriginOptions
	dialer net.Dialer

	mu     sync.Mutex
	idle   []*originConn // most recently used last
	closed bool
}

type originConn struct {
	pool *OriginPool // where it goes back after a clean exchange
	conn net.Conn
	// raw is the TCP connection under conn (the same for plain HTTP): the
	// liveness check looks at the socket itself.
	raw net.Conn
	r   *httpio.Reader
	w   *httpio.Writer
	// idleSince and expires are when the connection went idle and when it
	// is retired (set by put).
	idleSince, expires time.Time
	reused             bool
	rc                 syscall.RawConn // for the liveness check, once it ran
}

// NewOriginPool returns a pool for o.
func NewOriginPool(o OriginOptions) *OriginPool {
	if o.MaxIdle <= 0 {
		o.MaxIdle = 100
	}
	if o.IdleTime <= 0 {
		o.IdleTime = DefaultOriginIdleTime
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	if o.Limits == (httpio.Limits{}) {
		o.Limits = ResponseLimits(0)
	}
	return &OriginPool{o: o, dialer: net.Dialer{Timeout: o.DialTimeout, KeepAlive: o.KeepAlive}}
}

// errPoolClosed is what get returns once the server is shutting down.
var errPoolClosed = errors.New("origin pool closed")

// unsafeReuseIdle bounds how long a connection may have been idle to carry
// a request that cannot be sent again (see get).
const unsafeReuseIdle = time.Second

// get returns an idle connection that is still open, or a new one.
//
// replayable says whether the request may be sent again on a new connection
// if this one turns out closed. The liveness check cannot see an origin
// that closes its idle connection at the moment the request is on its way
// (nginx closes at exactly keepalive_timeout, which it does not announce);
// a request that cannot be replayed then fails with a 502 that talking to
// the origin directly, on a new connection, would not have met. Such a
// request therefore takes only a connection that was busy within the last
// unsafeReuseIdle, far from any common keep-alive timeout; otherwise a new
// one, which costs a local connect.
func (p *OriginPool) get(ctx context.Context, replayable bool) (*originConn, error) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errPoolClosed
		}
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		c := p.idle[n-1]
		now := time.Now()
		if !replayable && now.Sub(c.idleSince) >= unsafeReuseIdle {
			// The most recently used is the best there is; it stays
			// for a replayable request.
			p.mu.Unlock()
			break
		}
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if now.Before(c.expires) && c.alive() {
			c.reused = true
			return c, nil
		}
		c.close()
	}
	conn, err := p.dialer.DialContext(ctx, "tcp", p.o.Address)
	if err != nil {
		return nil, &originDialError{err: err}
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(p.o.NoDelay)
	}
	raw := conn
	if p.o.TLS != nil {
		tc := tls.Client(conn, p.o.TLS)
		if err := tc.HandshakeContext(ctx); err != nil {
			conn.Close()
			return nil, &originDialError{err: &originTLSError{err: err}}
		}
		conn = tc
	}
	return &originConn{pool: p, conn: conn, raw: raw, r: httpio.NewReader(conn, p.o.Limits), w: httpio.NewWriter(conn, p.o.Names)}, nil
}

// originDialError is a failure to open a connection to the origin: nothing
// was sent, so the caller's request never reached it.
type originDialError struct{ err error }

func (e *originDialError) Error() string { return fmt.Sprintf("connecting to origin: %v", e.err) }
func (e *originDialError) Unwrap() error { return e.err }

// originTLSError is a failed TLS handshake with the origin (unknown
// authority, wrong name, no common protocol).
type originTLSError struct{ err error }

func (e *originTLSError) Error() string { return fmt.Sprintf("TLS handshake: %v", e.err) }
func (e *originTLSError) Unwrap() error { return e.err }

// put returns a connection whose exchange completed cleanly. keepAlive is
// the response's Keep-Alive field value, whose timeout parameter (RFC 2068
// 19.7.1.1, sent by Node.js and Apache httpd) shortens the idle time.
func (p *OriginPool) put(c *originConn, keepAlive string) {
	// A deadline left from the exchange would fail the next one at once.
	if err := c.conn.SetDeadline(time.Time{}); err != nil {
		c.close()
		return
	}
	c.idleSince = time.Now()
	c.expires = c.idleSince.Add(idleTime(p.o.IdleTime, keepAlive))
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.o.MaxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
}

// idleTime is how long a connection may stay idle: the configured time, or
// less when the origin's Keep-Alive announces a shorter timeout. The origin
// closes at its timeout, so a second (or half of a shorter timeout) is kept
// as a margin for the request to reach it first.
func idleTime(configured time.Duration, keepAlive string) time.Duration {
	for p := range httpio.Tokens(keepAlive) {
		name, value, ok := strings.Cut(p, "=")
		if !ok || !httpio.EqualFold(strings.TrimSpace(name), "timeout") {
			continue
		}
		secs, err := strconv.Atoi(strings.Trim(strings.TrimSpace(value), `"`))
		if err != nil || secs < 0 {
			return configured
		}
		t := time.Duration(secs) * time.Second
		if t > 2*time.Second {
			t -= time.Second
		} else {
			t /= 2
		}
		return min(configured, t)
	}
	return configured
}

// Close closes every idle connection; connections in use close when their
// exchange ends.
func (p *OriginPool) Close() error {
	p.mu.Lock()
	idle := p.idle
	p.idle, p.closed = nil, true
	p.mu.Unlock()
	for _, c := range idle {
		c.close()
	}
	return nil
}

// alive reports whether an idle connection is still usable: not closed by
// the origin and carrying no bytes nobody asked for. It looks at the socket
// itself without blocking (see quietConn).
func (c *originConn) alive() bool {
	if c.r.Buffered() > 0 {
		return false
	}
	return quietConn(c.raw, &c.rc)
}

func (c *originConn) close() {
	c.conn.Close()
	c.r.Release()
	c.w.Release()
}
