package fec

import (
	"bytes"
	"fmt"
	"sync"
	"testing"
	"time"
)

// wireFrame is one datagram a link saw: its tag and length.
type wireFrame struct {
	tag byte
	n   int
}

// TestPaddedData: a datagram above Config.PacketSize (a path MTU probe of
// quic-go's) is held back until the peer's reports say it reads padded
// data (tag 0x36). From then on every data datagram goes out padded, as
// long as a repair of a full group of datagrams its size, so a probe that
// gets through proves the size for the repairs too, and the receiver
// delivers the datagrams unchanged. A peer whose reports lack the flag
// (framing version 3) never gets padded data, and nothing above
// PacketSize.
func TestPaddedData(t *testing.T) {
	const limit = 800 // above payload(0..7)
	big := func(i int) []byte {
		b := bytes.Repeat([]byte{byte(i)}, 1000)
		b[0] = 0x40
		return b
	}
	for _, peerReads := range []bool{true, false} {
		t.Run(fmt.Sprintf("peer_reads_padded=%v", peerReads), func(t *testing.T) {
			p := newPair(t, Config{GroupSize: 4, Repair: 1, Auto: true, PacketSize: limit, Hold: forever, FlushIdle: forever, FlushMax: forever})
			var mu sync.Mutex
			var fromA []wireFrame
			p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
				if from == p.a.LocalAddr().String() {
					mu.Lock()
					fromA = append(fromA, wireFrame{b[0], len(b)})
					mu.Unlock()
				} else if b[0] == tagReport && !peerReads && len(b) >= reportFlagsLen {
					b = append([]byte(nil), b...)
					b[reportLen] &^= flagPadded
				}
				emit(b)
			})
			taken := func() []wireFrame {
				mu.Lock()
				defer mu.Unlock()
				f := fromA
				fromA = nil
				return f
			}
			stop := drain(p.a) // a reads to take b's reports
			defer stop()

			// Before any report: the large datagram is not sent, the
			// small ones are, unpadded.
			if _, err := p.a.WriteTo(big(0), p.b.LocalAddr()); err != nil {
				t.Fatal(err)
			}
			if f := taken(); len(f) != 0 || p.a.Stats().HeldBack != 1 {
				t.Fatalf("a datagram above PacketSize before any report: %v on the link, %d held back; want none, 1", f, p.a.Stats().HeldBack)
			}
			p.send(t, 0, 4) // one full group, the repair behind it
			if got := p.read(t, 4); fmt.Sprint(got) != fmt.Sprint(seq(0, 4)) {
				t.Fatalf("got %v, want %v", got, seq(0, 4))
			}
			for _, f := range taken() {
				if f.tag != tagData && f.tag != tagRepair {
					t.Fatalf("before any report: frame %+v, want plain data and repairs", f)
				}
			}
			deadline := time.Now().Add(safety)
			for p.a.Stats().ReportsReceived == 0 && time.Now().Before(deadline) {
				time.Sleep(time.Millisecond)
			}
			if p.a.Stats().ReportsReceived == 0 {
				t.Fatal("no report reached the sender")
			}

			// After the report: a full group of large datagrams.
			const full = 4
			for i := 1; i <= full; i++ {
				if _, err := p.a.WriteTo(big(i), p.b.LocalAddr()); err != nil {
					t.Fatal(err)
				}
			}
			frames := taken()
			if !peerReads {
				if len(frames) != 0 || p.a.Stats().HeldBack != 5 {
					t.Fatalf("to a version-3 peer: %v went out, %d held back; want every datagram above PacketSize held back", frames, p.a.Stats().HeldBack)
				}
				p.send(t, 4, 8)
				if got := p.read(t, 4); fmt.Sprint(got) != fmt.Sprint(seq(4, 8)) {
					t.Fatalf("got %v, want %v", got, seq(4, 8))
				}
				for _, f := range taken() {
					if f.tag == tagPadded {
						t.Fatalf("padded data went to a version-3 peer: %+v", f)
					}
				}
				return
			}
			want := 1000 + Overhead
			var data, repairs int
			for _, f := range frames {
				switch {
				case f.tag == tagPadded && f.n == want:
					data++
				case f.tag == tagRepair && f.n == want:
					repairs++
				default:
					t.Fatalf("frame %+v; want padded data and repairs, all %d bytes", f, want)
				}
			}
			if data != full || repairs != 1 {
				t.Fatalf("%d padded data and %d repairs, want %d and 1", data, repairs, full)
			}
			buf := make([]byte, 2048)
			for i := 1; i <= full; i++ {
				p.b.SetReadDeadline(time.Now().Add(safety))
				n, _, err := p.b.ReadFrom(buf)
				if err != nil || !bytes.Equal(buf[:n], big(i)) {
					t.Fatalf("datagram %d: %d bytes, err %v, want it unchanged", i, n, err)
				}
			}
		})
	}
}
