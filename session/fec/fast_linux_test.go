//go:build linux

package fec

import (
	"bytes"
	"context"
	"crypto/tls"
	"io"
	"log/slog"
	"net"
	"os"
	"strconv"
	"testing"
	"time"
	"unsafe"

	"github.com/quic-go/quic-go"
	"golang.org/x/net/ipv4"
	"golang.org/x/sys/unix"

	"github.com/ptproxy/ptproxy/session/fec/fectest"
	"github.com/ptproxy/ptproxy/session/pki"
)

// fastConnOn wraps a new loopback UDP socket in a Conn and returns its
// fast path.
func fastConnOn(t *testing.T, cfg Config) (*Conn, *fastConn) {
	t.Helper()
	return fastConnAt(t, "udp4", net.IPv4(127, 0, 0, 1), cfg)
}

// fastConnAt is fastConnOn on a socket of network bound to ip.
func fastConnAt(t *testing.T, network string, ip net.IP, cfg Config) (*Conn, *fastConn) {
	t.Helper()
	u, err := net.ListenUDP(network, &net.UDPAddr{IP: ip})
	if err != nil {
		t.Fatal(err)
	}
	u.SetReadBuffer(4 << 20)
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
	}
	c, err := New(u, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	f, ok := c.PacketConn().(*fastConn)
	if !ok {
		t.Fatalf("PacketConn over a UDP socket is %T, not the fast path", c.PacketConn())
	}
	return c, f
}

// requireGSO fails in CI, and skips elsewhere, on a kernel without
// UDP_SEGMENT (before Linux 4.18).
func requireGSO(t *testing.T, c *Conn) {
	t.Helper()
	requireKernel(t, c.gso.Load(), "UDP_SEGMENT (GSO)", "4.18")
}

// requireGRO is requireGSO for coalesced receive (UDP_GRO, Linux 5.0).
func requireGRO(t *testing.T, f *fastConn) {
	t.Helper()
	requireKernel(t, f.gro, "UDP_GRO", "5.0")
}

// requireKernel fails in CI, and skips elsewhere, unless the kernel has
// the feature (since Linux version since).
func requireKernel(t *testing.T, has bool, feature, since string) {
	t.Helper()
	if has {
		return
	}
	if os.Getenv("CI") == "true" {
		t.Fatalf("%s not available on this kernel", feature)
	}
	t.Skipf("%s not available on this kernel (Linux %s or newer needed)", feature, since)
}

// recvTOS asks the socket for each datagram's TOS byte (ECN), as quic-go
// does through SyscallConn.
func recvTOS(t *testing.T, f *fastConn) {
	t.Helper()
	rc, err := f.SyscallConn()
	if err != nil {
		t.Fatal(err)
	}
	var serr error
	if err := rc.Control(func(fd uintptr) { serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_RECVTOS, 1) }); err != nil || serr != nil {
		t.Fatal(err, serr)
	}
}

// tosOOB is an IP_TOS control message, as quic-go sends for ECN.
func tosOOB(tos byte) []byte {
	b := make([]byte, unix.CmsgSpace(1))
	h := (*unix.Cmsghdr)(unsafe.Pointer(&b[0]))
	h.Level, h.Type = unix.IPPROTO_IP, unix.IP_TOS
	h.SetLen(unix.CmsgLen(1))
	b[unix.CmsgSpace(0)] = tos
	return b
}

// tosOf returns the TOS byte of a received datagram's control messages,
// -1 when there is none.
func tosOf(oob []byte) int {
	for len(oob) > 0 {
		h, body, rest, err := unix.ParseOneSocketControlMessage(oob)
		if err != nil {
			return -1
		}
		if h.Level == unix.IPPROTO_IP && h.Type == unix.IP_TOS && len(body) >= 1 {
			return int(body[0])
		}
		oob = rest
	}
	return -1
}

// readBatchAll reads n datagrams with ReadBatch, as quic-go does.
func readBatchAll(t *testing.T, f *fastConn, n int) []ipv4.Message {
	t.Helper()
	var out []ipv4.Message
	f.SetReadDeadline(time.Now().Add(safety))
	for len(out) < n {
		ms := make([]ipv4.Message, 8)
		for i := range ms {
			ms[i].Buffers = [][]byte{make([]byte, 1500)}
			ms[i].OOB = make([]byte, 128)
		}
		k, err := f.ReadBatch(ms, 0)
		if err != nil {
			t.Fatalf("after %d of %d datagrams: %v", len(out), n, err)
		}
		out = append(out, ms[:k]...)
	}
	return out
}

// A GSO write from quic-go (one buffer, UDP_SEGMENT in the control
// messages) leaves as framed datagrams in GSO runs with its ECN marking,
// and the receiver's ReadBatch returns each datagram on its own, in order,
// the last one shorter, with the TOS byte it arrived with.
func TestFastPathGSOAndECN(t *testing.T) {
	a, fa := fastConnOn(t, Config{GroupSize: 4, Repair: 1})
	b, fb := fastConnOn(t, Config{GroupSize: 4, Repair: 1})
	requireGSO(t, a)
	recvTOS(t, fb)

	const seg, n = 200, 11
	var want [][]byte
	var buf []byte
	for i := range n {
		d := bytes.Repeat([]byte{byte('a' + i)}, seg)
		if i == n-1 {
			d = d[:77]
		}
		want = append(want, d)
		buf = append(buf, d...)
	}
	const ect0 = 0x02
	wrote, _, err := fa.WriteMsgUDP(buf, appendSegmentSize(tosOOB(ect0), seg), fb.LocalAddr().(*net.UDPAddr))
	if err != nil || wrote != len(buf) {
		t.Fatalf("WriteMsgUDP: %d, %v", wrote, err)
	}
	// The first through ReadMsgUDP (the interface's single read), the
	// rest through ReadBatch (quic-go's).
	fb.SetReadDeadline(time.Now().Add(safety))
	first, oob := make([]byte, 1500), make([]byte, 128)
	k, oobn, _, from, err := fb.ReadMsgUDP(first, oob)
	if err != nil {
		t.Fatal(err)
	}
	got := append([]ipv4.Message{{Buffers: [][]byte{first}, OOB: oob, N: k, NN: oobn, Addr: from}}, readBatchAll(t, fb, n-1)...)
	for i, m := range got {
		if d := m.Buffers[0][:m.N]; !bytes.Equal(d, want[i]) {
			t.Errorf("datagram %d: %d bytes %q…, want %d bytes of %q", i, len(d), d[:min(len(d), 4)], len(want[i]), want[i][:1])
		}
		if tos := tosOf(m.OOB[:m.NN]); tos&0x03 != ect0 {
			t.Errorf("datagram %d: TOS %d, want ECN ECT(0)", i, tos)
		}
		if m.Addr.String() != fa.LocalAddr().String() {
			t.Errorf("datagram %d from %v", i, m.Addr)
		}
	}
	if a.fast.gsoIn.Load() != 1 || a.fast.gsoOut.Load() == 0 {
		t.Errorf("GSO writes: %d in, %d runs out; want 1 in and at least one run out", a.fast.gsoIn.Load(), a.fast.gsoOut.Load())
	}
	if b.fast.batchIn.Load() == 0 {
		t.Error("no socket read took more than one datagram, though all were queued before the first read")
	}
	if st := a.Stats(); st.DataSent != n || st.RepairSent < 2 {
		t.Errorf("sent %d data, %d repairs; want %d data and the repairs of the two full groups", st.DataSent, st.RepairSent, n)
	}
}

// The receiving socket coalesces (UDP_GRO): a GSO run of padded data and
// repairs arrives as one train, which the reader splits into the
// datagrams as sent, each with the TOS byte of the train and without the
// train's segment size among its control messages; ReadFrom and
// ReadMsgUDP split trains too.
func TestFastPathCoalescedReceive(t *testing.T) {
	a, fa := fastConnOn(t, Config{GroupSize: 8, Auto: true, FlushIdle: forever, FlushMax: forever})
	b, fb := fastConnOn(t, Config{GroupSize: 8, Auto: true, Hold: forever})
	requireGSO(t, a)
	requireGRO(t, fb)
	recvTOS(t, fb)
	to := fb.LocalAddr().(*net.UDPAddr)
	peerReadsPadded(a, to)

	const seg, n, ect0 = 1200, 40, 0x02
	buf := make([]byte, 0, n*seg)
	for i := range n {
		d := make([]byte, seg)
		if i == n-1 {
			d = d[:345]
		}
		putIndex(d, i)
		for j := 2; j < len(d); j++ {
			d[j] = byte(i * j)
		}
		buf = append(buf, d...)
	}
	if _, _, err := fa.WriteMsgUDP(buf, appendSegmentSize(tosOOB(ect0), seg), to); err != nil {
		t.Fatal(err)
	}
	got := readBatchAll(t, fb, n)
	for i, m := range got {
		want := buf[i*seg : min((i+1)*seg, len(buf))]
		if d := m.Buffers[0][:m.N]; !bytes.Equal(d, want) {
			t.Fatalf("datagram %d: %d bytes, index %d; want %d bytes, index %d", i, len(d), getIndex(d), len(want), i)
		}
		if tos := tosOf(m.OOB[:m.NN]); tos&0x03 != ect0 {
			t.Errorf("datagram %d: TOS %d, want ECN ECT(0)", i, tos)
		}
		if body, _, _ := findCmsg(m.OOB[:m.NN], unix.IPPROTO_UDP, unix.UDP_GRO); body != nil {
			t.Errorf("datagram %d handed on with the train's UDP_GRO control message", i)
		}
	}
	st := b.Stats()
	if b.fast.groIn.Load() == 0 {
		t.Fatal("no coalesced train read: the test did not exercise UDP_GRO")
	}
	if st.DataReceived != n || st.RepairReceived < n/8 || st.Recovered != 0 {
		t.Errorf("receiver %+v: want %d data, at least %d repairs, none rebuilt", st, n, n/8)
	}

	// Three more, read one by one through ReadFrom and ReadMsgUDP.
	trains := b.fast.groIn.Load()
	if _, _, err := fa.WriteMsgUDP(buf[:3*seg], appendSegmentSize(nil, seg), to); err != nil {
		t.Fatal(err)
	}
	one := make([]byte, 1500)
	for i := range 3 {
		var k int
		var err error
		if i == 1 {
			k, _, _, _, err = fb.ReadMsgUDP(one, make([]byte, 128))
		} else {
			k, _, err = fb.ReadFrom(one)
		}
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(one[:k], buf[i*seg:(i+1)*seg]) {
			t.Fatalf("read %d: %d bytes, index %d", i, k, getIndex(one[:k]))
		}
	}
	if b.fast.groIn.Load() == trains {
		t.Error("the three datagrams did not arrive as a train")
	}
}

// Through a relay that drops datagrams, the fast path rebuilds them: every
// datagram reaches the reader whole and in order, some of them rebuilt,
// and every one
// carries control messages (a rebuilt one those of the datagram that
// completed it), so quic-go's ECN counts stay whole.
func TestFastPathRebuildsThroughRelay(t *testing.T) {
	// One group per write, and five: each group's repairs are its own,
	// whatever else the same write flushes.
	for _, per := range []int{8, 40} {
		t.Run(strconv.Itoa(per), func(t *testing.T) { rebuildThroughRelay(t, per) })
	}
}

func rebuildThroughRelay(t *testing.T, per int) {
	a, fa := fastConnOn(t, Config{GroupSize: 8, Repair: 3, Hold: forever})
	b, fb := fastConnOn(t, Config{GroupSize: 8, Repair: 3, Hold: forever})
	recvTOS(t, fb)
	relay := fectest.NewRelay(t, fb.LocalAddr().(*net.UDPAddr), 0.05, 7)
	to := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: relay.Port()}

	const seg = 100
	batches := 160 / per
	total := batches * per
	for k := range batches {
		var buf []byte
		for i := range per {
			d := make([]byte, seg)
			putIndex(d, k*per+i)
			buf = append(buf, d...)
		}
		if _, _, err := fa.WriteMsgUDP(buf, appendSegmentSize(nil, seg), to); err != nil {
			t.Fatal(err)
		}
	}
	// The seeded drops (5%) never take more than 3 of a group of 11, so
	// every datagram must arrive (the hold never gives one up).
	got := readBatchAll(t, fb, total)
	last := -1
	for _, m := range got {
		d := m.Buffers[0][:m.N]
		if len(d) != seg {
			t.Fatalf("datagram of %d bytes", len(d))
		}
		i := getIndex(d)
		if i <= last {
			t.Fatalf("datagram %d after %d", i, last)
		}
		last = i
		if tos := tosOf(m.OOB[:m.NN]); tos < 0 {
			t.Errorf("datagram %d without its control messages", i)
		}
	}
	st := b.Stats()
	_, dropped := relay.Counts()
	t.Logf("relay dropped %d; receiver %+v; sender %+v", dropped, st, a.Stats())
	if dropped == 0 || st.Recovered == 0 {
		t.Fatalf("the relay dropped %d and %d were rebuilt: the test did not exercise recovery", dropped, st.Recovered)
	}
	if len(got) != total || st.Unrecoverable != 0 || st.DataReceived+st.Recovered != uint64(total) {
		t.Errorf("delivered %d of %d; %d received, %d rebuilt, %d given up", len(got), total, st.DataReceived, st.Recovered, st.Unrecoverable)
	}
}

func putIndex(d []byte, i int) { d[0], d[1] = byte(i>>8), byte(i) }
func getIndex(d []byte) int    { return int(d[0])<<8 | int(d[1]) }

// quic-go over the layer takes the fast path as over a bare socket: it
// writes GSO batches and reads in batches, and a 1 MiB stream arrives
// whole.
func TestQUICTakesFastPath(t *testing.T) {
	srv, fs := fastConnOn(t, Config{GroupSize: 16, Repair: 2})
	cli, fc := fastConnOn(t, Config{GroupSize: 16, Repair: 2})
	requireGSO(t, cli)
	ca, err := pki.NewCA("fec test CA")
	if err != nil {
		t.Fatal(err)
	}
	leaf, err := ca.Server("fec.test")
	if err != nil {
		t.Fatal(err)
	}
	cert := leaf.TLS
	qc := &quic.Config{InitialPacketSize: 1280 - Overhead, DisablePathMTUDiscovery: true}
	st := &quic.Transport{Conn: fs}
	defer st.Close()
	ln, err := st.Listen(&tls.Config{Certificates: []tls.Certificate{cert}, NextProtos: []string{"t"}}, qc)
	if err != nil {
		t.Fatal(err)
	}
	ct := &quic.Transport{Conn: fc}
	defer ct.Close()
	ctx, cancel := context.WithTimeout(context.Background(), safety)
	defer cancel()

	payload := make([]byte, 1<<20)
	for i := range payload {
		payload[i] = byte(i * 7)
	}
	recv := make(chan []byte, 1)
	go func() {
		conn, err := ln.Accept(ctx)
		if err != nil {
			recv <- nil
			return
		}
		s, err := conn.AcceptStream(ctx)
		if err != nil {
			recv <- nil
			return
		}
		b, _ := io.ReadAll(s)
		recv <- b
	}()
	conn, err := ct.Dial(ctx, fs.LocalAddr(), &tls.Config{RootCAs: ca.Pool(), ServerName: "fec.test", NextProtos: []string{"t"}}, qc)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.CloseWithError(0, "")
	s, err := conn.OpenStream()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Write(payload); err != nil {
		t.Fatal(err)
	}
	s.Close()
	if got := <-recv; !bytes.Equal(got, payload) {
		t.Fatalf("received %d bytes, want the %d sent", len(got), len(payload))
	}
	if cli.fast.gsoIn.Load() == 0 || cli.fast.gsoOut.Load() == 0 {
		t.Errorf("quic-go's GSO writes through the layer: %d in, %d runs out", cli.fast.gsoIn.Load(), cli.fast.gsoOut.Load())
	}
	if srv.fast.batchIn.Load() == 0 {
		t.Error("the receiving side never read more than one datagram per system call")
	}
	if fs.gro && srv.fast.groIn.Load() == 0 {
		t.Error("the receiving side never read a coalesced train (UDP_GRO) of quic-go's GSO writes")
	}
	if s := srv.Stats(); s.DataReceived == 0 || s.RepairReceived == 0 {
		t.Errorf("receiver stats %+v: the transfer did not go through the layer", s)
	}
}

// BenchmarkLoopbackWrite: one GSO write from quic-go (10 datagrams of
// 1270 bytes) sent over loopback and read back whole with ReadBatch, in
// one goroutine: the system calls of both ends and the kernel's work in
// between, which the other benchmarks leave out. "raw" is quic-go's way
// without the layer (GSO write, batched read of single datagrams);
// "auto" is the layer after a report of no loss (padded, 16+1) with the
// socket coalescing (UDP_GRO); "auto-nogro" the same with UDP_GRO off.
func BenchmarkLoopbackWrite(b *testing.B) {
	for _, mode := range []string{"raw", "auto", "auto-nogro"} {
		b.Run(mode, func(b *testing.B) { benchLoopbackWrite(b, mode) })
	}
}

func benchLoopbackWrite(b *testing.B, mode string) {
	listen := func() *net.UDPConn {
		u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
		if err != nil {
			b.Fatal(err)
		}
		u.SetReadBuffer(4 << 20)
		b.Cleanup(func() { u.Close() })
		return u
	}
	us, ur := listen(), listen()
	const seg, n = 1270, 10
	buf := make([]byte, n*seg)
	oob := appendSegmentSize(tosOOB(0x02), seg)
	to := ur.LocalAddr().(*net.UDPAddr)
	write := us.WriteMsgUDP
	var read func([]ipv4.Message, int) (int, error) = ipv4.NewPacketConn(ur).ReadBatch
	if mode != "raw" {
		cfg := Config{GroupSize: 16, Auto: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))}
		cs, err := New(us, cfg)
		if err != nil {
			b.Fatal(err)
		}
		cr, err := New(ur, cfg)
		if err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { cs.Close(); cr.Close() })
		peerReadsPadded(cs, to)
		fr := cr.PacketConn().(*fastConn)
		if mode == "auto-nogro" && fr.gro {
			rc, _ := ur.SyscallConn()
			rc.Control(func(fd uintptr) { unix.SetsockoptInt(int(fd), unix.IPPROTO_UDP, unix.UDP_GRO, 0) })
			fr.gro = false
		}
		write, read = cs.PacketConn().(*fastConn).WriteMsgUDP, fr.ReadBatch
	}
	ms := make([]ipv4.Message, batchSize)
	for i := range ms {
		ms[i].Buffers = [][]byte{make([]byte, 1452)}
		ms[i].OOB = make([]byte, 128)
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := write(buf, oob, to); err != nil {
			b.Fatal(err)
		}
		for got := 0; got < n; {
			k, err := read(ms, 0)
			if err != nil {
				b.Fatal(err)
			}
			got += k
		}
	}
}

// BenchmarkGSOWrite: one GSO write from quic-go (10 datagrams of 1270
// bytes) through the layer: framing, groups, repairs and GSO runs, with
// "on" (16+2), "auto" before any report (16+1, unpadded, the history kept
// for requests) and "auto" after a report of no loss from a peer that
// reads padded data (padded, 16+1); "raw" is the same write on the socket
// without the layer, what quic-go does with FEC off. The receiving socket
// is not read; the kernel drops what overflows it.
func BenchmarkGSOWrite(b *testing.B) {
	for _, mode := range []struct {
		name   string
		cfg    *Config
		padded bool
	}{
		{"raw", nil, false},
		{"on", &Config{GroupSize: 16, Repair: 2}, false},
		{"auto", &Config{GroupSize: 16, Auto: true}, false},
		{"auto-padded", &Config{GroupSize: 16, Auto: true}, true},
	} {
		b.Run(mode.name, func(b *testing.B) { benchGSOWrite(b, mode.cfg, mode.padded) })
	}
}

func benchGSOWrite(b *testing.B, cfg *Config, padded bool) {
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer u.Close()
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	defer sink.Close()
	const seg = 1270
	buf := make([]byte, 10*seg)
	oob := appendSegmentSize(tosOOB(0x02), seg)
	to := sink.LocalAddr().(*net.UDPAddr)
	write := u.WriteMsgUDP
	if cfg != nil {
		cfg.Logger = slog.New(slog.NewTextHandler(io.Discard, nil))
		c, err := New(u, *cfg)
		if err != nil {
			b.Fatal(err)
		}
		defer c.Close()
		if padded {
			peerReadsPadded(c, to)
		}
		write = c.PacketConn().(*fastConn).WriteMsgUDP
	}
	b.SetBytes(int64(len(buf)))
	b.ReportAllocs()
	for b.Loop() {
		if _, _, err := write(buf, oob, to); err != nil {
			b.Fatal(err)
		}
	}
}

// Every byte the fast path reads out is the byte sent: across reorders,
// a window's worth of slot reuse, and a slot taken again in the same
// socket read while its last datagram waits to be read out (a delivery
// lends its slot's buffers, rxPeer.store).
func TestFastPathKeepsBytes(t *testing.T) {
	_, fb := fastConnOn(t, Config{GroupSize: 16, Repair: 1, Hold: forever})
	src, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	to := fb.LocalAddr()
	sendSeq := func(seq uint32, i int) {
		t.Helper()
		b := make([]byte, dataHeaderLen)
		putData(b, seq)
		if _, err := src.WriteTo(append(b, payload(i)...), to); err != nil {
			t.Fatal(err)
		}
	}
	check := func(ms []ipv4.Message, want []int) {
		t.Helper()
		if len(ms) != len(want) {
			t.Fatalf("read %d datagrams, want %d", len(ms), len(want))
		}
		for k, m := range ms {
			if got := m.Buffers[0][:m.N]; !bytes.Equal(got, payload(want[k])) {
				t.Fatalf("datagram %d of the read: %d bytes, not datagram %d as sent", k, len(got), want[k])
			}
		}
	}

	// In order, and one pair in ten swapped on the way, over three
	// windows' worth of seqs, read out as they come.
	const base, total, chunk = 1 << 20, 3 * window, 64
	for from := 0; from < total; from += chunk {
		var want []int
		for i := from; i < from+chunk; i++ {
			j := i
			switch (i - from) % 10 {
			case 5:
				j = i + 1
			case 6:
				j = i - 1
			}
			sendSeq(uint32(base+j), j)
			want = append(want, i)
		}
		check(readBatchAll(t, fb, chunk), want)
	}

	// Both in one socket read: the first is delivered (its slot's buffer
	// lent to the read-out), the second lands in the same slot a window
	// later and waits behind its gap.
	next := uint32(base + total + 10*window)
	sendSeq(next, 7000)
	sendSeq(next+window, 7001)
	check(readBatchAll(t, fb, 1), []int{7000})
}

// The fast path sends on an IPv6 socket and from a dual-stack socket to
// an IPv4 peer: every datagram of a GSO write with its repairs arrives
// whole.
func TestFastPathAddressFamilies(t *testing.T) {
	for _, tc := range []struct {
		name      string
		network   string
		from, to  net.IP
		toNetwork string
	}{
		{"ipv6", "udp6", net.IPv6loopback, net.IPv6loopback, "udp6"},
		{"dual-stack to ipv4", "udp", net.IPv6unspecified, net.IPv4(127, 0, 0, 1), "udp4"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg := Config{GroupSize: 4, Repair: 1, Hold: forever}
			probe, err := net.ListenUDP(tc.network, &net.UDPAddr{IP: tc.from})
			if err != nil {
				if os.Getenv("CI") == "true" {
					t.Fatalf("no %s socket on %v: %v", tc.network, tc.from, err)
				}
				t.Skipf("no %s socket on %v here (IPv6 loopback needed): %v", tc.network, tc.from, err)
			}
			probe.Close()
			a, fa := fastConnAt(t, tc.network, tc.from, cfg)
			_, fb := fastConnAt(t, tc.toNetwork, tc.to, cfg)
			to := &net.UDPAddr{IP: tc.to, Port: fb.LocalAddr().(*net.UDPAddr).Port}
			const seg, n = 200, 12
			buf := make([]byte, seg*n)
			for i := range n {
				putIndex(buf[i*seg:], i)
			}
			if _, _, err := fa.WriteMsgUDP(buf, appendSegmentSize(nil, seg), to); err != nil {
				t.Fatal(err)
			}
			for i, m := range readBatchAll(t, fb, n) {
				if d := m.Buffers[0][:m.N]; len(d) != seg || getIndex(d) != i || !bytes.Equal(d, buf[i*seg:(i+1)*seg]) {
					t.Fatalf("datagram %d: %d bytes, index %d", i, len(d), getIndex(d))
				}
			}
			if st := a.Stats(); st.DataSent != n || st.RepairSent != n/4 {
				t.Errorf("sent %d data and %d repairs, want %d and %d", st.DataSent, st.RepairSent, n, n/4)
			}
		})
	}
}

// BenchmarkFastReceive: the layer's own work on the receive path, per
// batch of 8 padded 1440-byte datagrams (and a repair per 32) as quic-go
// reads them with ReadBatch, without the system call. "raw" is only what
// the socket read does (one copy into a read buffer), which quic-go pays
// without FEC too; the layer's cost is the difference.
func BenchmarkFastReceive(b *testing.B) {
	for _, mode := range []string{"raw", "auto"} {
		b.Run(mode, func(b *testing.B) { benchFastReceive(b, mode == "auto") })
	}
}

func benchFastReceive(b *testing.B, layer bool) {
	u, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		b.Fatal(err)
	}
	c, err := New(u, Config{GroupSize: 32, Auto: true, Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	f := c.PacketConn().(*fastConn)
	from := &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 9}
	const size = 1440
	quic := make([]ipv4.Message, batchSize)
	for i := range quic {
		quic[i].Buffers = [][]byte{make([]byte, 1500)}
		quic[i].OOB = make([]byte, 128)
	}
	oob := tosOOB(0x02)
	datagram := make([]byte, paddedHeaderLen+size)
	repair := make([]byte, repairHeaderLen+lenPrefix+size)
	var seq uint32
	b.SetBytes(batchSize * size)
	b.ReportAllocs()
	f.readMu.Lock()
	defer f.readMu.Unlock()
	for b.Loop() {
		f.readGen++ // a socket read
		now := time.Now()
		for i := range batchSize {
			m := &f.msgs[i]
			putPadded(datagram, seq)
			putIndex(datagram[paddedHeaderLen:], int(seq))
			n := copy(m.Buffers[0], datagram) // the socket's copy
			if !layer {
				continue
			}
			f.receive(m.Buffers[0][:n], from, oob, now)
			if seq++; seq%32 == 0 {
				// The group's repair; its content does not matter here,
				// as no datagram is missing.
				putRepair(repair, seq-32, 32, 1, 0, 1)
				f.receive(repair, from, oob, now)
			}
		}
		if !layer {
			continue
		}
		for k := 0; k < len(quic) && f.readyHead < len(f.ready); k++ {
			d := f.popReady()
			quic[k].N, quic[k].NN, quic[k].Flags = copyOut(quic[k].Buffers[0], quic[k].OOB, d)
		}
	}
}

// With GSO off (QUIC_GO_DISABLE_GSO, quic-go's own switch) every datagram
// of a GSO write quic-go hands in goes out on its own and arrives whole.
func TestFastPathWithoutGSO(t *testing.T) {
	t.Setenv("QUIC_GO_DISABLE_GSO", "1")
	a, fa := fastConnOn(t, Config{GroupSize: 4, Repair: 1, Hold: forever})
	_, fb := fastConnOn(t, Config{GroupSize: 4, Repair: 1, Hold: forever})
	if a.gso.Load() {
		t.Fatal("GSO still on")
	}
	const seg, n = 300, 10
	buf := make([]byte, seg*n-7) // the last datagram shorter
	for i := range n {
		putIndex(buf[i*seg:], i)
	}
	if _, _, err := fa.WriteMsgUDP(buf, appendSegmentSize(nil, seg), fb.LocalAddr().(*net.UDPAddr)); err != nil {
		t.Fatal(err)
	}
	for i, m := range readBatchAll(t, fb, n) {
		want := buf[i*seg : min((i+1)*seg, len(buf))]
		if d := m.Buffers[0][:m.N]; !bytes.Equal(d, want) {
			t.Fatalf("datagram %d: %d bytes, want %d as sent", i, len(d), len(want))
		}
	}
	if out := a.fast.gsoOut.Load(); out != 0 {
		t.Errorf("%d GSO writes with GSO off", out)
	}
}

// The headers go out exactly as framed: the send buffer is reused without
// being zeroed (txPeer.queue), so every header byte must be written each
// time; the padded header's five bytes after the seq are zeros, whatever
// the buffer held before.
func TestFramesWrittenWhole(t *testing.T) {
	c, f := fastConnOn(t, Config{GroupSize: 4, Auto: true})
	sink, err := net.ListenUDP("udp4", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer sink.Close()
	to := sink.LocalAddr().(*net.UDPAddr)
	peerReadsPadded(c, to)

	const seg, per, writes = 200, 6, 4
	buf := bytes.Repeat([]byte{0xff}, seg*per)
	for range writes {
		if _, _, err := f.WriteMsgUDP(buf, appendSegmentSize(nil, seg), to); err != nil {
			t.Fatal(err)
		}
	}
	var data, repairs int
	var last uint32
	got := make([]byte, 2048)
	sink.SetReadDeadline(time.Now().Add(safety))
	for data < per*writes {
		n, _, err := sink.ReadFrom(got)
		if err != nil {
			t.Fatalf("after %d data and %d repairs: %v", data, repairs, err)
		}
		b := got[:n]
		switch b[0] {
		case tagPadded:
			if n != paddedHeaderLen+seg || !bytes.Equal(b[dataHeaderLen:paddedHeaderLen], make([]byte, 5)) {
				t.Fatalf("padded datagram of %d bytes, header % x", n, b[:paddedHeaderLen])
			}
			if seq := be32(b[1:5]); data > 0 && seq != last+1 {
				t.Fatalf("seq %d after %d", seq, last)
			}
			last = be32(b[1:5])
			data++
		case tagRepair:
			// Groups of 4, or 8 once the followed loss was zero for a
			// second (txPeer.span).
			if g, rr, idx := int(b[5]), int(b[6]), int(b[7]); g < 1 || g > 8 || rr < 1 || idx >= rr {
				t.Fatalf("repair header % x", b[:repairHeaderLen])
			}
			repairs++
		default:
			t.Fatalf("datagram with tag %#x", b[0])
		}
	}
	if repairs == 0 {
		t.Fatal("no repairs: the test did not exercise them")
	}
}

// peerReadsPadded hands c a loss report from peer (no loss) whose flags
// say it answers requests and reads padded data, as an "auto" peer's do.
func peerReadsPadded(c *Conn, peer net.Addr) {
	r := make([]byte, reportFlagsLen)
	putReport(r, 1, lossReport{n: 1000})
	r[reportLen] = flagResends | flagPadded
	c.readMu.Lock()
	defer c.readMu.Unlock()
	c.receive(r, peer, nil, time.Now())
}
