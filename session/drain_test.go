package session

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/quic-go/quic-go"
)

// oneWayRelay forwards a client's datagrams to the server and drops the
// server's answers: the client's handshake never completes, while the
// server holds a connection in its handshake.
func oneWayRelay(t *testing.T, server *net.UDPAddr) *net.UDPAddr {
	t.Helper()
	ln, up := relaySockets(t, server)
	var wg sync.WaitGroup
	wg.Go(func() {
		buf := make([]byte, 65536)
		for {
			n, _, err := ln.ReadFromUDP(buf)
			if err != nil {
				return
			}
			up.Write(buf[:n])
		}
	})
	wg.Go(func() { // the server's answers: dropped
		buf := make([]byte, 65536)
		for {
			if _, err := up.Read(buf); errors.Is(err, net.ErrClosed) {
				return
			}
		}
	})
	t.Cleanup(func() {
		ln.Close()
		up.Close()
		wg.Wait()
	})
	return ln.LocalAddr().(*net.UDPAddr)
}

// A connection still in its handshake carries nothing: Drain closes it
// instead of lingering on it until the handshake times out. Such
// connections are what a client leaves behind when it abandons a dial
// (quic-go cancels a dial without a packet), e.g. the losing dials of a
// hedged reconnection. The linger and the server's handshake bound are an
// hour here, so a Drain that waited for it would not return.
func TestDrainClosesHalfOpenHandshakes(t *testing.T) {
	cs := newCertSet(t)
	srv := startServerWith(t, cs.serverTLS(t, "client.test", "server.test"),
		Transport{MaxIdleTimeout: time.Hour, MaxConcurrentStreams: 100}, echo)
	srv.linger = time.Hour
	relay := oneWayRelay(t, srv.Addr().(*net.UDPAddr))

	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	defer func() { tr.Close(); udp.Close() }()
	ctx, cancel := context.WithCancel(context.Background())
	dialed := make(chan error, 1)
	go func() {
		_, err := tr.Dial(ctx, relay, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), QUICConfig(testTransport, false))
		dialed <- err
	}()
	defer func() { cancel(); <-dialed }()
	waitFor(t, "the server holding the half-open connection", func() bool { return srv.connCount() == 1 })

	drained := make(chan error, 1)
	go func() { drained <- srv.Drain(context.Background()) }()
	select {
	case err := <-drained:
		if err != nil {
			t.Fatalf("Drain: %v", err)
		}
	case <-time.After(safety):
		t.Fatal("Drain lingered on a connection in its handshake")
	}
	if n := srv.connCount(); n != 0 {
		t.Errorf("%d connections left after the drain", n)
	}
}
