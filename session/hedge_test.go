package session

import (
	"net"
	"sync"
	"testing"
	"time"
)

// dialCounter counts the client's dials as the distinct destination
// connection IDs of its Initial packets (a dial keeps its ID until the
// server answers; retransmissions and 0-RTT packets carry the same).
type dialCounter struct {
	mu  sync.Mutex
	ids map[string]bool
}

func (d *dialCounter) tap(p []byte) {
	// QUIC v1 long header, type Initial: 0b11 00 xxxx, version, DCID len, DCID.
	if len(p) < 7 || p[0]&0xf0 != 0xc0 {
		return
	}
	n := int(p[5])
	if len(p) < 6+n {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if d.ids == nil {
		d.ids = map[string]bool{}
	}
	d.ids[string(p[6:6+n])] = true
}

func (d *dialCounter) count() int {
	d.mu.Lock()
	defer d.mu.Unlock()
	return len(d.ids)
}

func (d *dialCounter) reset() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.ids = nil
}

// After a lost session, while the server is silent (it restarts), one
// attempt keeps sending fresh Initials from hedged dials instead of waiting
// for quic-go's sparse retransmissions of one; once the server listens
// again one of them becomes the session, in that same attempt.
func TestHedgedRedialAfterLoss(t *testing.T) {
	cs := newCertSet(t)
	srvTLS := cs.serverTLS(t, "client.test", "server.test")
	srv := startServer(t, srvTLS, 0, echo)
	port := srv.port()
	var dials dialCounter
	relay := newWANRelay(t, srv.Addr().(*net.UDPAddr), 0, dials.tap)
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), relay.port(), func(o *ClientOptions) {
		// One attempt outlives the test's hedges: 5 s against a silent server.
		o.Transport.MaxIdleTimeout = 10 * time.Second
		o.ConnectInterval = 5 * time.Second
	})
	waitFor(t, "client ready", cl.readyRecorded)
	before := len(cl.transitions())

	dials.reset()
	srv.stop()
	since := func(ev Event) int {
		n := 0
		for _, tr := range cl.transitions()[before:] {
			if tr.Event == ev {
				n++
			}
		}
		return n
	}
	waitFor(t, "three dials in the first attempt after the loss", func() bool {
		if since(EvFail) > 0 {
			t.Fatalf("the attempt failed before it hedged: %v", cl.failReasons())
		}
		return since(EvLost) == 1 && dials.count() >= 3
	})
	if n := since(EvDial); n != 1 {
		t.Fatalf("%d attempts, want the hedged dials inside one", n)
	}
	startServer(t, srvTLS, port, echo)
	waitFor(t, "client ready again", cl.readyRecorded)
	if since(EvDial) != 1 || since(EvFail) != 0 || since(EvEstablished) != 1 {
		t.Fatalf("reconnection: %d attempts, %d failed, %d established; want 1, 0, 1", since(EvDial), since(EvFail), since(EvEstablished))
	}
	resp, err := get(t, cl, "/after", "x")
	if err != nil {
		t.Fatal(err)
	}
	if b := readBody(t, resp); b != "POST /after x" {
		t.Fatalf("after the reconnection: %q", b)
	}
}

// No RTT is known before the first session: the first attempts to a
// silent server dial once each (quic-go's own retransmissions only).
func TestNoHedgeBeforeFirstSession(t *testing.T) {
	cs := newCertSet(t)
	silent, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close() // bound, never answers
	var dials dialCounter
	relay := newWANRelay(t, silent.LocalAddr().(*net.UDPAddr), 0, dials.tap)
	var mu sync.Mutex
	var atFails []int // dials counted when each attempt failed
	startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), relay.port(), func(o *ClientOptions) {
		o.Transport.MaxIdleTimeout = 300 * time.Millisecond
		inner := o.OnTransition
		o.OnTransition = func(tr Transition) {
			inner(tr)
			if tr.Event == EvFail {
				mu.Lock()
				atFails = append(atFails, dials.count())
				mu.Unlock()
			}
		}
	})
	waitFor(t, "two failed attempts", func() bool { mu.Lock(); defer mu.Unlock(); return len(atFails) >= 2 })
	mu.Lock()
	defer mu.Unlock()
	if atFails[0] != 1 || atFails[1] != 2 {
		t.Fatalf("dials when the first two attempts failed: %v, want [1 2]", atFails)
	}
}

func TestHedgeInterval(t *testing.T) {
	for _, tc := range []struct{ rtt, bound, want time.Duration }{
		{0, time.Second, 0}, // no session yet: no hedging
		{time.Millisecond, time.Second, minHedgeInterval},
		{50 * time.Millisecond, time.Second, 100 * time.Millisecond},
		{200 * time.Millisecond, time.Second, 400 * time.Millisecond},
		{time.Second, time.Second, 500 * time.Millisecond}, // at most half the attempt bound
	} {
		if got := hedgeInterval(tc.rtt, tc.bound); got != tc.want {
			t.Errorf("hedgeInterval(%v, %v) = %v, want %v", tc.rtt, tc.bound, got, tc.want)
		}
	}
}
