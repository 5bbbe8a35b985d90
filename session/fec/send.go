package fec

import (
	"crypto/rand"
	"encoding/binary"
	"net"
	"sync"
	"sync/atomic"
	"time"
)

// txPeer is the send state towards one address: the open group and its
// timer. mu serialises the writes to that address and the timer's flush.
type txPeer struct {
	c       *Conn
	addr    net.Addr
	lastUse atomic.Int64 // unix nanos of the last write (eviction)

	mu      sync.Mutex // guards everything below
	stopped bool
	seq     uint32   // seq of the next data datagram
	first   uint32   // seq of the open group's first datagram
	shards  [][]byte // open group: shard i = length prefix + datagram (+ padding at flush)
	n       int      // datagrams in the open group
	firstAt time.Time
	lastAt  time.Time
	timer   *time.Timer // flushes the open group (idle or FlushMax)
	armed   bool
	frame   []byte
	enc     codecs
}

func newTxPeer(c *Conn, addr net.Addr) *txPeer {
	var b [4]byte
	_, _ = rand.Read(b[:])
	p := &txPeer{
		c:      c,
		addr:   addr,
		seq:    binary.BigEndian.Uint32(b[:]),
		shards: make([][]byte, c.cfg.GroupSize+c.cfg.Repair),
		frame:  make([]byte, 0, 1600),
		enc:    codecs{},
	}
	p.timer = time.AfterFunc(time.Hour, p.onTimer)
	p.timer.Stop()
	return p
}

// stop disables the timer for good; a flush already running finds stopped
// set and sends nothing.
func (p *txPeer) stop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stopped = true
	p.timer.Stop()
}

func (p *txPeer) write(b []byte) (int, error) {
	c := p.c
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return 0, net.ErrClosed
	}
	seq := p.seq
	p.seq++
	p.frame = append(p.frame[:0], make([]byte, dataHeaderLen)...)
	putData(p.frame, seq)
	p.frame = append(p.frame, b...)
	if _, err := c.pc.WriteTo(p.frame, p.addr); err != nil {
		p.seq-- // not sent: the next datagram takes its seq
		return 0, err
	}
	c.st.dataSent.Add(1)

	now := time.Now()
	if p.n == 0 {
		p.first = seq
		p.firstAt = now
	}
	s := p.shards[p.n][:0]
	s = binary.BigEndian.AppendUint16(s, uint16(len(b)))
	p.shards[p.n] = append(s, b...)
	p.n++
	p.lastAt = now
	if p.n == c.cfg.GroupSize {
		p.flushLocked()
	} else if !p.armed {
		p.armed = true
		p.timer.Reset(c.cfg.FlushIdle)
	}
	return len(b), nil
}

// onTimer closes the open group when the sender went idle or the group is
// FlushMax old; otherwise it re-arms for the earlier of the two.
func (p *txPeer) onTimer() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.armed = false
	if p.stopped || p.n == 0 {
		return
	}
	now := time.Now()
	due := min(p.lastAt.Add(p.c.cfg.FlushIdle).Sub(now), p.firstAt.Add(p.c.cfg.FlushMax).Sub(now))
	if due > 0 {
		p.armed = true
		p.timer.Reset(due)
		return
	}
	p.flushLocked()
}

// flushLocked sends the open group's repairs and starts a new group.
func (p *txPeer) flushLocked() {
	c := p.c
	n := p.n
	p.n = 0
	if p.armed {
		p.armed = false
		p.timer.Stop()
	}
	if n == 0 || p.stopped {
		return
	}
	r := repairCount(n, c.cfg.GroupSize, c.cfg.Repair)
	size := 0
	for _, s := range p.shards[:n] {
		size = max(size, len(s))
	}
	for i := range n + r {
		s := p.shards[i]
		if i >= n {
			s = s[:0]
		}
		l := len(s)
		if cap(s) < size {
			s = append(s[:cap(s)], make([]byte, size-cap(s))...)
		}
		s = s[:size]
		clear(s[l:])
		p.shards[i] = s
	}
	enc, err := p.enc.get(n, r)
	if err == nil {
		err = enc.Encode(p.shards[:n+r])
	}
	if err != nil {
		c.log.Debug("fec: encoding a group failed", "error", err.Error())
		return
	}
	for i := range r {
		p.frame = append(p.frame[:0], make([]byte, repairHeaderLen)...)
		putRepair(p.frame, p.first, n, r, i)
		p.frame = append(p.frame, p.shards[n+i]...)
		if _, err := c.pc.WriteTo(p.frame, p.addr); err == nil {
			c.st.repairSent.Add(1)
		}
	}
}
