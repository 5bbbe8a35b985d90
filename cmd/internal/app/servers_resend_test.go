package app

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/httpio/h3"
	"github.com/ptproxy/ptproxy/session"
	"github.com/quic-go/quic-go"
)

// badServer is an HTTP/3 server that sends its SETTINGS (so the client's
// session becomes ready) and then fails every request stream one way:
// "reject" refuses it unprocessed (H3_REQUEST_REJECTED, RFC 9114 5.2),
// "close" closes the connection on it and takes no new connection (the
// request may have been processed, as far as the client can tell).
type badServer struct {
	port    int
	streams atomic.Int32 // request streams received
}

func startBadServer(t *testing.T, pk *testPKI, mode string) *badServer {
	t.Helper()
	tlsConf, err := session.ServerTLS(pk.path("ca.pem"), pk.path("server.pem"), pk.path("server-key.pem"), clientName)
	if err != nil {
		t.Fatal(err)
	}
	// An explicit transport, closed last: Transport.Close waits for its
	// read loop, where a listener of quic.ListenAddr only asks it to stop
	// and goleak (TestMain) could find it still reading under load.
	udp, err := net.ListenUDP("udp", &net.UDPAddr{IP: net.IPv4(127, 0, 0, 1)})
	if err != nil {
		t.Fatal(err)
	}
	tr := &quic.Transport{Conn: udp}
	ln, err := tr.Listen(tlsConf, &quic.Config{})
	if err != nil {
		t.Fatal(err)
	}
	b := &badServer{port: ln.Addr().(*net.UDPAddr).Port}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	t.Cleanup(func() {
		cancel()
		ln.Close()
		wg.Wait()
		tr.Close()
		udp.Close()
	})
	wg.Go(func() {
		for {
			conn, err := ln.Accept(ctx)
			if err != nil {
				return
			}
			wg.Go(func() { b.serve(ctx, conn, mode, ln) })
		}
	})
	return b
}

func (b *badServer) serve(ctx context.Context, conn *quic.Conn, mode string, ln *quic.Listener) {
	defer conn.CloseWithError(0, "")
	ctrl, err := conn.OpenUniStream()
	if err != nil {
		return
	}
	if _, err := ctrl.Write(h3.AppendControlPreface(nil, h3.Settings{})); err != nil {
		return
	}
	for {
		str, err := conn.AcceptStream(ctx)
		if err != nil {
			return
		}
		b.streams.Add(1)
		switch mode {
		case "reject":
			str.CancelRead(quic.StreamErrorCode(h3.ErrCodeRequestRejected))
			str.CancelWrite(quic.StreamErrorCode(h3.ErrCodeRequestRejected))
		case "close":
			ln.Close()
			conn.CloseWithError(quic.ApplicationErrorCode(h3.ErrCodeInternalError), "")
			return
		}
	}
}

// TestServersResendElsewhere: a request the first server failed before
// any response goes to the second server when the rules that would send
// it again on the first server allow it (refused unprocessed; or lost with
// its connection and bodiless and idempotent), at once, without waiting
// for the first server. Any other request gets its error, and the second
// server never sees it.
func TestServersResendElsewhere(t *testing.T) {
	for _, tc := range []struct {
		mode, name, request string
		status              int
		atSecond            bool // the second server's origin received it
	}{
		{"reject", "GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, true},
		{"reject", "DELETE", "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 200, true},
		// Refused, but the body was streamed: it cannot be sent again.
		{"reject", "POST with a body", "POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhello", 503, false},
		{"close", "GET", "GET / HTTP/1.1\r\nHost: x\r\n\r\n", 200, true},
		// Lost, maybe processed, not idempotent: never repeated elsewhere.
		{"close", "DELETE", "DELETE / HTTP/1.1\r\nHost: x\r\n\r\n", 502, false},
	} {
		t.Run(tc.mode+"/"+tc.name, func(t *testing.T) {
			pk := newTestPKI(t)
			bad := startBadServer(t, pk, tc.mode)
			var seen atomic.Int32
			ts := newTwoServers(t, pk)
			ts.origins[1] = startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				seen.Add(1)
				io.Copy(io.Discard, r.Body)
				io.WriteString(w, "two")
			}))
			ts.startServer(t, 1)
			ccfg := pk.clientConfig(bad.port)
			ccfg.Servers = []config.Server{{PeerHostname: server2Name, ConnectAddress: "127.0.0.1", QUICPort: ts.ports[1]}}
			ccfg.General.ServerSelection = config.SelectPriority
			// Long enough that a request waiting for the first server
			// again would outlast the test's safety net.
			ccfg.System.SessionWaitTimeout = 600000
			if err := ccfg.Validate(); err != nil {
				t.Fatal(err)
			}
			clog, clb := newTestLogger(t)
			ts.clientLogBuffer = clb
			ts.client = startInstance(t, ccfg, clog)
			ts.waitState(t, 0, session.Ready)
			ts.waitState(t, 1, session.Ready)

			r := send(t, ts.client.HTTPAddr().String(), tc.request)
			if r.status != tc.status {
				t.Fatalf("status %d %q (%v), want %d", r.status, r.body, r.err, tc.status)
			}
			if tc.status == 200 && r.body != "two" {
				t.Errorf("body %q, want the second server's origin", r.body)
			}
			if n := bad.streams.Load(); n != 1 {
				t.Errorf("the first server saw %d request streams, want 1", n)
			}
			want := int32(0)
			if tc.atSecond {
				want = 1
			}
			if n := seen.Load(); n != want {
				t.Errorf("the second server's origin saw the request %d times, want %d", n, want)
			}
			if tc.atSecond && !clb.contains("sent through another session", fmt.Sprintf("%q", serverName), fmt.Sprintf("%q", server2Name)) {
				t.Error("no debug line naming both servers for the resend")
			}
		})
	}
}
