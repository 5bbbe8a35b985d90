package session

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"github.com/quic-go/quic-go"
	"github.com/quic-go/quic-go/qlogwriter"
)

// Defaults of the original ptproxy ([transport] and [system]).
const (
	DefaultPort = 20010
	// MaxStreamWindow is how far quic-go may auto-tune a stream's receive
	// window above stream_receive_window (quic-go's own default maximum).
	MaxStreamWindow        = 6 << 20
	DefaultBindAddress     = "::"
	DefaultConnectInterval = time.Second
)

// Transport holds the QUIC knobs ptproxy exposes ([transport] section).
// Zero values mean "quic-go default" except where noted. Knobs the original
// had but quic-go v0.65 cannot honour (initial_rtt, initial_window,
// send_window, congestion_algorithm) are deliberately absent: see
// docs/session.md.
type Transport struct {
	MaxIdleTimeout       time.Duration // also the handshake (attempt) bound
	KeepAliveInterval    time.Duration // 0 = no keep-alives
	MaxConcurrentStreams int           // server: concurrent requests per connection
	StreamReceiveWindow  uint64        // per-stream window to start with; quic-go auto-tunes it up to MaxStreamWindow
	ReceiveWindow        uint64        // connection window, fixed (no auto-tuning)
	SocketReceiveBuffer  int           // SO_RCVBUF in bytes; 0 = leave quic-go's choice
	SocketSendBuffer     int           // SO_SNDBUF in bytes; 0 = leave quic-go's choice
	QlogDir              string        // write one qlog file per connection here when set

	// FEC puts the Reed-Solomon layer of package fec between the socket
	// and quic-go (both ends must agree); FECGroupSize and FECRepair are
	// its group size and repairs per full group. FECAuto (with FEC) is
	// the adaptive mode: FECRepair is then the ceiling, 0 for the
	// layer's default.
	FEC          bool
	FECAuto      bool
	FECGroupSize int
	FECRepair    int
	// FECPacketSize is quic-go's packet size with FEC on (with FECAuto,
	// where path MTU discovery may grow it, the size it starts at); 0 is
	// FECPacketSize (the constant).
	FECPacketSize int
}

// QUICConfig maps t onto a quic.Config for the server or the client role.
func QUICConfig(t Transport, server bool) *quic.Config {
	c := &quic.Config{
		MaxIdleTimeout:       t.MaxIdleTimeout,
		HandshakeIdleTimeout: t.MaxIdleTimeout, // the original bounds an attempt by max_idle_timeout
		KeepAlivePeriod:      t.KeepAliveInterval,
		EnableDatagrams:      false,
	}
	if server {
		// The server accepts 0-RTT; the client only sends safe, bodiless
		// GET/HEAD requests early (Early0RTT) and the server holds any
		// other early request until the handshake completed (serveHTTP).
		c.Allow0RTT = true
		c.MaxIncomingStreams = int64(t.MaxConcurrentStreams)
	} else {
		// HTTP/3 servers never open bidirectional streams (RFC 9114 6.1).
		c.MaxIncomingStreams = -1
	}
	if t.StreamReceiveWindow > 0 {
		// The original fixes the stream window, which caps one request at
		// window / RTT (1 MB: ~80 Mbit/s at 100 ms). Starting there and
		// letting quic-go grow it while a stream keeps it busy removes that
		// cap; the connection window still bounds what all streams buffer.
		c.InitialStreamReceiveWindow = t.StreamReceiveWindow
		c.MaxStreamReceiveWindow = max(t.StreamReceiveWindow, MaxStreamWindow)
	}
	if t.ReceiveWindow > 0 {
		c.InitialConnectionReceiveWindow = t.ReceiveWindow
		c.MaxConnectionReceiveWindow = t.ReceiveWindow
	}
	if t.QlogDir != "" {
		c.Tracer = qlogDirTracer(t.QlogDir)
	}
	if t.FEC {
		// Packets start at a size whose repairs (larger by fec.Overhead)
		// fit the path. quic-go's path MTU probes size the packets, not
		// the repairs: only the adaptive mode sends them, padded to a
		// repair's size to a peer that reads that, and holds them back
		// otherwise (fec.Config.PacketSize). "on" keeps the size.
		c.InitialPacketSize = uint16(t.fecPacketSize())
		c.DisablePathMTUDiscovery = !t.FECAuto
	}
	return c
}

// MinAttemptIdle is the floor of a connection attempt's idle bound (see
// clientQUICConfig): below it, a link with a long round trip could not
// complete a handshake.
const MinAttemptIdle = time.Second

// AttemptIdleTimeout is the client's HandshakeIdleTimeout: how long one
// connection attempt waits without receiving anything from the server
// before it is abandoned and the next one starts. quic-go ignores ICMP
// "port unreachable", so an attempt to a server that is down always runs
// into this bound. It is connect_interval (the ceiling between attempts)
// but at least MinAttemptIdle, and at most max_idle_timeout (the
// original's bound of an attempt; quic-go's 5 s default when 0). A new
// attempt restarts quic-go's Initial retransmission schedule (PTO 300 ms,
// then doubling), so a server that came back is found within about
// connect_interval plus one round trip, instead of waiting out the later,
// sparser retransmissions of a 5 s attempt.
func AttemptIdleTimeout(t Transport, connectInterval time.Duration) time.Duration {
	ceiling := t.MaxIdleTimeout
	if ceiling <= 0 {
		ceiling = 5 * time.Second
	}
	if connectInterval <= 0 {
		connectInterval = DefaultConnectInterval
	}
	return min(max(connectInterval, MinAttemptIdle), ceiling)
}

// clientQUICConfig is QUICConfig for the client, with the attempt bound.
func clientQUICConfig(t Transport, connectInterval time.Duration) *quic.Config {
	c := QUICConfig(t, false)
	c.HandshakeIdleTimeout = AttemptIdleTimeout(t, connectInterval)
	return c
}

// qlogDirTracer writes <odcid>_<client|server>.sqlog files into dir, like
// qlog.DefaultConnectionTracer does for $QLOGDIR (but without log.Fatal).
func qlogDirTracer(dir string) func(context.Context, bool, quic.ConnectionID) qlogwriter.Trace {
	return func(_ context.Context, isClient bool, connID quic.ConnectionID) qlogwriter.Trace {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return nil
		}
		label := "server"
		if isClient {
			label = "client"
		}
		f, err := os.Create(filepath.Join(dir, fmt.Sprintf("%s_%s.sqlog", connID, label)))
		if err != nil {
			return nil
		}
		seq := qlogwriter.NewConnectionFileSeq(&bufferedFile{bufio.NewWriter(f), f}, isClient, connID)
		go seq.Run() // ends when the connection removes its last producer
		return seq
	}
}

type bufferedFile struct {
	*bufio.Writer
	f io.Closer
}

func (b *bufferedFile) Close() error {
	err := b.Flush()
	if cerr := b.f.Close(); err == nil {
		err = cerr
	}
	return err
}

// listenUDP opens the UDP socket for a role. It is handed to a
// quic.Transport; the caller applies the socket buffers with
// applySocketBuffers after quic-go initialised the transport (first Listen
// or Dial), so the user's values win over quic-go's own attempt.
func listenUDP(bindAddress string, port int) (*net.UDPConn, error) {
	if bindAddress == "" {
		bindAddress = DefaultBindAddress
	}
	ip := net.ParseIP(bindAddress)
	if ip == nil {
		return nil, fmt.Errorf("bind address %q is not an IP address", bindAddress)
	}
	return net.ListenUDP("udp", &net.UDPAddr{IP: ip, Port: port})
}

// applySocketBuffers sets SO_RCVBUF/SO_SNDBUF to the user's values (0 =
// keep whatever quic-go set) and logs a Warn through slog when the kernel
// granted less than requested.
//
// Why after quic-go: when a quic.Transport initialises (first Dial or
// Listen) it calls setReceiveBuffer/setSendBuffer (sys_conn_buffers*.go),
// which raise both buffers to 7 MiB if the socket reports less, trying
// SO_RCVBUFFORCE/SO_SNDBUFFORCE on Linux, and, if the value read back is
// still below 7 MiB, print ONE line through the standard log package
// ("failed to sufficiently increase receive buffer size ..."), unless the
// environment has QUIC_GO_DISABLE_RECEIVE_BUFFER_WARNING=true. Applying the
// user's value afterwards makes it final. quic-go's line cannot be
// redirected to slog; operators avoid it by raising net.core.rmem_max and
// net.core.wmem_max to at least 7 MiB (its recommendation) or by setting that
// variable (our own Warn below still reports shortfalls of the user's value).
func applySocketBuffers(udp *net.UDPConn, t Transport, log *slog.Logger) {
	if t.SocketReceiveBuffer > 0 {
		_ = udp.SetReadBuffer(t.SocketReceiveBuffer)
		checkBuffer(udp, "receive", t.SocketReceiveBuffer, log)
	}
	if t.SocketSendBuffer > 0 {
		_ = udp.SetWriteBuffer(t.SocketSendBuffer)
		checkBuffer(udp, "send", t.SocketSendBuffer, log)
	}
}

func checkBuffer(udp *net.UDPConn, which string, requested int, log *slog.Logger) {
	granted, ok := readBuffer(udp, which, requested)
	if !ok || granted >= requested {
		return
	}
	log.Warn("UDP socket buffer smaller than requested, likely due to OS limits",
		KeyBuffer, which, KeyRequested, requested, KeyGranted, granted,
		KeyLocalAddr, udp.LocalAddr().String())
}
