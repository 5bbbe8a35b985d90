package session

import (
	"context"
	"errors"
	"net/netip"
	"sync"
	"testing"
	"time"
)

// fakeClock records every wait the loop asks for and fires at once.
type fakeClock struct {
	mu    sync.Mutex
	waits []time.Duration
}

func (f *fakeClock) After(d time.Duration) (<-chan time.Time, func()) {
	f.mu.Lock()
	f.waits = append(f.waits, d)
	f.mu.Unlock()
	ch := make(chan time.Time, 1)
	ch <- time.Time{}
	return ch, func() {}
}

func (f *fakeClock) got() []time.Duration {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]time.Duration(nil), f.waits...)
}

// The loop waits the backoff sequence between failed attempts (fake clock
// and jitter; attempts fail at once through the injected resolver).
func TestRunLoopBackoffWithFakeClock(t *testing.T) {
	cs := newCertSet(t)
	c, err := NewClient(ClientOptions{
		PeerHostname: "server.test", BindAddress: "127.0.0.1", Logger: discard(),
		TLS:             cs.clientTLS(t, "server.test", cs.client(t, "client.test")),
		ConnectInterval: 1600 * time.Millisecond,
		Resolver: func(context.Context, string) ([]netip.Addr, error) {
			return nil, errors.New("no such host")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	fc := &fakeClock{}
	c.clock = fc
	c.bo.jitter = func() float64 { return 0 }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	waitFor(t, "seven waits", func() bool { return len(fc.got()) >= 7 })
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("Run: %v", err)
	}
	want := []time.Duration{100, 200, 400, 800, 1600, 1600, 1600}
	got := fc.got()
	for i, w := range want {
		if got[i] != w*time.Millisecond {
			t.Fatalf("waits %v, want %v ms", got[:len(want)], want)
		}
	}
	if c.State() != Stopped {
		t.Fatalf("state %s", c.State())
	}
	var nre *NotReadyError
	if _, err := c.RoundTrip(nil); !errors.Is(err, ErrDraining) && !errors.As(err, &nre) {
		t.Fatalf("RoundTrip after stop: %v", err)
	}
}
