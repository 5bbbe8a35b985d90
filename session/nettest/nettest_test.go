package nettest

import (
	"net"
	"strconv"
	"testing"
)

// Ports come from below the ephemeral range, are bindable for the networks
// asked, and are never given twice.
func TestFreePort(t *testing.T) {
	seen := map[int]bool{}
	for i := range 200 {
		nets := [][]string{nil, {"udp"}, {"tcp"}, {"tcp", "udp"}}[i%4]
		p := FreePort(t, nets...)
		if p < low || p >= end || seen[p] {
			t.Fatalf("port %d (range %d-%d, given before: %v)", p, low, end, seen[p])
		}
		seen[p] = true
		c, err := net.ListenPacket("udp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p)))
		if err != nil {
			t.Fatalf("port %d not free for UDP: %v", p, err)
		}
		c.Close()
	}
	// A port taken by someone else is skipped: take the next one to be
	// tried (or, if that is taken already, the one after).
	var l net.Listener
	for l == nil {
		var err error
		if l, err = net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(next)); err != nil {
			next++
		}
	}
	defer l.Close()
	taken := l.Addr().(*net.TCPAddr).Port
	if p := FreePort(t, "tcp"); p == taken {
		t.Fatalf("port %d given while something listens on it", p)
	}
}
