package session

import (
	"cmp"
	"context"
	"log/slog"
	"net"
	"net/netip"
	"sync/atomic"

	"github.com/quic-go/quic-go"

	"github.com/ptproxy/ptproxy/session/fec"
)

// FECStats are the counters of the FEC layer (transport.fec); see
// [fec.Stats].
type FECStats = fec.Stats

// FECPacketSize is quic-go's default packet size with FEC on
// (transport.fec_packet_size sets another), chosen so that a repair
// datagram (packet + fec.Overhead) is no larger than quic-go's own first
// packets (1280 B) without FEC. With "on" packets keep this size; with
// "auto" path MTU discovery grows it once the peer reads padded data
// (fec.Config.PacketSize).
const FECPacketSize = 1280 - fec.Overhead

// fecPacketSize is the size quic-go's packets start at with FEC on: the
// layer holds back anything larger until the peer reads padded data, so
// both must take it from here.
func (t Transport) fecPacketSize() int { return cmp.Or(t.FECPacketSize, FECPacketSize) }

// fecLayer is what sits between the UDP socket and quic.Transport. With FEC
// off it is a watcher only: quic-go gets the *net.UDPConn itself (GSO,
// batched receive, ECN and path MTU discovery unchanged) and the watcher
// reads the datagrams quic-go sets aside as not QUIC, to report a peer
// whose FEC is on. Its owner calls close after quic.Transport.Close.
type fecLayer struct {
	conn *fec.Conn // FEC on; nil when off

	// FEC off: the watcher of non-QUIC datagrams.
	mismatched atomic.Uint64
	done       chan struct{} // closed when the watcher returned; nil if none
}

// newQUICTransport builds the quic.Transport on udp for the FEC setting of
// t. With FEC off the transport gets udp as is, exactly as without this
// layer. The watcher (FEC off) starts with startWatch once the transport
// may be initialised.
func newQUICTransport(udp *net.UDPConn, t Transport, log *slog.Logger) (*quic.Transport, *fecLayer, error) {
	if !t.FEC {
		return &quic.Transport{Conn: udp}, &fecLayer{}, nil
	}
	c, err := fec.New(udp, fec.Config{
		GroupSize:  t.FECGroupSize,
		Repair:     t.FECRepair,
		Auto:       t.FECAuto,
		PacketSize: t.fecPacketSize(),
		Logger:     log,
	})
	if err != nil {
		return nil, nil, err
	}
	return &quic.Transport{Conn: c.PacketConn()}, &fecLayer{conn: c}, nil
}

// startWatch (FEC off) starts the goroutine that reads the datagrams quic-go
// did not take for QUIC and warns, once per address, about FEC-framed ones:
// the peer has transport.fec on. It ends when tr is closed (quic-go then
// ends ReadNonQUICPacket); close waits for it.
func (f *fecLayer) startWatch(tr *quic.Transport, log *slog.Logger) {
	if f.conn != nil || f.done != nil {
		return
	}
	f.done = make(chan struct{})
	go func() {
		defer close(f.done)
		warned := map[netip.AddrPort]bool{}
		buf := make([]byte, 2048)
		for {
			n, addr, err := tr.ReadNonQUICPacket(context.Background(), buf)
			if err != nil {
				return
			}
			if !fec.Framed(buf[:n]) {
				continue
			}
			f.mismatched.Add(1)
			var key netip.AddrPort
			if u, ok := addr.(*net.UDPAddr); ok {
				key = u.AddrPort()
			}
			if warned[key] || len(warned) >= 64 {
				continue
			}
			warned[key] = true
			log.Warn("dropping FEC-framed datagrams: transport.fec is off here but the peer has it on (or auto); both ends must set the same transport.fec",
				KeyRemoteAddr, addr.String())
		}
	}()
}

// close ends the layer after quic.Transport.Close: it closes the FEC
// connection (and so the socket) or waits for the watcher. nil-safe.
func (f *fecLayer) close() {
	if f == nil {
		return
	}
	if f.conn != nil {
		_ = f.conn.Close()
	}
	if f.done != nil {
		<-f.done
	}
}

func (f *fecLayer) stats() FECStats {
	if f == nil {
		return FECStats{}
	}
	if f.conn != nil {
		return f.conn.Stats()
	}
	return FECStats{Mismatched: f.mismatched.Load()}
}

// FECStats returns the FEC layer's counters (with FEC off, only Mismatched:
// FEC-framed datagrams dropped).
func (c *Client) FECStats() FECStats { return c.fec.stats() }

// FECStats returns the FEC layer's counters (with FEC off, only Mismatched:
// FEC-framed datagrams dropped).
func (s *Server) FECStats() FECStats {
	s.life.Lock()
	f := s.fec
	s.life.Unlock()
	return f.stats()
}
