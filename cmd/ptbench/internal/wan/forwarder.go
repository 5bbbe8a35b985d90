package wan

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net/netip"
	"sync"
	"sync/atomic"
	"time"
)

// Clock is the forwarder's time source; tests use a fake one.
type Clock interface {
	Now() time.Time
	// SleepUntil returns at t or when ctx ends.
	SleepUntil(ctx context.Context, t time.Time)
}

type realClock struct{}

func (realClock) Now() time.Time { return time.Now() }
func (realClock) SleepUntil(ctx context.Context, t time.Time) {
	d := time.Until(t)
	if d <= 0 {
		return
	}
	tm := time.NewTimer(d)
	defer tm.Stop()
	select {
	case <-ctx.Done():
	case <-tm.C:
	}
}

// RealClock is the wall clock.
var RealClock Clock = realClock{}

// Device is one end of the forwarder: a TUN device, or a fake in tests.
// Read returns exactly one IP packet.
type Device interface {
	io.Reader
	io.Writer
}

// Stats counts packets and bytes of one direction. Byte counts are whole
// IP packets (header included), as they cross the link.
type Stats struct {
	Read, Filtered, Forwarded, Lost, QueueDrops, WriteErrors uint64
	// SentBytes: packets that entered the link (read and allowed),
	// whatever became of them: what the endpoints put on the wire.
	SentBytes uint64
	// ForwardedBytes: packets delivered to the other device.
	ForwardedBytes uint64
	// DroppedBytes: packets the link dropped (random loss, queue drops).
	DroppedBytes uint64
}

// Sub returns the counts of s since an earlier snapshot o.
func (s Stats) Sub(o Stats) Stats {
	return Stats{
		Read: s.Read - o.Read, Filtered: s.Filtered - o.Filtered, Forwarded: s.Forwarded - o.Forwarded,
		Lost: s.Lost - o.Lost, QueueDrops: s.QueueDrops - o.QueueDrops, WriteErrors: s.WriteErrors - o.WriteErrors,
		SentBytes: s.SentBytes - o.SentBytes, ForwardedBytes: s.ForwardedBytes - o.ForwardedBytes, DroppedBytes: s.DroppedBytes - o.DroppedBytes,
	}
}

// counters are the live Stats of one direction, updated with atomic adds
// on the packet path (no lock per packet).
type counters struct {
	read, filtered, forwarded, lost, queueDrops, writeErrors atomic.Uint64
	sentBytes, forwardedBytes, droppedBytes                  atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Read: c.read.Load(), Filtered: c.filtered.Load(), Forwarded: c.forwarded.Load(),
		Lost: c.lost.Load(), QueueDrops: c.queueDrops.Load(), WriteErrors: c.writeErrors.Load(),
		SentBytes: c.sentBytes.Load(), ForwardedBytes: c.forwardedBytes.Load(), DroppedBytes: c.droppedBytes.Load(),
	}
}

// Forwarder moves packets between two devices, shaping each direction.
type Forwarder struct {
	A, B   Device
	AtoB   *Shaper
	BtoA   *Shaper
	Clock  Clock
	Prefix netip.Prefix // only IPv4 packets with source and destination inside are forwarded

	stats [2]counters
}

// Stats returns the counters of A→B and B→A. Each counter is read
// atomically; a snapshot taken while packets flow may be a packet apart
// between counters.
func (f *Forwarder) Stats() (ab, ba Stats) {
	return f.stats[0].snapshot(), f.stats[1].snapshot()
}

// Allowed reports whether an IP packet may cross: IPv4, both addresses in
// prefix. Everything else (IPv6 router solicitations and the like) is
// dropped, so nothing outside the emulated subnet is ever forwarded.
func Allowed(pkt []byte, prefix netip.Prefix) bool {
	if len(pkt) < 20 || pkt[0]>>4 != 4 {
		return false
	}
	if int(binary.BigEndian.Uint16(pkt[2:4])) > len(pkt) {
		return false
	}
	src := netip.AddrFrom4([4]byte(pkt[12:16]))
	dst := netip.AddrFrom4([4]byte(pkt[16:20]))
	return prefix.Contains(src) && prefix.Contains(dst)
}

type queued struct {
	pkt     []byte
	release time.Time
}

// Run forwards until ctx ends or a device fails to read; it closes the
// devices that are io.Closers before returning.
func (f *Forwarder) Run(ctx context.Context) error {
	if f.Clock == nil {
		f.Clock = RealClock
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	var firstErr atomic.Value
	dir := func(i int, from, to Device, sh *Shaper) {
		c := &f.stats[i]
		q := make(chan queued, 1<<16)
		wg.Add(2)
		go func() { // reader: stamp, shape, enqueue
			defer wg.Done()
			defer close(q)
			buf := make([]byte, 65536)
			for {
				n, err := from.Read(buf)
				if err != nil {
					if ctx.Err() == nil && !errors.Is(err, io.EOF) {
						firstErr.CompareAndSwap(nil, err)
					}
					cancel()
					return
				}
				now := f.Clock.Now()
				pkt := buf[:n]
				c.read.Add(1)
				if !Allowed(pkt, f.Prefix) {
					c.filtered.Add(1)
					continue
				}
				c.sentBytes.Add(uint64(n))
				// Only this goroutine uses sh: no lock.
				release, v := sh.Admit(now, n)
				switch v {
				case DropLoss:
					c.lost.Add(1)
					c.droppedBytes.Add(uint64(n))
					continue
				case DropQueue:
					c.queueDrops.Add(1)
					c.droppedBytes.Add(uint64(n))
					continue
				}
				select {
				case q <- queued{pkt: append([]byte(nil), pkt...), release: release}:
				default: // the delay line itself is full: count as a queue drop
					c.queueDrops.Add(1)
					c.droppedBytes.Add(uint64(n))
				}
			}
		}()
		go func() { // writer: deliver in order at each release time
			defer wg.Done()
			for {
				select {
				case <-ctx.Done():
					return
				case p, ok := <-q:
					if !ok {
						return
					}
					f.Clock.SleepUntil(ctx, p.release)
					if ctx.Err() != nil {
						return
					}
					if _, err := to.Write(p.pkt); err != nil {
						c.writeErrors.Add(1)
					} else {
						c.forwarded.Add(1)
						c.forwardedBytes.Add(uint64(len(p.pkt)))
					}
				}
			}
		}()
	}
	dir(0, f.A, f.B, f.AtoB)
	dir(1, f.B, f.A, f.BtoA)
	<-ctx.Done()
	// Readers block in Read: closing the devices ends them.
	for _, d := range []Device{f.A, f.B} {
		if c, ok := d.(io.Closer); ok {
			c.Close()
		}
	}
	wg.Wait()
	if err, ok := firstErr.Load().(error); ok {
		return err
	}
	return nil
}
