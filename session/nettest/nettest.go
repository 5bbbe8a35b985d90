// Package nettest gives tests loopback ports to hand to a process or a
// server they start, which binds the port itself a moment later.
//
// A port taken by binding port 0 and closing again comes from the kernel's
// ephemeral range, where any socket bound to port 0 in the meantime (a
// test of another package running in parallel, a client's source port) can
// take it first: the process then fails with "address already in use"
// (seen in CI). The ports given here lie below that range, where the
// kernel never picks one by itself, are checked free when given, and are
// never given twice by one process. Processes start at different offsets.
package nettest

import (
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
)

// The range ports are given from: below Linux's default ephemeral range
// (32768–60999) and below the 20000s, where ptproxy's defaults (QUIC
// 20010, HTTP 20080, the demo's) and ptbench's ports (21000 on) lie, which
// some tests bind as they are.
const (
	low  = 10000
	high = 20000
)

var (
	mu   sync.Mutex
	next int    // the next port to try; 0 until the first call
	end  = high // one past the last port of the range
	used = map[int]bool{}
)

// FreePort returns a loopback port, free right now on each of networks
// ("udp", "tcp"; "udp" when none is named), outside the kernel's
// ephemeral range.
func FreePort(t testing.TB, networks ...string) int {
	t.Helper()
	if len(networks) == 0 {
		networks = []string{"udp"}
	}
	mu.Lock()
	defer mu.Unlock()
	if next == 0 {
		end = min(high, ephemeralStart())
		next = low + (os.Getpid()*7919)%(end-low)
	}
	for range end - low {
		port := next
		if next++; next >= end {
			next = low
		}
		if used[port] || !free(port, networks) {
			continue
		}
		used[port] = true
		return port
	}
	t.Fatalf("nettest: no loopback port free in %d-%d", low, end-1)
	return 0
}

// free reports whether port can be bound on loopback for each network.
func free(port int, networks []string) bool {
	for _, n := range networks {
		addr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		switch n {
		case "udp":
			c, err := net.ListenPacket("udp", addr)
			if err != nil {
				return false
			}
			c.Close()
		case "tcp":
			l, err := net.Listen("tcp", addr)
			if err != nil {
				return false
			}
			l.Close()
		default:
			panic(fmt.Sprintf("nettest: network %q", n))
		}
	}
	return true
}

// ephemeralStart is the first port of Linux's ephemeral range (high where
// it cannot be read, or where it starts too low to leave room below).
func ephemeralStart() int {
	b, err := os.ReadFile("/proc/sys/net/ipv4/ip_local_port_range")
	if err != nil {
		return high
	}
	f := strings.Fields(string(b))
	if len(f) == 0 {
		return high
	}
	n, err := strconv.Atoi(f[0])
	if err != nil || n < low+1000 {
		return high
	}
	return n
}
