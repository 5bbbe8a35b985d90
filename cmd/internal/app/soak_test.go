package app

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"os"
	"runtime"
	"runtime/debug"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// Soak settings. PTPROXY_SOAK=<duration> (e.g. 5m) turns the CI run into a
// benchmark-length run; give go test a -timeout to match.
const (
	soakConcurrency = 256
	soakDefault     = 20 * time.Second
	soakShort       = 3 * time.Second
	// soakMaxPerWorker bounds the loop by count as well as by time.
	soakMaxPerWorker = 1_000_000
)

func soakDuration(t *testing.T) time.Duration {
	if v := os.Getenv("PTPROXY_SOAK"); v != "" {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			t.Fatalf("PTPROXY_SOAK=%q: want a positive duration such as 5m", v)
		}
		return d
	}
	if testing.Short() {
		return soakShort
	}
	return soakDefault
}

// soakPattern is the deterministic body of /bytes?n=: byte i is i mod 251,
// so a shifted, truncated or mixed-up body is detected.
func soakPattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i % 251)
	}
	return b
}

func soakOrigin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/bytes", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		w.Header().Set("Content-Length", strconv.Itoa(n))
		w.Write(soakBytes[:n])
	})
	mux.HandleFunc("/stream", func(w http.ResponseWriter, r *http.Request) {
		// Unknown length: the response is chunked end to end.
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		b := soakBytes[:n]
		rc := http.NewResponseController(w)
		for len(b) > 0 {
			k := min(len(b), 8<<10)
			w.Write(b[:k])
			rc.Flush()
			b = b[k:]
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		http.NewResponseController(w).EnableFullDuplex()
		io.Copy(w, r.Body)
	})
	return mux
}

// soakStats counts what the workers did.
type soakStats struct {
	requests, bytesUp, bytesDown atomic.Int64
	byKind                       [6]atomic.Int64
	mu                           sync.Mutex
	errs                         []string
}

func (s *soakStats) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.errs) < 20 {
		s.errs = append(s.errs, fmt.Sprintf(format, args...))
	}
}

var soakKinds = [...]string{"GET small", "GET medium", "GET 1 MiB", "GET chunked", "POST echo", "POST chunked echo"}

// Shared, read-only request and response contents: the workers allocate
// nothing per request themselves, so the heap measured is the proxy's.
var (
	soakBytes  = soakPattern(1 << 20)
	soakRandom = func() []byte {
		b := make([]byte, 256<<10)
		r := rand.New(rand.NewPCG(1, 2))
		for i := range b {
			b[i] = byte(r.IntN(256))
		}
		return b
	}()
)

// compareWriter checks a body against want as it streams, without
// buffering it.
type compareWriter struct {
	want []byte
	off  int
	bad  bool
}

func (c *compareWriter) Write(p []byte) (int, error) {
	if c.off+len(p) > len(c.want) || !bytes.Equal(p, c.want[c.off:c.off+len(p)]) {
		c.bad = true
	}
	c.off += len(p)
	return len(p), nil
}

// soakOne runs one request of a kind drawn from rng and checks the answer
// byte for byte.
func soakOne(ctx context.Context, c *http.Client, base string, rng *rand.Rand, st *soakStats) {
	var (
		req  *http.Request
		want []byte
		kind int
	)
	switch p := rng.IntN(100); {
	case p < 40:
		kind = 0
		want = soakBytes[:rng.IntN(2<<10)]
		req, _ = http.NewRequestWithContext(ctx, "GET", base+"/bytes?n="+strconv.Itoa(len(want)), nil)
	case p < 60:
		kind = 1
		want = soakBytes[:16<<10+rng.IntN(48<<10)]
		req, _ = http.NewRequestWithContext(ctx, "GET", base+"/bytes?n="+strconv.Itoa(len(want)), nil)
	case p < 63:
		kind = 2
		want = soakBytes
		req, _ = http.NewRequestWithContext(ctx, "GET", base+"/bytes?n="+strconv.Itoa(len(want)), nil)
	case p < 73:
		kind = 3
		want = soakBytes[:rng.IntN(64<<10)]
		req, _ = http.NewRequestWithContext(ctx, "GET", base+"/stream?n="+strconv.Itoa(len(want)), nil)
	case p < 90:
		kind = 4
		off := rng.IntN(len(soakRandom) - 64<<10)
		want = soakRandom[off : off+rng.IntN(64<<10)]
		req, _ = http.NewRequestWithContext(ctx, "POST", base+"/echo", bytes.NewReader(want))
	default:
		kind = 5
		off := rng.IntN(len(soakRandom) - 128<<10)
		want = soakRandom[off : off+rng.IntN(128<<10)]
		// io.MultiReader hides the length: the request is chunked.
		req, _ = http.NewRequestWithContext(ctx, "POST", base+"/echo", io.MultiReader(bytes.NewReader(want)))
	}
	resp, err := c.Do(req)
	if err != nil {
		if ctx.Err() == nil {
			st.fail("%s: %v", soakKinds[kind], err)
		}
		return
	}
	cw := &compareWriter{want: want}
	_, err = io.Copy(cw, resp.Body)
	resp.Body.Close()
	switch {
	case err != nil:
		if ctx.Err() == nil {
			st.fail("%s: reading body: %v", soakKinds[kind], err)
		}
		return
	case resp.StatusCode != 200:
		st.fail("%s: status %d", soakKinds[kind], resp.StatusCode)
		return
	case cw.bad || cw.off != len(want):
		st.fail("%s: body of %d bytes differs from the %d expected", soakKinds[kind], cw.off, len(want))
		return
	}
	st.requests.Add(1)
	st.byKind[kind].Add(1)
	st.bytesDown.Add(int64(cw.off))
	if req.Method == "POST" {
		st.bytesUp.Add(int64(len(want)))
	}
}

// memSample is the process memory at one point, after a GC.
type memSample struct {
	heapMiB, rssMiB float64
	goroutines      int
}

func sampleMem() memSample {
	runtime.GC()
	runtime.GC() // the second one empties the sync.Pools' victim caches
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return memSample{heapMiB: float64(ms.HeapInuse) / (1 << 20), rssMiB: rssMiB(), goroutines: runtime.NumGoroutine()}
}

// writeHeapProfile writes the live heap at the end of the load (before the
// workers stopped) for go tool pprof.
func writeHeapProfile(t *testing.T, path string) {
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	runtime.GC()
	if err := pprof.Lookup("heap").WriteTo(f, 0); err != nil {
		t.Fatal(err)
	}
}

// raceBuild reports whether the test binary was built with -race.
func raceBuild() bool {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return false
	}
	for _, s := range bi.Settings {
		if s.Key == "-race" {
			return s.Value == "true"
		}
	}
	return false
}

// rssMiB reads VmRSS from /proc/self/status (0 where there is none).
func rssMiB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for line := range strings.SplitSeq(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}

// TestSoak runs soakConcurrency callers with mixed request kinds and sizes
// through one tunnel for soakDuration (20 s in CI; PTPROXY_SOAK=5m for a
// benchmark run). It asserts: zero unexpected errors (every response 200
// and byte-identical), the heap in use after the run within twice the
// warmed-up heap (plus slack: no growth per request), and every goroutine
// the run started gone once the instances are closed (goleak against the
// goroutines present before the origin and the pair were started).
func TestSoak(t *testing.T) {
	base := settled() // before anything of the soak exists
	d := soakDuration(t)
	before := sampleMem()

	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	origin := &http.Server{Handler: soakOrigin()}
	var originWG sync.WaitGroup
	originWG.Go(func() { origin.Serve(ln) })
	// Warn and above only: per-request debug lines would pile up in the
	// in-memory log and read as heap growth.
	tp := startTunnelLog(t, slog.LevelWarn, ln.Addr().String(), nil, nil)
	// The client ptproxy closes a keep-alive connection idle for
	// header_read_timeout (10 s); a caller must give up idle connections
	// sooner, as with any HTTP/1.1 server, or a POST can race the close
	// and fail with a reset (Go retries only idempotent requests).
	tr := &http.Transport{Proxy: nil, DisableCompression: true, MaxIdleConnsPerHost: soakConcurrency, IdleConnTimeout: 5 * time.Second}
	caller := &http.Client{Transport: tr}
	url := "http://" + tp.addr

	var st soakStats
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	start := time.Now()
	var samples []memSample
	sampleEvery := d / 10
	var wg sync.WaitGroup
	peakG := 0
	for w := range soakConcurrency {
		wg.Go(func() {
			rng := rand.New(rand.NewPCG(uint64(w), 0x50a4))
			for range soakMaxPerWorker {
				if ctx.Err() != nil {
					return
				}
				soakOne(ctx, caller, url, rng, &st)
			}
		})
	}
	tick := time.NewTicker(sampleEvery)
sampling:
	for {
		select {
		case <-ctx.Done():
			break sampling
		case <-tick.C:
			s := sampleMem()
			peakG = max(peakG, s.goroutines)
			samples = append(samples, s)
		}
	}
	tick.Stop()
	if path := os.Getenv("PTPROXY_SOAK_HEAPPROFILE"); path != "" {
		writeHeapProfile(t, path)
	}
	wg.Wait()
	elapsed := time.Since(start)

	st.mu.Lock()
	errs := st.errs
	st.mu.Unlock()
	for _, e := range errs {
		t.Error(e)
	}
	if st.requests.Load() == 0 {
		t.Fatal("no request completed")
	}
	t.Logf("MEASURED soak: %v, concurrency %d, %d requests (%.0f/s), %.1f MiB down, %.1f MiB up, peak goroutines %d",
		elapsed.Round(time.Second), soakConcurrency, st.requests.Load(), float64(st.requests.Load())/elapsed.Seconds(),
		float64(st.bytesDown.Load())/(1<<20), float64(st.bytesUp.Load())/(1<<20), peakG)
	for i, k := range soakKinds {
		t.Logf("  %-18s %d", k, st.byKind[i].Load())
	}
	if len(samples) >= 3 {
		warm, last := samples[1], samples[len(samples)-1]
		for i, s := range samples {
			t.Logf("  sample %d: heap in use %.1f MiB, RSS %.1f MiB, goroutines %d", i, s.heapMiB, s.rssMiB, s.goroutines)
		}
		t.Logf("MEASURED soak memory: heap %.1f -> %.1f MiB, RSS %.1f -> %.1f MiB (warm -> last sample)",
			warm.heapMiB, last.heapMiB, warm.rssMiB, last.rssMiB)
		if last.heapMiB > 2*warm.heapMiB+32 {
			t.Errorf("heap grew from %.1f MiB to %.1f MiB during the soak", warm.heapMiB, last.heapMiB)
		}
		// The race runtime keeps shadow memory and histories of freed
		// objects, so RSS only means something without -race.
		if !raceBuild() && last.rssMiB > 2*warm.rssMiB+64 {
			t.Errorf("RSS grew from %.1f MiB to %.1f MiB during the soak", warm.rssMiB, last.rssMiB)
		}
	}

	// Everything down, then nothing of it may remain.
	tr.CloseIdleConnections()
	tp.client.Close()
	tp.server.Close()
	sctx, scancel := context.WithTimeout(context.Background(), 10*time.Second)
	origin.Shutdown(sctx)
	scancel()
	origin.Close()
	originWG.Wait()
	noLeaks(t, base)
	after := sampleMem()
	t.Logf("MEASURED before start: heap %.1f MiB, RSS %.1f MiB; after shutdown: heap %.1f MiB, RSS %.1f MiB, goroutines %d",
		before.heapMiB, before.rssMiB, after.heapMiB, after.rssMiB, after.goroutines)
}
