package pipeline

import (
	"context"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// OriginOptions configure connections to the origin (server side).
type OriginOptions struct {
	// Address is http_connect_address: host:port, resolved per new
	// connection.
	Address     string
	NoDelay     bool
	KeepAlive   time.Duration // TCP keep-alive period; ptproxy uses 15 s
	MaxIdle     int           // idle connections kept; default 100
	IdleTime    time.Duration // an idle connection older than this is closed; default 90 s
	Limits      httpio.Limits
	Names       httpio.NameCase
	DialTimeout time.Duration // default 10 s
}

// OriginPool keeps idle keep-alive connections to the origin. It starts no
// goroutines: expired connections are closed when found on Get and by Close.
type OriginPool struct {
	o      OriginOptions
	dialer net.Dialer

	mu     sync.Mutex
	idle   []*originConn // most recently used last
	closed bool
}

type originConn struct {
	conn   net.Conn
	r      *httpio.Reader
	w      *httpio.Writer
	idleAt time.Time
	reused bool
}

// NewOriginPool returns a pool for o.
func NewOriginPool(o OriginOptions) *OriginPool {
	if o.MaxIdle <= 0 {
		o.MaxIdle = 100
	}
	if o.IdleTime <= 0 {
		o.IdleTime = 90 * time.Second
	}
	if o.DialTimeout <= 0 {
		o.DialTimeout = 10 * time.Second
	}
	return &OriginPool{o: o, dialer: net.Dialer{Timeout: o.DialTimeout, KeepAlive: o.KeepAlive}}
}

// get returns an idle connection that still looks alive, or a new one.
func (p *OriginPool) get(ctx context.Context) (*originConn, error) {
	now := time.Now()
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errors.New("origin pool closed")
		}
		n := len(p.idle)
		if n == 0 {
			p.mu.Unlock()
			break
		}
		c := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		if now.Sub(c.idleAt) < p.o.IdleTime && c.alive() {
			c.reused = true
			return c, nil
		}
		c.close()
	}
	conn, err := p.dialer.DialContext(ctx, "tcp", p.o.Address)
	if err != nil {
		return nil, fmt.Errorf("connecting to origin %s: %w", p.o.Address, err)
	}
	if tc, ok := conn.(*net.TCPConn); ok {
		tc.SetNoDelay(p.o.NoDelay)
	}
	return &originConn{conn: conn, r: httpio.NewReader(conn, p.o.Limits), w: httpio.NewWriter(conn, p.o.Names)}, nil
}

// put returns a connection whose exchange completed cleanly.
func (p *OriginPool) put(c *originConn) {
	c.idleAt = time.Now()
	p.mu.Lock()
	if p.closed || len(p.idle) >= p.o.MaxIdle {
		p.mu.Unlock()
		c.close()
		return
	}
	p.idle = append(p.idle, c)
	p.mu.Unlock()
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

// alive reports whether an idle connection has not been closed or written
// to by the origin meanwhile: a readable idle connection is either at EOF or
// carries bytes nobody asked for, and is unusable either way.
func (c *originConn) alive() bool {
	if c.r.Buffered() > 0 {
		return false
	}
	c.conn.SetReadDeadline(time.Now())
	var b [1]byte
	n, err := c.conn.Read(b[:])
	c.conn.SetReadDeadline(time.Time{})
	if n > 0 {
		return false
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

func (c *originConn) close() {
	c.conn.Close()
	c.r.Release()
	c.w.Release()
}
