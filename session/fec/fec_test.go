package fec

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"math/rand/v2"
	"net"
	"os"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// safety bounds every wait: a safety net, not a timing assertion.
const safety = 20 * time.Second

// forever is a hold no test outlives: recovery, not the hold's expiry,
// must deliver.
const forever = time.Hour

// pair is a sender and a receiver Conn over a memNet.
type pair struct {
	net  *memNet
	a, b *Conn
	logs *syncBuf
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func newPair(t *testing.T, cfg Config) *pair {
	t.Helper()
	p := &pair{net: newMemNet(), logs: &syncBuf{}}
	cfg.Logger = slog.New(slog.NewTextHandler(p.logs, nil))
	var err error
	if p.a, err = New(p.net.listen(1), cfg); err != nil {
		t.Fatal(err)
	}
	if p.b, err = New(p.net.listen(2), cfg); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.a.Close(); p.b.Close() })
	return p
}

// payload is datagram i: distinct content and a size that varies, so
// shards need padding.
func payload(i int) []byte {
	b := make([]byte, 40+(i*97)%1200)
	binary.BigEndian.PutUint32(b, uint32(i))
	for j := 4; j < len(b); j++ {
		b[j] = byte(i + j)
	}
	b[0] = 0x40 // a QUIC short header's first byte
	return b
}

func index(b []byte) int { return int(binary.BigEndian.Uint32(b) &^ (0x40 << 24)) }

// send writes datagrams from..to-1 from a to b.
func (p *pair) send(t *testing.T, from, to int) {
	t.Helper()
	for i := from; i < to; i++ {
		if _, err := p.a.WriteTo(payload(i), p.b.LocalAddr()); err != nil {
			t.Fatal(err)
		}
	}
}

// read reads from b until want datagrams arrived or safety passed; it
// checks each against payload(i) and returns the indexes in arrival order.
func (p *pair) read(t *testing.T, want int) []int {
	t.Helper()
	var got []int
	deadline := time.Now().Add(safety)
	buf := make([]byte, 2048)
	for len(got) < want && time.Now().Before(deadline) {
		p.b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
		n, from, err := p.b.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, os.ErrDeadlineExceeded) {
				continue
			}
			t.Fatal(err)
		}
		if from.String() != p.a.LocalAddr().String() {
			t.Fatalf("datagram from %s", from)
		}
		i := index(buf[:n])
		if !bytes.Equal(buf[:n], payload(i)) {
			t.Fatalf("datagram %d corrupted", i)
		}
		got = append(got, i)
	}
	return got
}

// dropOn returns a link from a to b that drops the data datagrams whose
// payload index is in drop, and the repairs whose (first-relative group
// number, repair index) is in dropRepair; everything else arrives once.
func dropOn(drop map[int]bool, dropRepair map[[2]int]bool) func(from, to string, b []byte, emit func([]byte)) {
	groups := map[uint32]int{}
	return func(from, to string, b []byte, emit func([]byte)) {
		switch b[0] {
		case tagData, tagPadded:
			if _, payload, _ := parseData(b); drop[index(payload)] {
				return
			}
		case tagRepair:
			first := be32(b[1:5])
			if _, ok := groups[first]; !ok {
				groups[first] = len(groups)
			}
			if dropRepair[[2]int{groups[first], int(b[7])}] {
				return
			}
		}
		emit(b)
	}
}

func seq(from, to int) []int {
	var s []int
	for i := from; i < to; i++ {
		s = append(s, i)
	}
	return s
}

func TestNoLossDeliversInOrder(t *testing.T) {
	p := newPair(t, Config{GroupSize: 8, Repair: 2, Hold: forever})
	p.send(t, 0, 100)
	got := p.read(t, 100)
	if fmt.Sprint(got) != fmt.Sprint(seq(0, 100)) {
		t.Fatalf("got %v", got)
	}
	a, b := p.a.Stats(), p.b.Stats()
	if a.DataSent != 100 || a.RepairSent < 24 || b.DataReceived != 100 || b.Recovered != 0 || b.Unrecoverable != 0 {
		t.Fatalf("stats a %+v b %+v", a, b)
	}
}

// TestDropPatterns: every pattern within the repair budget of its group is
// rebuilt, and the receiver delivers in the sender's order (it holds the
// datagrams behind a gap until the gap is rebuilt).
func TestDropPatterns(t *testing.T) {
	cases := []struct {
		name       string
		drop       []int
		dropRepair [][2]int
	}{
		{"first of a group", []int{8}, nil},
		{"last of a group", []int{7}, nil},
		{"one in every group", []int{1, 10, 19, 28, 37, 46, 55, 63}, nil},
		{"two in one group", []int{2, 5}, nil},
		{"two adjacent", []int{8, 9}, nil},
		{"one data and one repair", []int{3}, [][2]int{{0, 0}}},
		{"last group", []int{62, 63}, nil},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			// Groups are only closed when full: an idle cut on a loaded
			// machine would split a group and change what its repairs
			// can rebuild.
			p := newPair(t, Config{GroupSize: 8, Repair: 2, Hold: forever, FlushIdle: forever, FlushMax: forever})
			drop := map[int]bool{}
			for _, i := range tc.drop {
				drop[i] = true
			}
			dr := map[[2]int]bool{}
			for _, k := range tc.dropRepair {
				dr[k] = true
			}
			p.net.setLink(dropOn(drop, dr))
			p.send(t, 0, 64)
			got := p.read(t, 64)
			if fmt.Sprint(got) != fmt.Sprint(seq(0, 64)) {
				t.Fatalf("got %v", got)
			}
			if st := p.b.Stats(); st.Recovered != uint64(len(tc.drop)) || st.Unrecoverable != 0 {
				t.Fatalf("stats %+v, want %d recovered", st, len(tc.drop))
			}
		})
	}
}

// TestIdleClosesGroup: three datagrams and then silence: the sender closes
// the group of three by idleness, its repair rebuilds the lost one.
func TestIdleClosesGroup(t *testing.T) {
	// The three datagrams go out back to back; an idle bound far above
	// any scheduling pause keeps them in one group (CI under load cut the
	// default 1 ms one after the first), which then closes by idleness
	// half a second later.
	p := newPair(t, Config{GroupSize: 16, Repair: 2, Hold: forever, FlushIdle: 500 * time.Millisecond, FlushMax: forever})
	var mu sync.Mutex
	var repairs [][2]int // (n, r) of each repair seen
	drop := dropOn(map[int]bool{1: true}, nil)
	p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
		if b[0] == tagRepair {
			mu.Lock()
			repairs = append(repairs, [2]int{int(b[5]), int(b[6])})
			mu.Unlock()
		}
		drop(from, to, b, emit)
	})
	p.send(t, 0, 3)
	got := p.read(t, 3)
	if fmt.Sprint(got) != "[0 1 2]" {
		t.Fatalf("got %v", got)
	}
	// A cut group of 3 gets more than ceil(2*3/16) = 1 repair: those
	// that hold it to the loss rate 16+2 is made for. The first may
	// rebuild the lost datagram before the second is on the link.
	r := chooseShort(3, 2, impliedLoss(16, 2))
	deadline := time.Now().Add(safety)
	for {
		mu.Lock()
		if len(repairs) >= r || time.Now().After(deadline) {
			break
		}
		mu.Unlock()
		time.Sleep(time.Millisecond)
	}
	defer mu.Unlock()
	if r != 2 || len(repairs) != r || repairs[0] != [2]int{3, r} || repairs[1] != [2]int{3, r} {
		t.Fatalf("repairs %v, want %d for a group of 3", repairs, r)
	}
}

// TestReorderAndDuplicates: swapped neighbours and duplicated datagrams
// come out once each, in order.
func TestReorderAndDuplicates(t *testing.T) {
	p := newPair(t, Config{GroupSize: 8, Repair: 1, Hold: forever})
	var held []byte
	n := 0
	p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
		n++
		switch {
		case n%5 == 0:
			emit(b)
			emit(b)
		case held == nil && n%3 == 0:
			held = append([]byte(nil), b...)
		default:
			emit(b)
			if held != nil {
				emit(held)
				held = nil
			}
		}
	})
	p.send(t, 0, 100)
	p.net.setLink(nil)
	p.send(t, 100, 101) // flushes a datagram still held by the link
	got := p.read(t, 101)
	if fmt.Sprint(got) != fmt.Sprint(seq(0, 101)) {
		t.Fatalf("got %v", got)
	}
	if st := p.b.Stats(); st.Unrecoverable != 0 || st.DataReceived > 101 {
		t.Fatalf("stats %+v", st)
	}
}

// TestBeyondRepairIsGivenUp: a group that lost more than its repairs is
// given up after the hold; what was held behind it is delivered, and the
// loss is counted.
func TestBeyondRepairIsGivenUp(t *testing.T) {
	p := newPair(t, Config{GroupSize: 8, Repair: 1, Hold: 5 * time.Millisecond, FlushIdle: forever, FlushMax: forever})
	p.net.setLink(dropOn(map[int]bool{2: true, 3: true}, nil))
	p.send(t, 0, 16)
	got := p.read(t, 14)
	want := append(seq(0, 2), seq(4, 16)...)
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("got %v, want %v", got, want)
	}
	if st := p.b.Stats(); st.Unrecoverable != 2 || st.Recovered != 0 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRandomLossAccounting: under random loss, reordering and duplicates
// every datagram is delivered at most once and uncorrupted, and every one
// is either delivered or counted unrecoverable.
func TestRandomLossAccounting(t *testing.T) {
	p := newPair(t, Config{GroupSize: 10, Repair: 3, Hold: 2 * time.Millisecond})
	rng := rand.New(rand.NewPCG(1, 2))
	var held []byte
	p.net.setLink(func(from, to string, b []byte, emit func([]byte)) {
		x := rng.Float64()
		switch {
		case x < 0.05:
			return
		case x < 0.08:
			emit(b)
			emit(b)
		case x < 0.12 && held == nil:
			held = append([]byte(nil), b...)
			return
		default:
			emit(b)
		}
		if held != nil {
			emit(held)
			held = nil
		}
	})
	const total = 2000
	p.send(t, 0, total)
	p.net.setLink(nil)
	p.send(t, total, total+20) // a clean tail ends every hold
	seen := map[int]bool{}
	deadline := time.Now().Add(safety)
	buf := make([]byte, 2048)
	for time.Now().Before(deadline) {
		if st := p.b.Stats(); len(seen)+int(st.Unrecoverable) == total+20 {
			break
		}
		p.b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		n, _, err := p.b.ReadFrom(buf)
		if errors.Is(err, os.ErrDeadlineExceeded) {
			continue
		} else if err != nil {
			t.Fatal(err)
		}
		i := index(buf[:n])
		if !bytes.Equal(buf[:n], payload(i)) || seen[i] {
			t.Fatalf("datagram %d corrupted or delivered twice", i)
		}
		seen[i] = true
	}
	st := p.b.Stats()
	if len(seen)+int(st.Unrecoverable) != total+20 {
		t.Fatalf("%d delivered + %d unrecoverable != %d sent (stats %+v)", len(seen), st.Unrecoverable, total+20, st)
	}
	if st.Recovered == 0 || st.Recovered < 4*st.Unrecoverable {
		t.Fatalf("recovery did little: %+v", st)
	}
	t.Logf("stats %+v", st)
}

// TestMismatchWarnsOnceAndDrops: plain QUIC datagrams (a peer with FEC
// off) and datagrams of an unknown framing version are dropped and
// counted, with one WARN per peer address that names the setting.
func TestMismatchWarnsOnceAndDrops(t *testing.T) {
	p := newPair(t, Config{GroupSize: 8, Repair: 1})
	plain := p.net.listen(3)
	other := p.net.listen(4)
	defer plain.Close()
	defer other.Close()
	for range 5 {
		plain.WriteTo(payload(7), p.b.LocalAddr())
		other.WriteTo([]byte{0x35, 1, 2, 3, 4, 5, 6, 7, 8}, p.b.LocalAddr())
	}
	p.send(t, 0, 1)
	if got := p.read(t, 1); fmt.Sprint(got) != "[0]" {
		t.Fatalf("got %v", got)
	}
	deadline := time.Now().Add(safety)
	for p.b.Stats().Mismatched < 10 && time.Now().Before(deadline) {
		p.b.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		p.b.ReadFrom(make([]byte, 2048))
	}
	if st := p.b.Stats(); st.Mismatched != 10 {
		t.Fatalf("stats %+v", st)
	}
	logs := p.logs.String()
	if strings.Count(logs, "level=WARN") != 2 ||
		strings.Count(logs, "without FEC framing") != 1 || !strings.Contains(logs, "transport.fec") ||
		strings.Count(logs, "unknown FEC framing version") != 1 {
		t.Fatalf("logs:\n%s", logs)
	}
}

// TestReadDeadline: a read deadline set while ReadFrom waits (as
// quic.Transport.Close does) ends it with a timeout, also while a gap is
// held; Close ends it with net.ErrClosed.
func TestReadDeadline(t *testing.T) {
	p := newPair(t, Config{GroupSize: 8, Repair: 1, Hold: forever})
	p.net.setLink(dropOn(map[int]bool{1: true, 2: true}, nil)) // a gap no repair fills
	p.send(t, 0, 4)
	if got := p.read(t, 1); fmt.Sprint(got) != "[0]" {
		t.Fatalf("got %v", got)
	}
	p.b.SetReadDeadline(time.Time{})
	errc := make(chan error, 1)
	go func() {
		_, _, err := p.b.ReadFrom(make([]byte, 2048))
		errc <- err
	}()
	time.Sleep(10 * time.Millisecond) // let it block (not required for the assertion)
	p.b.SetReadDeadline(time.Now())
	select {
	case err := <-errc:
		var ne net.Error
		if !errors.As(err, &ne) || !ne.Timeout() {
			t.Fatalf("err %v, want a timeout", err)
		}
	case <-time.After(safety):
		t.Fatal("ReadFrom did not return after SetReadDeadline")
	}
	p.b.SetReadDeadline(time.Time{})
	go func() {
		_, _, err := p.b.ReadFrom(make([]byte, 2048))
		errc <- err
	}()
	p.b.Close()
	select {
	case err := <-errc:
		if !errors.Is(err, net.ErrClosed) {
			t.Fatalf("err %v, want net.ErrClosed", err)
		}
	case <-time.After(safety):
		t.Fatal("ReadFrom did not return after Close")
	}
}

// TestPeerRestart: a new sender on the same address (a restarted peer,
// with a new random seq) is heard after a bounded number of datagrams.
func TestPeerRestart(t *testing.T) {
	p := newPair(t, Config{GroupSize: 8, Repair: 1, Hold: 5 * time.Millisecond})
	p.send(t, 0, 50)
	if got := p.read(t, 50); len(got) != 50 {
		t.Fatalf("got %d", len(got))
	}
	p.a.Close()
	a2, err := New(p.net.listen(1), Config{GroupSize: 8, Repair: 1})
	if err != nil {
		t.Fatal(err)
	}
	defer a2.Close()
	p.a = a2
	p.send(t, 1000, 1200)
	got := p.read(t, 200)
	last := map[int]bool{}
	for _, i := range got {
		last[i] = true
	}
	for i := 1200 - resyncAfterOld; i < 1200; i++ {
		if !last[i] {
			t.Fatalf("datagram %d of the restarted peer not delivered (got %d)", i, len(got))
		}
	}
}

func TestConfigValidate(t *testing.T) {
	for _, c := range []Config{{GroupSize: 0, Repair: 1}, {GroupSize: 129, Repair: 1}, {GroupSize: 8, Repair: 0}, {GroupSize: 8, Repair: 33}} {
		if _, err := New(newMemNet().listen(1), c); err == nil {
			t.Errorf("%+v accepted", c)
		}
	}
}

func TestFramed(t *testing.T) {
	for b, want := range map[byte]bool{tagData: true, tagRepair: true, 0x3f: true, 0x40: false, 0xc0: false, 0x00: false, 0x2f: false} {
		if Framed([]byte{b}) != want {
			t.Errorf("Framed(0x%02x) != %v", b, want)
		}
	}
}

// TestFirstDatagramLost: the receiver starts at the first datagram it
// hears of; an earlier one that is rebuilt later is still delivered (out
// of order: there was nothing to hold it against).
func TestFirstDatagramLost(t *testing.T) {
	// The group must be the eight datagrams whatever the scheduling: a
	// group cut by idleness would have its repair rebuild datagram 0
	// before datagram 7 arrives.
	p := newPair(t, Config{GroupSize: 8, Repair: 1, Hold: forever, FlushIdle: forever, FlushMax: forever})
	p.net.setLink(dropOn(map[int]bool{0: true}, nil))
	p.send(t, 0, 8)
	got := p.read(t, 8)
	if fmt.Sprint(got) != "[1 2 3 4 5 6 7 0]" {
		t.Fatalf("got %v", got)
	}
	if st := p.b.Stats(); st.Recovered != 1 {
		t.Fatalf("stats %+v", st)
	}
}

// TestRepairBeforeAnyData: a repair heard before any data datagram of its
// peer starts nothing. Its group went out before this end could hear it
// (a client's first packets reach a server's port before it is bound, and
// only the repair after them arrives): its datagrams must not count as
// the link's losses, which would start the loss measure, and an "auto"
// peer's repairs, high. The window starts at the first data datagram.
func TestRepairBeforeAnyData(t *testing.T) {
	p := newPair(t, Config{GroupSize: 2, Repair: 1, Hold: 5 * time.Millisecond, FlushIdle: forever, FlushMax: forever})
	p.net.setLink(dropOn(map[int]bool{0: true, 1: true}, nil))
	p.send(t, 0, 6)
	if got := p.read(t, 4); fmt.Sprint(got) != "[2 3 4 5]" {
		t.Fatalf("got %v", got)
	}
	// The repairs of the groups before datagram 4 arrived before it.
	if st := p.b.Stats(); st.Unrecoverable != 0 || st.RepairReceived < 2 || st.DataReceived != 4 {
		t.Fatalf("stats %+v: want no datagram given up, 2 repairs or more and 4 data received", st)
	}
}

// TestStatsAddCoversEveryCounter: Add sums every field of Stats, so a
// counter added later cannot be left out of a multi-socket sum.
func TestStatsAddCoversEveryCounter(t *testing.T) {
	var one Stats
	v := reflect.ValueOf(&one).Elem()
	for i := range v.NumField() {
		v.Field(i).SetUint(uint64(i + 1))
	}
	var sum Stats
	sum.Add(one)
	sum.Add(one)
	sv := reflect.ValueOf(sum)
	for i := range sv.NumField() {
		if got := sv.Field(i).Uint(); got != 2*uint64(i+1) {
			t.Errorf("%s: %d, want %d", sv.Type().Field(i).Name, got, 2*(i+1))
		}
	}
}

// TestDeliveryKeepsItsBytes: a delivery lends its slot's buffers to the
// reader without a copy; when the window wraps before the reader took it
// (two datagrams 1024 apart handled in one read), the slot is refilled in
// new buffers and the reader still gets the first datagram's bytes.
func TestDeliveryKeepsItsBytes(t *testing.T) {
	p := newPair(t, Config{GroupSize: 16, Repair: 1, Hold: forever})
	from := p.a.LocalAddr()
	frame := func(seq uint32, i int) []byte {
		b := make([]byte, dataHeaderLen)
		putData(b, seq)
		return append(b, payload(i)...)
	}
	const base = 7000
	inject(p.b, frame(base, 2), from)        // delivered, not yet read
	inject(p.b, frame(base+window, 1), from) // same slot, shorter; the window moves
	buf := make([]byte, 2048)
	p.b.SetReadDeadline(time.Now().Add(safety)) // the second waits behind its gap
	if n, _, err := p.b.ReadFrom(buf); err != nil || !bytes.Equal(buf[:n], payload(2)) {
		t.Fatalf("read %d bytes (err %v), want the first datagram unchanged", n, err)
	}
}
