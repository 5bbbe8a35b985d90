// Package fectest provides a lossy UDP relay for tests that run QUIC, with
// or without FEC, over real loopback sockets. It is shared by the session
// and application tests so the two judge FEC against the same loss.
package fectest

import (
	"errors"
	"math/rand/v2"
	"net"
	"sync"
	"sync/atomic"
	"testing"
)

// Relay forwards UDP between one client and a server on loopback and drops
// each datagram, in each direction, with probability loss. The drops are
// seeded: the same datagram indexes are dropped in every run.
type Relay struct {
	ln, up    *net.UDPConn
	server    *net.UDPAddr
	loss      float64
	mu        sync.Mutex // guards client, rng and drop
	client    *net.UDPAddr
	rng       *rand.Rand
	drop      func(fromClient bool, b []byte) bool
	wg        sync.WaitGroup
	dropped   atomic.Int64
	forwarded atomic.Int64
	largest   [2]atomic.Int64 // largest datagram seen from the client, from the server
}

// NewRelay starts a relay to server; t's cleanup stops it and waits for
// its goroutines.
func NewRelay(t testing.TB, server *net.UDPAddr, loss float64, seed uint64) *Relay {
	t.Helper()
	lo := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}
	ln, err := net.ListenUDP("udp", lo)
	if err != nil {
		t.Fatal(err)
	}
	up, err := net.ListenUDP("udp", lo)
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	// Bursts of a bulk transfer must not be dropped by the kernel on top
	// of the configured loss.
	ln.SetReadBuffer(8 << 20)
	up.SetReadBuffer(8 << 20)
	r := &Relay{ln: ln, up: up, server: server, loss: loss, rng: rand.New(rand.NewPCG(seed, seed+1))}
	r.wg.Go(func() { r.pump(ln, true) })
	r.wg.Go(func() { r.pump(up, false) })
	t.Cleanup(func() { ln.Close(); up.Close(); r.wg.Wait() })
	return r
}

// DropWhen makes the relay also drop every datagram for which f returns
// true (nil: none); f sees each datagram in the order read, one at a time.
func (r *Relay) DropWhen(f func(fromClient bool, b []byte) bool) {
	r.mu.Lock()
	r.drop = f
	r.mu.Unlock()
}

// Port is the UDP port clients dial instead of the server's.
func (r *Relay) Port() int { return r.ln.LocalAddr().(*net.UDPAddr).Port }

// Counts returns how many datagrams were forwarded and dropped.
func (r *Relay) Counts() (forwarded, dropped int64) { return r.forwarded.Load(), r.dropped.Load() }

// Largest returns the size of the largest datagram the relay read from the
// client and from the server.
func (r *Relay) Largest() (fromClient, fromServer int) {
	return int(r.largest[0].Load()), int(r.largest[1].Load())
}

func (r *Relay) pump(from *net.UDPConn, fromClient bool) {
	side := &r.largest[1]
	if fromClient {
		side = &r.largest[0]
	}
	buf := make([]byte, 65536)
	for {
		n, addr, err := from.ReadFromUDP(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		} else if err != nil {
			continue
		}
		if int64(n) > side.Load() {
			side.Store(int64(n)) // one pump per side: no other writer
		}
		r.mu.Lock()
		if fromClient {
			r.client = addr
		}
		to, drop := r.client, r.rng.Float64() < r.loss
		if r.drop != nil && r.drop(fromClient, buf[:n]) {
			drop = true
		}
		r.mu.Unlock()
		switch {
		case drop:
			r.dropped.Add(1)
		case fromClient:
			r.forwarded.Add(1)
			r.up.WriteToUDP(buf[:n], r.server)
		case to != nil:
			r.forwarded.Add(1)
			r.ln.WriteToUDP(buf[:n], to)
		}
	}
}
