package fec

import (
	"fmt"
	"sync"
	"testing"
	"time"
)

// firstLoss is a link from a that loses the first transmission of the
// data datagrams whose payload index is in drop (every transmission of
// those in always), and counts what it saw.
type firstLoss struct {
	mu     sync.Mutex
	from   string
	drop   map[int]bool
	always map[int]bool
	sent   map[int]int // transmissions seen, by payload index
	asks   int         // requests seen going the other way
}

func (l *firstLoss) link(from, to string, b []byte, emit func([]byte)) {
	l.mu.Lock()
	if from != l.from {
		if b[0] == tagAsk {
			l.asks++
		}
		l.mu.Unlock()
		emit(b)
		return
	}
	lose := false
	if _, payload, ok := parseData(b); ok {
		i := index(payload)
		l.sent[i]++
		lose = l.always[i] || l.drop[i] && l.sent[i] == 1
	}
	l.mu.Unlock()
	if !lose {
		emit(b)
	}
}

func (l *firstLoss) counts() (sent map[int]int, asks int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	sent = map[int]int{}
	for k, v := range l.sent {
		sent[k] = v
	}
	return sent, l.asks
}

// resendPair is a pair in the adaptive mode whose receiver b has learnt
// from a report of a's (flags included) that a resends, or, with flags
// false, got a report of a version without them.
func resendPair(t *testing.T, cfg Config, flags bool, l *firstLoss) (*pair, func()) {
	t.Helper()
	cfg.Auto = true
	p := newPair(t, cfg)
	l.from = p.a.LocalAddr().String()
	l.sent = map[int]int{}
	p.net.setLink(l.link)
	b := make([]byte, reportFlagsLen)
	putReport(b, 1, lossReport{n: 100})
	if flags {
		b[reportLen] = flagResends
	} else {
		b = b[:reportLen]
	}
	inject(p.b, b, p.a.LocalAddr())
	return p, drain(p.a) // a reads to take b's requests
}

// TestResendBeyondRepair: two losses in a group of 8 with one repair are
// beyond its repairs; the receiver asks for them once, the sender sends
// them again, and all 16 datagrams arrive in order, none given up (the
// first resent one lets the repair rebuild the other). The
// link's loss is still counted (the meter, which drives the repairs),
// and the request's round trip is measured.
func TestResendBeyondRepair(t *testing.T) {
	l := &firstLoss{drop: map[int]bool{2: true, 3: true}}
	p, stop := resendPair(t, Config{GroupSize: 8, Repair: 1, Hold: 5 * time.Millisecond, FlushIdle: forever, FlushMax: forever}, true, l)
	defer stop()
	p.send(t, 0, 16)
	if got := p.read(t, 16); fmt.Sprint(got) != fmt.Sprint(seq(0, 16)) {
		t.Fatalf("got %v, want %v", got, seq(0, 16))
	}
	st := p.b.Stats()
	if st.Unrecoverable != 0 || st.Retrieved < 1 || st.Retrieved+st.Recovered != 2 || st.AsksSent != 1 {
		t.Fatalf("receiver stats %+v: want 2 retrieved or rebuilt after one request, none given up", st)
	}
	// The sender counts its resends once both are out, which may be
	// after the receiver had what it needed from the first.
	deadline := time.Now().Add(safety)
	for p.a.Stats().Resent < 2 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	if st := p.a.Stats(); st.Resent != 2 || st.DataSent != 16 {
		t.Fatalf("sender stats %+v: want 2 resent, 16 data", st)
	}
	sent, asks := l.counts()
	if sent[2] != 2 || sent[3] != 2 || sent[4] != 1 || asks != 1 {
		t.Fatalf("on the link: transmissions %v, %d requests", sent, asks)
	}
	p.b.readMu.Lock()
	rx := p.b.rx[addrKey(p.a.LocalAddr())]
	w, rtt := rx.meter.window(), rx.askRTT
	p.b.readMu.Unlock()
	if w.lost != 2 || w.n != 16 {
		t.Fatalf("meter %+v: the resent datagrams must count as lost by the link", w)
	}
	if rtt <= 0 {
		t.Fatalf("request round trip not measured")
	}
}

// TestGapsGivenUp: datagrams 2 and 3 of a group of 8 with one repair end
// given up, the rest delivered in order, when the resent datagrams are
// lost too (one request, each sent again once) and when the peer's
// reports carry no flags (an "auto" end of framing version 2: never
// asked, given up after the hold as before this version).
func TestGapsGivenUp(t *testing.T) {
	for _, c := range []struct {
		name       string
		l          *firstLoss
		flags      bool
		asks, sent int // requests on the link, transmissions of datagram 2
	}{
		{"resend lost too", &firstLoss{always: map[int]bool{2: true, 3: true}}, true, 1, 2},
		{"older peer", &firstLoss{drop: map[int]bool{2: true, 3: true}}, false, 0, 1},
	} {
		t.Run(c.name, func(t *testing.T) {
			p, stop := resendPair(t, Config{GroupSize: 8, Repair: 1, Hold: 5 * time.Millisecond, FlushIdle: forever, FlushMax: forever}, c.flags, c.l)
			defer stop()
			p.send(t, 0, 16)
			want := append(seq(0, 2), seq(4, 16)...)
			if got := p.read(t, 14); fmt.Sprint(got) != fmt.Sprint(want) {
				t.Fatalf("got %v, want %v", got, want)
			}
			if st := p.b.Stats(); st.Unrecoverable != 2 || st.Retrieved != 0 || st.AsksSent != uint64(c.asks) {
				t.Fatalf("receiver stats %+v", st)
			}
			if sent, asks := c.l.counts(); sent[2] != c.sent || asks != c.asks {
				t.Fatalf("on the link: transmissions %v, %d requests; want datagram 2 sent %d times, %d requests", sent, asks, c.sent, c.asks)
			}
		})
	}
}

// TestResendAnswersAtMostTwice: a request repeated (or spoofed) makes the
// sender send a datagram again at most maxResend times; seqs it no
// longer holds, and malformed requests, are ignored; an "on" end, which
// keeps no history, counts a request as a mismatch.
func TestResendAnswersAtMostTwice(t *testing.T) {
	l := &firstLoss{}
	p, stop := resendPair(t, Config{GroupSize: 8, Repair: 1, Hold: forever, FlushIdle: forever, FlushMax: forever}, true, l)
	defer stop()
	p.send(t, 0, 8)
	if got := p.read(t, 8); len(got) != 8 {
		t.Fatalf("got %v", got)
	}
	tx := p.a.txPeer(p.b.LocalAddr())
	tx.mu.Lock()
	last := tx.seq - 1
	tx.mu.Unlock()
	ask := func(seqs ...uint32) []byte {
		b := []byte{tagAsk, byte(len(seqs))}
		for _, s := range seqs {
			b = append(b, byte(s>>24), byte(s>>16), byte(s>>8), byte(s))
		}
		return b
	}
	// The requests go over the link (a's reads are drained); one for
	// datagram 6 last: once it was answered, a handled all before it.
	from := p.b.pc
	for _, b := range [][]byte{ask(last), ask(last), ask(last),
		ask(last+1, last-window), // never sent; overwritten
		ask(last)[:3],            // cut short
		{tagAsk, 0},
		ask(last - 1)} {
		if _, err := from.WriteTo(b, p.a.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
	deadline := time.Now().Add(safety)
	for sent, _ := l.counts(); sent[6] < 2 && time.Now().Before(deadline); sent, _ = l.counts() {
		time.Sleep(time.Millisecond)
	}
	if st := p.a.Stats(); st.Resent != maxResend+1 || st.Mismatched != 0 {
		t.Fatalf("sender stats %+v: want %d resent", st, maxResend+1)
	}
	if sent, _ := l.counts(); sent[7] != 1+maxResend || sent[6] != 2 {
		t.Fatalf("datagrams 7 and 6 sent %d and %d times, want %d and 2", sent[7], sent[6], 1+maxResend)
	}
	for _, b := range [][]byte{ask(1, 2), ask(last)[:6], {tagAsk}} {
		if got := parseAsk(b, nil); len(b) == 10 != (len(got) == 2) {
			t.Errorf("parseAsk(%x) = %v", b, got)
		}
	}

	on := newPair(t, Config{GroupSize: 8, Repair: 1})
	inject(on.a, ask(1), on.b.LocalAddr())
	if st := on.a.Stats(); st.Mismatched != 1 || st.Resent != 0 {
		t.Fatalf(`"on" end: stats %+v, want the request counted as a mismatch`, st)
	}
}

// TestAskOnlyForSparseIsolatedLoss: when a hold ends, the receiver asks
// for an isolated loss in a sparse flow, but not when more than
// askMaxMissing datagrams are missing (clustered losses: a queue
// overflowing) nor when more than askMaxSpan arrived behind the gap (a
// dense flow, quic-go's window large): those gaps are given up, as
// without resending, so that quic-go sees the loss. The datagrams a sent
// are handed to b with chosen arrival times, and the hold is ended at a
// chosen time, so the outcome does not depend on the machine's speed.
func TestAskOnlyForSparseIsolatedLoss(t *testing.T) {
	for _, c := range []struct {
		name  string
		drop  []int
		total int
		asks  uint64
	}{
		{"isolated", []int{2, 3}, 16, 1},
		{"clustered", []int{2, 3, 4}, 16, 0},
		{"dense", []int{2, 3}, askMaxSpan + 16, 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := Config{GroupSize: 8, Repair: 1, Auto: true, Hold: 5 * time.Millisecond, FlushIdle: forever, FlushMax: forever}
			p := newPair(t, cfg)
			drop := map[int]bool{}
			for _, i := range c.drop {
				drop[i] = true
			}
			var mu sync.Mutex
			var wire [][]byte
			from := p.a.LocalAddr().String()
			p.net.setLink(func(f, to string, b []byte, emit func([]byte)) {
				if f != from {
					emit(b)
					return
				}
				if _, payload, ok := parseData(b); !ok || !drop[index(payload)] {
					mu.Lock()
					wire = append(wire, append([]byte(nil), b...))
					mu.Unlock()
				}
			})
			p.send(t, 0, c.total)
			flags := make([]byte, reportFlagsLen)
			putReport(flags, 1, lossReport{n: 100})
			flags[reportLen] = flagResends
			t0 := time.Now()
			injectAt(p.b, flags, p.a.LocalAddr(), t0)
			mu.Lock()
			for _, b := range wire {
				injectAt(p.b, b, p.a.LocalAddr(), t0)
			}
			mu.Unlock()
			p.b.readMu.Lock()
			p.b.expireHolds(t0.Add(cfg.Hold + time.Millisecond))
			p.b.readMu.Unlock()
			st := p.b.Stats()
			given := uint64(len(c.drop))
			if c.asks > 0 {
				given = 0 // held for the request
			}
			if st.AsksSent != c.asks || st.Unrecoverable != given {
				t.Fatalf("receiver stats %+v: want %d requests, %d given up", st, c.asks, given)
			}
		})
	}
}

// BenchmarkRemember: keeping one 1270-byte data datagram in the sender's
// history (what resending on request adds to every datagram sent with
// "auto"; compare BenchmarkGSOWrite's cost per datagram).
func BenchmarkRemember(b *testing.B) {
	p := &txPeer{}
	buf := make([]byte, 1270)
	b.SetBytes(int64(len(buf)))
	var seq uint32
	for b.Loop() {
		p.remember(seq, buf)
		seq++
	}
}
