package loadgen

import (
	"context"
	"errors"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/origin"
)

func TestOpenIdleAndCountOpen(t *testing.T) {
	var requests atomic.Int64
	h := origin.Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		h.ServeHTTP(w, r)
	}))
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	const n = 40
	conns, err := OpenIdle(context.Background(), TCPDialer(addr), Request{Method: "GET", Path: "/small"}, n, 8, 10*time.Second, origin.SmallSize)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		for _, c := range conns {
			c.Close()
		}
	}()
	if len(conns) != n || requests.Load() != n {
		t.Fatalf("%d connections, %d requests, want %d each", len(conns), requests.Load(), n)
	}
	if got := CountOpen(conns, 50*time.Millisecond); got != n {
		t.Fatalf("%d open, want %d", got, n)
	}
	// Still usable after the check (nothing was consumed).
	if st, _, err := conns[0].Do(&Request{Method: "GET", Path: "/small"}); err != nil || st != 200 {
		t.Fatalf("reuse after the check: %d %v", st, err)
	}
	// The server closes every connection: none is open any more.
	srv.CloseClientConnections()
	if got := CountOpen(conns, 5*time.Second); got != 0 {
		t.Fatalf("%d open after the server closed them all", got)
	}
}

func TestOpenIdleReportsShortfall(t *testing.T) {
	srv := httptest.NewServer(origin.Handler())
	defer srv.Close()
	addr := strings.TrimPrefix(srv.URL, "http://")
	var dials atomic.Int64
	dial := func(ctx context.Context) (net.Conn, error) {
		if dials.Add(1)%2 == 0 {
			return nil, errors.New("refused")
		}
		return TCPDialer(addr)(ctx)
	}
	conns, err := OpenIdle(context.Background(), dial, Request{Method: "GET", Path: "/small"}, 10, 3, 10*time.Second, origin.SmallSize)
	for _, c := range conns {
		c.Close()
	}
	if err == nil || len(conns) != 5 || !strings.Contains(err.Error(), "opened 5 of 10") || !strings.Contains(err.Error(), "refused") {
		t.Fatalf("%d connections, err %v", len(conns), err)
	}
	// A server that closes after each response cannot hold idle callers.
	closer := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
	}))
	defer closer.Close()
	conns, err = OpenIdle(context.Background(), TCPDialer(strings.TrimPrefix(closer.URL, "http://")), Request{Method: "GET", Path: "/"}, 3, 3, 10*time.Second, 0)
	if err == nil || len(conns) != 0 {
		t.Fatalf("Connection: close accepted: %d, %v", len(conns), err)
	}
}
