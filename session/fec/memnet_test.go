package fec

import (
	"net"
	"os"
	"sync"
	"time"
)

// memNet is an in-memory datagram network. Every datagram passes through
// link, which decides what arrives: nothing (loss), once, several times
// (duplicates) or later (reordering, by holding it and emitting it with a
// later one).
type memNet struct {
	mu    sync.Mutex
	conns map[string]*memConn
	link  func(from, to string, b []byte, emit func([]byte))
}

func newMemNet() *memNet { return &memNet{conns: map[string]*memConn{}} }

// setLink replaces the link function (nil: deliver everything once).
func (n *memNet) setLink(f func(from, to string, b []byte, emit func([]byte))) {
	n.mu.Lock()
	n.link = f
	n.mu.Unlock()
}

func (n *memNet) listen(port int) *memConn {
	n.mu.Lock()
	defer n.mu.Unlock()
	c := &memConn{
		net:    n,
		addr:   &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: port},
		in:     make(chan memPacket, 4096),
		closed: make(chan struct{}),
		wake:   make(chan struct{}),
	}
	n.conns[c.addr.String()] = c
	return c
}

type memPacket struct {
	b    []byte
	from net.Addr
}

type memConn struct {
	net  *memNet
	addr *net.UDPAddr
	in   chan memPacket

	closeOnce sync.Once
	closed    chan struct{}

	mu   sync.Mutex
	dl   time.Time
	wake chan struct{} // closed and replaced when the deadline changes
}

func (c *memConn) WriteTo(b []byte, to net.Addr) (int, error) {
	select {
	case <-c.closed:
		return 0, net.ErrClosed
	default:
	}
	c.net.mu.Lock()
	defer c.net.mu.Unlock()
	dst := c.net.conns[to.String()]
	if dst == nil {
		return len(b), nil
	}
	emit := func(p []byte) {
		select {
		case dst.in <- memPacket{b: append([]byte(nil), p...), from: c.addr}:
		default: // receive buffer full: dropped, as on a socket
		}
	}
	if c.net.link != nil {
		c.net.link(c.addr.String(), to.String(), b, emit)
	} else {
		emit(b)
	}
	return len(b), nil
}

func (c *memConn) ReadFrom(b []byte) (int, net.Addr, error) {
	for {
		c.mu.Lock()
		dl, wake := c.dl, c.wake
		c.mu.Unlock()
		var timeout <-chan time.Time
		if !dl.IsZero() {
			d := time.Until(dl)
			if d <= 0 {
				return 0, nil, &net.OpError{Op: "read", Net: "udp", Err: os.ErrDeadlineExceeded}
			}
			t := time.NewTimer(d)
			timeout = t.C
			defer t.Stop()
		}
		select {
		case p := <-c.in:
			return copy(b, p.b), p.from, nil
		case <-c.closed:
			return 0, nil, net.ErrClosed
		case <-timeout:
		case <-wake:
		}
	}
}

func (c *memConn) SetReadDeadline(t time.Time) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dl = t
	close(c.wake)
	c.wake = make(chan struct{})
	return nil
}

func (c *memConn) Close() error {
	c.closeOnce.Do(func() { close(c.closed) })
	return nil
}

func (c *memConn) LocalAddr() net.Addr                { return c.addr }
func (c *memConn) SetDeadline(t time.Time) error      { return c.SetReadDeadline(t) }
func (c *memConn) SetWriteDeadline(t time.Time) error { return nil }
