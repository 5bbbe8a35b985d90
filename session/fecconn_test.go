package session

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/session/fec/fectest"
	"github.com/ptproxy/ptproxy/session/nettest"
)

// bulk serves GET /bulk with 1 MiB of known bytes and answers a POST with
// the SHA-256 of its body.
var bulkBody = func() []byte {
	b := make([]byte, 1<<20)
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}()

var bulk = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
	if r.Method == http.MethodGet {
		w.Write(bulkBody)
		return
	}
	h := sha256.New()
	io.Copy(h, r.Body)
	io.WriteString(w, hex.EncodeToString(h.Sum(nil)))
})

// startFECServer is startServer with its own Transport.
func startFECServer(t *testing.T, cs *certSet, tr Transport) (*Server, *logBuf) {
	t.Helper()
	log, logs := newLogger(t)
	s, err := NewServer(ServerOptions{
		BindAddress: "127.0.0.1", Port: nettest.FreePort(t, "udp"), TLS: cs.serverTLS(t, "client.test", "server.test"),
		Transport: tr, Handler: httpHandler(bulk), Logger: log.With("side", "server"), PeerHostname: "client.test",
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Listen(); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx) }()
	t.Cleanup(func() {
		cancel()
		select {
		case <-errc:
		case <-time.After(safety):
			t.Error("server Serve did not return")
		}
	})
	return s, logs
}

func withFEC(t Transport, on bool) Transport {
	t.FEC, t.FECGroupSize, t.FECRepair = on, 16, 2
	return t
}

// TestFECThroughLossyRelay: with FEC on (or auto) at both ends, a 1 MiB
// download and a 1 MiB upload through a relay that drops 3% of the
// datagrams each way arrive complete and identical, and the layer rebuilt
// datagrams on both sides; in auto mode both ends reported loss.
// Completeness is asserted, not timing.
func TestFECThroughLossyRelay(t *testing.T) {
	t.Run("on", func(t *testing.T) { testFECThroughLossyRelay(t, false) })
	t.Run("auto", func(t *testing.T) { testFECThroughLossyRelay(t, true) })
}

func testFECThroughLossyRelay(t *testing.T, auto bool) {
	cs := newCertSet(t)
	tr := withFEC(testTransport, true)
	if auto {
		tr.FECAuto, tr.FECRepair = true, 8
	}
	tr.MaxIdleTimeout = 10 * time.Second
	srv, _ := startFECServer(t, cs, tr)
	relay := fectest.NewRelay(t, srv.Addr().(*net.UDPAddr), 0.03, 12)
	cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), relay.Port(), func(o *ClientOptions) {
		o.Transport = tr
	})
	waitFor(t, "session ready", func() bool { return cl.State() == Ready })

	for i := range 2 {
		req, _ := http.NewRequest(http.MethodGet, "https://server.test/bulk", nil)
		resp, err := cl.RoundTrip(req)
		if err != nil {
			t.Fatalf("GET %d: %v", i, err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, bulkBody) {
			t.Fatalf("GET %d: %d bytes, err %v, identical %v", i, len(got), err, bytes.Equal(got, bulkBody))
		}
	}
	req, _ := http.NewRequest(http.MethodPost, "https://server.test/up", bytes.NewReader(bulkBody))
	resp, err := cl.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(bulkBody)
	if got := readBody(t, resp); got != hex.EncodeToString(sum[:]) {
		t.Fatalf("upload digest %s", got)
	}
	c, s := cl.FECStats(), srv.FECStats()
	fwd, drop := relay.Counts()
	t.Logf("relay dropped %d of %d; client %+v; server %+v", drop, drop+fwd, c, s)
	if c.Recovered == 0 || s.Recovered == 0 || c.Mismatched != 0 || s.Mismatched != 0 {
		t.Fatalf("client %+v server %+v", c, s)
	}
	if c.RepairSent == 0 || s.RepairSent == 0 {
		t.Fatalf("no repairs sent: client %+v server %+v", c, s)
	}
	if reported := c.ReportsSent > 0 && c.ReportsReceived > 0 && s.ReportsSent > 0 && s.ReportsReceived > 0; reported != auto {
		t.Fatalf("auto %v, loss reports: client %+v server %+v", auto, c, s)
	}
}

// TestFECMismatchIsLogged: ends that disagree about transport.fec never
// complete a handshake, and the server says why, once, in a WARN that
// names the setting; the mismatched datagrams are counted.
func TestFECMismatchIsLogged(t *testing.T) {
	for _, tc := range []struct {
		name             string
		serverOn         bool
		msg              string
		clientMismatched bool
	}{
		{"client on, server off", false, "dropping FEC-framed datagrams: transport.fec is off here but the peer has it on (or auto); both ends must set the same transport.fec", false},
		{"client off, server on", true, "dropping datagrams without FEC framing", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cs := newCertSet(t)
			srv, logs := startFECServer(t, cs, withFEC(testTransport, tc.serverOn))
			cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), srv.Addr().(*net.UDPAddr).Port, func(o *ClientOptions) {
				o.Transport = withFEC(testTransport, !tc.serverOn)
			})
			var warns []map[string]any
			waitFor(t, "the mismatch WARN", func() bool {
				warns = nil
				for _, r := range logs.records() {
					if m, _ := r["msg"].(string); r["level"] == "WARN" && strings.HasPrefix(m, tc.msg) {
						warns = append(warns, r)
					}
				}
				return len(warns) > 0 && len(cl.failReasons()) >= 2
			})
			if len(warns) != 1 || warns[0]["remote_addr"] != cl.LocalAddr().String() {
				t.Fatalf("warns %v (client %s)", warns, cl.LocalAddr())
			}
			if st := srv.FECStats(); st.Mismatched < 2 {
				t.Fatalf("server stats %+v", st)
			}
			if cl.State() == Ready {
				t.Fatal("a session came up despite the mismatch")
			}
		})
	}
}
