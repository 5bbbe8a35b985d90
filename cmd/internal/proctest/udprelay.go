// Package proctest runs ptproxy as real processes (built once from
// ./cmd/ptproxy) and injects faults from outside: SIGKILL by pid and network
// partitions through a UDP relay. Only its tests use it; the package code
// is a library so the relay can be reused by other fault tests.
package proctest

import (
	"errors"
	"net"
	"sync"
	"sync/atomic"
)

// Relay forwards UDP datagrams between QUIC clients and one server on
// loopback, and can drop every packet in both directions (a partition).
// Each client address gets its own upstream socket, so the server sees one
// peer per client, as without the relay.
type Relay struct {
	front  *net.UDPConn // where clients send to
	server *net.UDPAddr

	blackhole atomic.Bool
	forwarded atomic.Int64 // datagrams forwarded, both directions
	dropped   atomic.Int64 // datagrams dropped, both directions

	mu    sync.Mutex
	peers map[string]*net.UDPConn // client address -> upstream socket
	done  bool
	wg    sync.WaitGroup
}

// NewRelay listens on 127.0.0.1 (ephemeral port) and forwards to server.
func NewRelay(server *net.UDPAddr) (*Relay, error) {
	front, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		return nil, err
	}
	r := &Relay{front: front, server: server, peers: map[string]*net.UDPConn{}}
	r.wg.Go(r.fromClients)
	return r, nil
}

// Addr is the address clients dial instead of the server's.
func (r *Relay) Addr() *net.UDPAddr { return r.front.LocalAddr().(*net.UDPAddr) }

// SetBlackhole starts (true) or ends (false) the partition: while set,
// every datagram in either direction is dropped.
func (r *Relay) SetBlackhole(on bool) { r.blackhole.Store(on) }

// Counts returns the datagrams forwarded and dropped so far.
func (r *Relay) Counts() (forwarded, dropped int64) { return r.forwarded.Load(), r.dropped.Load() }

// Close stops the relay and waits for its goroutines.
func (r *Relay) Close() error {
	r.mu.Lock()
	r.done = true
	for _, c := range r.peers {
		c.Close()
	}
	r.mu.Unlock()
	err := r.front.Close()
	r.wg.Wait()
	return err
}

func (r *Relay) fromClients() {
	buf := make([]byte, 65536)
	for {
		n, from, err := r.front.ReadFromUDP(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		up := r.upstream(from)
		if up == nil {
			return
		}
		if r.blackhole.Load() {
			r.dropped.Add(1)
			continue
		}
		if _, err := up.Write(buf[:n]); err == nil {
			r.forwarded.Add(1)
		}
	}
}

// upstream returns the socket that carries from's datagrams to the server,
// creating it (and its reverse goroutine) on first use; nil once closed.
func (r *Relay) upstream(from *net.UDPAddr) *net.UDPConn {
	key := from.String()
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.done {
		return nil
	}
	if c, ok := r.peers[key]; ok {
		return c
	}
	c, err := net.DialUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)}, r.server)
	if err != nil {
		return nil
	}
	r.peers[key] = c
	back := *from
	r.wg.Go(func() { r.toClient(c, &back) })
	return c
}

func (r *Relay) toClient(up *net.UDPConn, client *net.UDPAddr) {
	buf := make([]byte, 65536)
	for {
		n, err := up.Read(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			// ICMP port unreachable while the server is down surfaces as
			// ECONNREFUSED on a connected socket: keep relaying.
			continue
		}
		if r.blackhole.Load() {
			r.dropped.Add(1)
			continue
		}
		if _, err := r.front.WriteToUDP(buf[:n], client); err == nil {
			r.forwarded.Add(1)
		}
	}
}
