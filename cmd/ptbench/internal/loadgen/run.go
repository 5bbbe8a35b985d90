package loadgen

import (
	"context"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/stats"
)

// DialFunc opens a connection to the system under test.
type DialFunc func(ctx context.Context) (net.Conn, error)

// TCPDialer dials addr over TCP with Nagle off.
func TCPDialer(addr string) DialFunc {
	d := net.Dialer{Timeout: 5 * time.Second}
	return func(ctx context.Context) (net.Conn, error) {
		return d.DialContext(ctx, "tcp", addr)
	}
}

// Spec is one load run.
type Spec struct {
	Dial        DialFunc
	Request     Request
	Concurrency int
	MaxRequests int           // bound on measured requests (required)
	Duration    time.Duration // bound on the measured phase (required)
	Warmup      time.Duration // unmeasured phase before, same load
	ExpectBytes int64         // when >= 0, a 200 must carry this many body bytes
	// Begin and End, when set, are called right at the start and right at
	// the end of the measured phase (to sample CPU counters).
	Begin, End func()
}

// Result of a run.
type Result struct {
	Requests int           // successful (200, right size) measured requests
	Errors   int           // failed measured requests
	Elapsed  time.Duration // measured phase
	Bytes    int64         // body bytes received in the measured phase
	Latency  *stats.Recorder
	FirstErr string
}

// RPS is successful requests per second.
func (r *Result) RPS() float64 {
	if r.Elapsed <= 0 {
		return 0
	}
	return float64(r.Requests) / r.Elapsed.Seconds()
}

// Run runs spec: workers, each on its own persistent connection (redialled
// after an error), until MaxRequests requests were started or Duration
// passed, whichever comes first.
func Run(ctx context.Context, spec Spec) (*Result, error) {
	if spec.Concurrency < 1 || spec.MaxRequests < 1 || spec.Duration <= 0 {
		return nil, fmt.Errorf("loadgen: concurrency, count and duration bounds are required")
	}
	spec.Request.Prepare()
	// Warm-up: same load, not recorded, bounded by time and count too.
	if spec.Warmup > 0 {
		w := spec
		w.Warmup, w.Begin, w.End = 0, nil, nil
		w.Duration = spec.Warmup
		if _, err := runPhase(ctx, w, false); err != nil {
			return nil, err
		}
	}
	return runPhase(ctx, spec, true)
}

func runPhase(ctx context.Context, spec Spec, record bool) (*Result, error) {
	var started atomic.Int64
	max := int64(spec.MaxRequests)

	type worker struct {
		lat      *stats.Recorder
		ok, errs int
		bytes    int64
		firstErr string
	}
	per := spec.MaxRequests/spec.Concurrency + 1
	if per > 1<<20 {
		per = 1 << 20
	}
	// The recorders (up to 8 MiB each) are allocated before the clock
	// starts: the phase measures requests, not their bookkeeping.
	workers := make([]*worker, spec.Concurrency)
	for i := range workers {
		workers[i] = &worker{lat: stats.NewRecorder(per)}
	}
	ctx, cancel := context.WithTimeout(ctx, spec.Duration)
	defer cancel()
	deadline, _ := ctx.Deadline()
	grace := deadline.Add(10 * time.Second) // hard bound on a stuck request
	var wg sync.WaitGroup
	if spec.Begin != nil {
		spec.Begin()
	}
	start := time.Now()
	for _, w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			var c *Conn
			defer func() {
				if c != nil {
					c.Close()
				}
			}()
			fail := func(err error) {
				w.errs++
				if w.firstErr == "" {
					w.firstErr = err.Error()
				}
				if c != nil {
					c.Close()
					c = nil
				}
				// Back off a little so a refused dial does not spin.
				select {
				case <-ctx.Done():
				case <-time.After(10 * time.Millisecond):
				}
			}
			for ctx.Err() == nil && started.Add(1) <= max {
				t0 := time.Now()
				if c == nil {
					nc, err := spec.Dial(ctx)
					if err != nil {
						fail(err)
						continue
					}
					nc.SetDeadline(grace)
					c = NewConn(nc)
				}
				status, n, err := c.Do(&spec.Request)
				d := time.Since(t0)
				if err != nil {
					fail(err)
					continue
				}
				if status != 200 || (spec.ExpectBytes >= 0 && n != spec.ExpectBytes) {
					fail(fmt.Errorf("status %d, %d body bytes", status, n))
					continue
				}
				w.ok++
				w.bytes += n
				if record {
					w.lat.Add(d)
				}
				if !c.Reusable() {
					c.Close()
					c = nil
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start)
	if spec.End != nil {
		spec.End()
	}
	res := &Result{Elapsed: elapsed, Latency: stats.NewRecorder(0)}
	for _, w := range workers {
		res.Requests += w.ok
		res.Errors += w.errs
		res.Bytes += w.bytes
		res.Latency.Merge(w.lat)
		if res.FirstErr == "" {
			res.FirstErr = w.firstErr
		}
	}
	return res, nil
}

// Poll sends req until a 200 arrives or timeout passes, reusing one
// connection while it works and redialling after any failure, waiting
// interval after each failed attempt. It returns the time of the 200's
// arrival, the attempts made and the last error.
func Poll(ctx context.Context, dial DialFunc, req Request, interval, perTry, timeout time.Duration) (time.Time, int, error) {
	req.Prepare()
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	var c *Conn
	defer func() {
		if c != nil {
			c.Close()
		}
	}()
	var last error
	for attempts := 1; ; attempts++ {
		if c == nil {
			dctx, dcancel := context.WithTimeout(ctx, perTry)
			nc, err := dial(dctx)
			dcancel()
			if err == nil {
				c = NewConn(nc)
			} else {
				last = err
			}
		}
		if c != nil {
			c.NetConn().SetDeadline(time.Now().Add(perTry))
			status, _, err := c.Do(&req)
			if err == nil && status == 200 {
				return time.Now(), attempts, nil
			}
			if err == nil {
				last = fmt.Errorf("status %d", status)
				if !c.Reusable() {
					c.Close()
					c = nil
				}
			} else {
				last = err
				c.Close()
				c = nil
			}
		}
		select {
		case <-ctx.Done():
			return time.Time{}, attempts, fmt.Errorf("no 200 within %v: %v", timeout, last)
		case <-time.After(interval):
		}
	}
}
