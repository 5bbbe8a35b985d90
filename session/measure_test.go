package session

import (
	"crypto/tls"
	"io"
	"net"
	"net/http"
	"os"
	"strconv"
	"testing"
	"time"
)

// TestMeasureWindowsAtRTT measures single-download throughput through a
// session whose server->client direction is delayed by a user-space relay
// (RTT = the delay), for several flow-control windows. It is a measurement,
// not an assertion, and runs only with PTPROXY_MEASURE=1:
//
//	PTPROXY_MEASURE=1 go test ./session -run TestMeasureWindowsAtRTT -v
//
// Results are recorded in docs/transport.md.
func TestMeasureWindowsAtRTT(t *testing.T) {
	if os.Getenv("PTPROXY_MEASURE") != "1" {
		t.Skip("set PTPROXY_MEASURE=1 to measure")
	}
	rtt := 50 * time.Millisecond
	if v := os.Getenv("PTPROXY_MEASURE_RTT_MS"); v != "" {
		ms, _ := strconv.Atoi(v)
		rtt = time.Duration(ms) * time.Millisecond
	}
	size := 32 << 20
	payload := make([]byte, 64<<10)
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		for n > 0 {
			k := min(n, len(payload))
			w.Write(payload[:k])
			n -= k
		}
	})
	cases := []struct {
		name           string
		stream, connWn uint64
	}{
		{"original default (receive_window = initial_window = 14720)", 1_000_000, 14_720},
		{"stream 1 MB, conn 15 MiB (ptproxy-go default)", 1_000_000, 15 << 20},
		{"stream 6 MiB, conn 15 MiB", 6 << 20, 15 << 20},
		{"stream 15 MiB, conn 15 MiB", 15 << 20, 15 << 20},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			cs := newCertSet(t)
			tr := testTransport
			tr.StreamReceiveWindow, tr.ReceiveWindow = tc.stream, tc.connWn
			srv := startServerWith(t, cs.serverTLS(t, "client.test", "server.test"), tr, h)
			relay := newDelayRelay(t, srv.Addr().(*net.UDPAddr), rtt)
			cl := startClient(t, cs.clientTLS(t, "server.test", cs.client(t, "client.test")), relay.port(), func(o *ClientOptions) {
				o.Transport = tr
				o.Transport.MaxIdleTimeout = 10 * time.Second
			})
			waitFor(t, "client ready", func() bool { return cl.State() == Ready })
			n := size
			if tc.connWn < 1<<20 {
				n = 1 << 20 // the throttled case is slow: 1 MiB is enough
			}
			// warm-up (congestion window growth is part of a real transfer,
			// so it is measured too; this only primes the path)
			get := func(n int) time.Duration {
				req, _ := http.NewRequest(http.MethodGet, "https://server.test/?n="+strconv.Itoa(n), nil)
				start := time.Now()
				resp, err := cl.RoundTrip(req)
				if err != nil {
					t.Fatal(err)
				}
				got, _ := io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if got != int64(n) {
					t.Fatalf("got %d bytes", got)
				}
				return time.Since(start)
			}
			get(64 << 10)
			d := get(n)
			mbps := float64(n) * 8 / d.Seconds() / 1e6
			stats, _ := cl.ConnStats()
			t.Logf("RESULT rtt=%v stream_window=%d receive_window=%d bytes=%d time=%v throughput=%.1f Mbit/s smoothed_rtt=%v lost_packets=%d",
				rtt, tc.stream, tc.connWn, n, d.Round(time.Millisecond), mbps, stats.SmoothedRTT.Round(time.Millisecond), stats.PacketsLost)
		})
	}
}

// startServerWith is startServer with another Transport (measurements
// only; tests that use it do not run in parallel).
func startServerWith(t *testing.T, tlsConf *tls.Config, tr Transport, h http.Handler) *testServer {
	t.Helper()
	prev := testTransport
	testTransport = tr
	defer func() { testTransport = prev }()
	return startServer(t, tlsConf, 0, h)
}
