//go:build linux

package wan

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"syscall"
	"time"
)

// Topology is the emulated link: namespaces NSA (callers and the client
// side) and NSB (server side and origin), addresses AddrA and AddrB on a
// TUN device in each, and the forwarder between them in this process.
type Topology struct {
	NSA, NSB     string
	AddrA, AddrB netip.Addr
	Prefix       netip.Prefix
	Fwd          *Forwarder
	cancel       context.CancelFunc
	done         chan error
}

// DefaultPrefix is the private subnet used only inside the two namespaces.
var DefaultPrefix = netip.MustParsePrefix("10.201.0.0/24")

// Setup creates the namespaces, the TUN devices and starts the forwarder
// with the given shaping for A→B and B→A. Close undoes everything.
func Setup(nsA, nsB string, ab, ba Link, seed uint64) (*Topology, error) {
	t := &Topology{
		NSA: nsA, NSB: nsB, Prefix: DefaultPrefix,
		AddrA: netip.MustParseAddr("10.201.0.1"), AddrB: netip.MustParseAddr("10.201.0.2"),
	}
	for _, ns := range []string{nsA, nsB} {
		if _, err := os.Stat("/var/run/netns/" + ns); err == nil {
			IP("netns", "del", ns) // stale from an interrupted run
		}
		if err := IP("netns", "add", ns); err != nil {
			t.Close()
			return nil, err
		}
		if err := IP("-n", ns, "link", "set", "lo", "up"); err != nil {
			t.Close()
			return nil, err
		}
	}
	const dev = "ptbtun"
	ta, err := OpenTUN(nsA, dev)
	if err != nil {
		t.Close()
		return nil, err
	}
	tb, err := OpenTUN(nsB, dev)
	if err != nil {
		ta.Close()
		t.Close()
		return nil, err
	}
	bits := fmt.Sprintf("/%d", t.Prefix.Bits())
	for _, c := range []struct {
		ns   string
		addr netip.Addr
	}{{nsA, t.AddrA}, {nsB, t.AddrB}} {
		for _, args := range [][]string{
			{"-n", c.ns, "addr", "add", c.addr.String() + bits, "dev", dev},
			{"-n", c.ns, "link", "set", dev, "txqueuelen", "10000", "up"},
		} {
			if err := IP(args...); err != nil {
				ta.Close()
				tb.Close()
				t.Close()
				return nil, err
			}
		}
	}
	fwd := &Forwarder{A: ta, B: tb, AtoB: NewShaper(ab, seed), BtoA: NewShaper(ba, seed+1), Prefix: t.Prefix}
	t.Fwd = fwd
	ctx, cancel := context.WithCancel(context.Background())
	t.cancel = cancel
	t.done = make(chan error, 1)
	go func() { t.done <- t.Fwd.Run(ctx) }()
	// The path works once a connection attempt to a closed port of B is
	// refused (the SYN crossed, the RST came back).
	probe := netip.AddrPortFrom(t.AddrB, 9).String()
	deadline := time.Now().Add(10 * time.Second)
	for {
		pctx, pcancel := context.WithTimeout(ctx, 500*time.Millisecond)
		c, err := Dialer(nsA, probe)(pctx)
		pcancel()
		if c != nil {
			c.Close()
		}
		if err != nil && errors.Is(err, syscall.ECONNREFUSED) {
			return t, nil
		}
		if time.Now().After(deadline) {
			t.Close()
			return nil, fmt.Errorf("emulated link does not carry packets: %v", err)
		}
	}
}

// Close stops the forwarder (removing the TUN devices) and deletes the
// namespaces. Processes still inside them must have been stopped first.
func (t *Topology) Close() error {
	if t.cancel != nil {
		t.cancel()
		<-t.done
		t.cancel = nil
	}
	var first error
	for _, ns := range []string{t.NSA, t.NSB} {
		if _, err := os.Stat("/var/run/netns/" + ns); err == nil {
			if err := IP("netns", "del", ns); err != nil && first == nil {
				first = err
			}
		}
	}
	return first
}
