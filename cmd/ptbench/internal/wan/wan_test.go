package wan

import (
	"context"
	"errors"
	"io"
	"math"
	"net/netip"
	"sync"
	"testing"
	"time"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestShaperDelayOnly(t *testing.T) {
	s := NewShaper(Link{Delay: 25 * time.Millisecond}, 1)
	for i := range 10 {
		now := t0.Add(time.Duration(i) * time.Millisecond)
		rel, v := s.Admit(now, 1500)
		if v != Forward || rel != now.Add(25*time.Millisecond) {
			t.Fatalf("packet %d: %v %v", i, v, rel.Sub(now))
		}
	}
}

func TestShaperLossRateAndDeterminism(t *testing.T) {
	const n = 200000
	run := func(seed uint64) (lost int, pattern []bool) {
		s := NewShaper(Link{Delay: time.Millisecond, Loss: 0.01}, seed)
		for i := range n {
			_, v := s.Admit(t0.Add(time.Duration(i)*time.Microsecond), 100)
			pattern = append(pattern, v == DropLoss)
			if v == DropLoss {
				lost++
			}
		}
		return
	}
	lost, p1 := run(42)
	// 1% of 200000 = 2000, σ ≈ 44.5: allow 5σ.
	if math.Abs(float64(lost)-2000) > 225 {
		t.Fatalf("lost %d of %d at 1%%", lost, n)
	}
	_, p2 := run(42)
	for i := range p1 {
		if p1[i] != p2[i] {
			t.Fatalf("same seed, different loss at packet %d", i)
		}
	}
	_, p3 := run(43)
	same := true
	for i := range p1 {
		if p1[i] != p3[i] {
			same = false
			break
		}
	}
	if same {
		t.Fatal("different seeds gave the same loss pattern")
	}
}

func TestShaperRateSerialisesAndDropsTail(t *testing.T) {
	// 8 Mbit/s = 1 byte/µs: a 1000-byte packet takes 1 ms.
	s := NewShaper(Link{Delay: 10 * time.Millisecond, RateBps: 8_000_000, QueueBytes: 3000}, 1)
	// Three packets at once: leave at 1, 2, 3 ms (+10 ms delay).
	for i := 1; i <= 3; i++ {
		rel, v := s.Admit(t0, 1000)
		if v != Forward || rel != t0.Add(time.Duration(10+i)*time.Millisecond) {
			t.Fatalf("packet %d: %v at %v", i, v, rel.Sub(t0))
		}
	}
	// The queue holds 3000 bytes of backlog: a fourth is dropped.
	if _, v := s.Admit(t0, 1000); v != DropQueue {
		t.Fatalf("fourth packet: %v, want DropQueue", v)
	}
	// 1.5 ms later 1500 bytes drained: room again.
	rel, v := s.Admit(t0.Add(1500*time.Microsecond), 1000)
	if v != Forward || rel != t0.Add(14*time.Millisecond) {
		t.Fatalf("after drain: %v at %v", v, rel.Sub(t0))
	}
	// Idle link: no backlog, just serialisation + delay.
	now := t0.Add(time.Second)
	if rel, _ := s.Admit(now, 500); rel != now.Add(10*time.Millisecond+500*time.Microsecond) {
		t.Fatalf("idle: %v", rel.Sub(now))
	}
	if s.QueueDrops != 1 || s.Forwarded != 5 {
		t.Fatalf("counters: %d drops %d forwarded", s.QueueDrops, s.Forwarded)
	}
}

func TestShaperDefaultQueueIsBDP(t *testing.T) {
	s := NewShaper(Link{Delay: 25 * time.Millisecond, RateBps: 100_000_000}, 1)
	if q := s.Link().QueueBytes; q != 625000 {
		t.Fatalf("queue %d, want 625000 (100 Mbit/s × 50 ms)", q)
	}
	if q := NewShaper(Link{}, 1).Link().QueueBytes; q != 64<<10 {
		t.Fatalf("queue %d without rate", q)
	}
}

func TestShaperJitterBoundedAndNoReordering(t *testing.T) {
	s := NewShaper(Link{Delay: 20 * time.Millisecond, Jitter: 5 * time.Millisecond}, 7)
	var last time.Time
	minD, maxD := time.Hour, time.Duration(0)
	for i := range 10000 {
		now := t0.Add(time.Duration(i) * 100 * time.Microsecond)
		rel, v := s.Admit(now, 100)
		if v != Forward {
			t.Fatal("no loss configured")
		}
		if rel.Before(last) {
			t.Fatalf("packet %d overtakes its predecessor", i)
		}
		last = rel
		d := rel.Sub(now)
		minD, maxD = min(minD, d), max(maxD, d)
	}
	// A packet may be held back behind a slower predecessor, so the upper
	// bound is Delay+Jitter; the lower bound is Delay-Jitter.
	if minD < 15*time.Millisecond || maxD > 25*time.Millisecond {
		t.Fatalf("delay range [%v, %v], want within [15ms, 25ms]", minD, maxD)
	}
	if maxD-minD < 5*time.Millisecond {
		t.Fatalf("jitter not applied: range [%v, %v]", minD, maxD)
	}
}

// fakeClock advances only when the forwarder sleeps: SleepUntil jumps to
// the release time, so a test runs at once whatever the delays.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
	log []time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) SleepUntil(ctx context.Context, t time.Time) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.log = append(c.log, t)
	if t.After(c.now) {
		c.now = t
	}
}

// chanDev is a fake TUN: Read takes packets from in, Write records them.
type chanDev struct {
	in     chan []byte
	mu     sync.Mutex
	out    [][]byte
	closed chan struct{}
	once   sync.Once
}

func newChanDev() *chanDev { return &chanDev{in: make(chan []byte, 100), closed: make(chan struct{})} }

func (d *chanDev) Read(b []byte) (int, error) {
	select {
	case p := <-d.in:
		return copy(b, p), nil
	case <-d.closed:
		return 0, io.EOF
	}
}

func (d *chanDev) Write(b []byte) (int, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.out = append(d.out, append([]byte(nil), b...))
	return len(b), nil
}

func (d *chanDev) Close() error { d.once.Do(func() { close(d.closed) }); return nil }

func (d *chanDev) written() [][]byte {
	d.mu.Lock()
	defer d.mu.Unlock()
	return append([][]byte(nil), d.out...)
}

func ipv4(src, dst string, id byte) []byte {
	p := make([]byte, 28)
	p[0] = 0x45
	p[3] = 28
	p[5] = id
	s, d := netip.MustParseAddr(src).As4(), netip.MustParseAddr(dst).As4()
	copy(p[12:], s[:])
	copy(p[16:], d[:])
	return p
}

func TestAllowed(t *testing.T) {
	pfx := DefaultPrefix
	if !Allowed(ipv4("10.201.0.1", "10.201.0.2", 0), pfx) {
		t.Fatal("in-subnet packet refused")
	}
	if Allowed(ipv4("10.201.0.1", "8.8.8.8", 0), pfx) || Allowed(ipv4("192.168.1.1", "10.201.0.2", 0), pfx) {
		t.Fatal("packet leaving the subnet allowed")
	}
	v6 := make([]byte, 40)
	v6[0] = 0x60
	if Allowed(v6, pfx) || Allowed([]byte{0x45}, pfx) {
		t.Fatal("IPv6 or truncated packet allowed")
	}
}

func TestForwarderWithFakeClock(t *testing.T) {
	a, b := newChanDev(), newChanDev()
	clk := &fakeClock{now: t0}
	f := &Forwarder{
		A: a, B: b, Clock: clk, Prefix: DefaultPrefix,
		AtoB: NewShaper(Link{Delay: 25 * time.Millisecond}, 1),
		BtoA: NewShaper(Link{Delay: 25 * time.Millisecond, Loss: 1}, 1), // B→A loses everything
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	for i := range 5 {
		a.in <- ipv4("10.201.0.1", "10.201.0.2", byte(i))
	}
	a.in <- ipv4("10.201.0.1", "1.1.1.1", 99) // outside: filtered
	b.in <- ipv4("10.201.0.2", "10.201.0.1", 50)
	deadline := time.Now().Add(5 * time.Second)
	for {
		ab, ba := f.Stats()
		if ab.Forwarded == 5 && ab.Filtered == 1 && ba.Lost == 1 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats a→b %+v b→a %+v", ab, ba)
		}
		time.Sleep(time.Millisecond)
	}
	got := b.written()
	for i, p := range got {
		if p[5] != byte(i) {
			t.Fatalf("packet %d out of order (id %d)", i, p[5])
		}
	}
	if len(a.written()) != 0 {
		t.Fatal("a lost packet was delivered")
	}
	// Every delivery waited for its release, 25 ms after its stamp. The
	// fake clock only moves when the writer sleeps, by the 25 ms it waits,
	// so a packet is stamped at t0 or, if the reader got to it after the
	// writer's first sleep, at t0+25ms: releases are whole multiples of
	// 25 ms, never earlier than t0+25ms.
	clk.mu.Lock()
	if len(clk.log) == 0 {
		t.Error("no release was waited for")
	}
	for _, r := range clk.log {
		if d := r.Sub(t0); d < 25*time.Millisecond || d%(25*time.Millisecond) != 0 {
			t.Errorf("release at %v, want t0 + a positive multiple of 25ms", d)
		}
	}
	clk.mu.Unlock()
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

type failDev struct{ *chanDev }

func (d *failDev) Read([]byte) (int, error) { return 0, errors.New("boom") }

func TestForwarderReportsReadError(t *testing.T) {
	f := &Forwarder{A: &failDev{newChanDev()}, B: newChanDev(), Prefix: DefaultPrefix,
		AtoB: NewShaper(Link{}, 1), BtoA: NewShaper(Link{}, 1)}
	done := make(chan error, 1)
	go func() { done <- f.Run(context.Background()) }()
	select {
	case err := <-done:
		if err == nil || err.Error() != "boom" {
			t.Fatalf("err %v", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Run did not end on a read error")
	}
}

// ipv4Sized is an IPv4 packet of size bytes (header total length set).
func ipv4Sized(src, dst string, id byte, size int) []byte {
	p := make([]byte, size)
	copy(p, ipv4(src, dst, id))
	p[2], p[3] = byte(size>>8), byte(size)
	return p
}

// Byte counters: what was delivered is counted as forwarded, what the link
// dropped as dropped, both as sent; filtered packets count in neither.
func TestForwarderCountsBytes(t *testing.T) {
	a, b := newChanDev(), newChanDev()
	f := &Forwarder{
		A: a, B: b, Clock: &fakeClock{now: t0}, Prefix: DefaultPrefix,
		AtoB: NewShaper(Link{Delay: time.Millisecond}, 1),
		BtoA: NewShaper(Link{Delay: time.Millisecond, Loss: 1}, 1), // B→A loses everything
	}
	before, _ := f.Stats()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	sizes := []int{28, 1500, 1200, 60}
	var want uint64
	for i, n := range sizes {
		a.in <- ipv4Sized("10.201.0.1", "10.201.0.2", byte(i), n)
		want += uint64(n)
	}
	a.in <- ipv4Sized("10.201.0.1", "9.9.9.9", 9, 1000) // filtered
	b.in <- ipv4Sized("10.201.0.2", "10.201.0.1", 50, 700)
	b.in <- ipv4Sized("10.201.0.2", "10.201.0.1", 51, 300)
	deadline := time.Now().Add(5 * time.Second)
	var ab, ba Stats
	for {
		ab, ba = f.Stats()
		if ab.Forwarded == uint64(len(sizes)) && ab.Filtered == 1 && ba.Lost == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("stats a→b %+v b→a %+v", ab, ba)
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ab = ab.Sub(before)
	var delivered uint64
	for _, p := range b.written() {
		delivered += uint64(len(p))
	}
	if ab.ForwardedBytes != want || delivered != want || ab.SentBytes != want || ab.DroppedBytes != 0 {
		t.Errorf("a→b: forwarded %d, sent %d, dropped %d bytes; delivered %d; want %d forwarded and sent", ab.ForwardedBytes, ab.SentBytes, ab.DroppedBytes, delivered, want)
	}
	if ba.ForwardedBytes != 0 || ba.SentBytes != 1000 || ba.DroppedBytes != 1000 || len(a.written()) != 0 {
		t.Errorf("b→a: forwarded %d, sent %d, dropped %d bytes, want 0, 1000, 1000", ba.ForwardedBytes, ba.SentBytes, ba.DroppedBytes)
	}
}
