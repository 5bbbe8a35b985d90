package pipeline

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"hash/fnv"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// Balancing methods of an origin group (config's balance values).
const (
	BalanceRoundRobin    = "round_robin"
	BalanceRandom        = "random"
	BalanceLeastRequests = "least_requests"
	BalanceSticky        = "sticky"
)

// Defaults of GroupOptions.
const (
	DefaultFailTimeout    = 10 * time.Second
	DefaultHealthInterval = 5 * time.Second
	DefaultHealthTimeout  = 2 * time.Second
)

// GroupOptions configure an OriginGroup.
type GroupOptions struct {
	Name      string
	Addresses []string
	// Balance is one of the Balance* methods; "" is round robin.
	Balance string
	// StickyHeader or StickyCookie name the request's key with
	// BalanceSticky; a request without it is balanced round robin.
	StickyHeader, StickyCookie string
	// MaxFails consecutive failures take an origin out (0: never). A
	// group of one origin never takes it out on failures (nginx's rule):
	// trying the only origin is always better than a certain 502.
	MaxFails int
	// FailTimeout is how long an origin taken out stays out when the
	// group has no active health checks (default DefaultFailTimeout).
	FailTimeout time.Duration
	// HealthPath, when set, is probed with a GET on every address every
	// HealthInterval (RunHealthChecks); then only a passing check brings
	// an origin back.
	HealthPath     string
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	// HealthStatus reports whether a check's status passes (default
	// 200-399).
	HealthStatus func(status int) bool
	// Origin is the template of every address's pool: Address is filled
	// in, and TLS.ServerName when TLS is set without one (the host of the
	// address).
	Origin OriginOptions
	Logger *slog.Logger
}

// OriginGroup spreads the requests of its endpoints over several origins,
// each with its own OriginPool, and keeps track of which are healthy
// (docs/routes.md). It starts no goroutine; RunHealthChecks is run by its
// owner when the group has a HealthPath.
type OriginGroup struct {
	o       GroupOptions
	origins []*groupOrigin
	rr      atomic.Uint64 // round-robin position
}

// groupOrigin is one address of a group.
type groupOrigin struct {
	idx      int
	addr     string
	pool     *OriginPool
	inflight atomic.Int64 // requests on it now (least_requests)
	probe    *http.Client // active health checks; nil without

	mu        sync.Mutex // guards the fields below
	fails     int        // consecutive failures
	down      bool
	downUntil time.Time // without active checks: back on trial after this
}

// NewOriginGroup builds the group's pools. It fails only on an address
// whose host cannot be split off for the TLS server name.
func NewOriginGroup(o GroupOptions) (*OriginGroup, error) {
	if o.Balance == "" {
		o.Balance = BalanceRoundRobin
	}
	if o.FailTimeout <= 0 {
		o.FailTimeout = DefaultFailTimeout
	}
	if o.HealthInterval <= 0 {
		o.HealthInterval = DefaultHealthInterval
	}
	if o.HealthTimeout <= 0 {
		o.HealthTimeout = DefaultHealthTimeout
	}
	if o.HealthStatus == nil {
		o.HealthStatus = func(s int) bool { return s >= 200 && s <= 399 }
	}
	if len(o.Addresses) == 0 {
		return nil, fmt.Errorf("origin group %q: no address", o.Name)
	}
	g := &OriginGroup{o: o}
	for i, addr := range o.Addresses {
		oo := o.Origin
		oo.Address = addr
		if oo.TLS != nil && oo.TLS.ServerName == "" {
			host, _, err := net.SplitHostPort(addr)
			if err != nil {
				g.Close()
				return nil, fmt.Errorf("origin group %q: address %q: %w", o.Name, addr, err)
			}
			oo.TLS = oo.TLS.Clone()
			oo.TLS.ServerName = host
		}
		og := &groupOrigin{idx: i, addr: addr, pool: NewOriginPool(oo)}
		if o.HealthPath != "" {
			og.probe = probeClient(oo, o.HealthTimeout)
		}
		g.origins = append(g.origins, og)
	}
	return g, nil
}

// poolGroup wraps a single pool as a group (ServerOptions.Origin).
func poolGroup(name string, p *OriginPool) *OriginGroup {
	return &OriginGroup{
		o:       GroupOptions{Name: name, Balance: BalanceRoundRobin, FailTimeout: DefaultFailTimeout},
		origins: []*groupOrigin{{addr: p.o.Address, pool: p}},
	}
}

// Name is the group's name.
func (g *OriginGroup) Name() string { return g.o.Name }

// Close closes every pool's idle connections (a draining server's last
// step); connections in use close when their exchange ends.
func (g *OriginGroup) Close() error {
	for _, o := range g.origins {
		o.pool.Close()
	}
	return nil
}

// OriginState is the health of one origin of a group, for /status and
// /metrics.
type OriginState struct {
	Group, Address string
	Up             bool
	// Fails is the number of consecutive failures.
	Fails    int
	InFlight int64
}

// States returns the state of every origin, in address order.
func (g *OriginGroup) States() []OriginState {
	out := make([]OriginState, 0, len(g.origins))
	now := time.Now()
	for _, o := range g.origins {
		o.mu.Lock()
		up := !o.down || g.o.HealthPath == "" && !now.Before(o.downUntil)
		out = append(out, OriginState{Group: g.o.Name, Address: o.addr, Up: up, Fails: o.fails, InFlight: o.inflight.Load()})
		o.mu.Unlock()
	}
	return out
}

// usable reports whether o may take a request now. Without active
// checks, an origin whose fail_timeout passed comes back on trial: one
// more failure takes it out again, a success clears its count.
func (g *OriginGroup) usable(o *groupOrigin, now time.Time) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if !o.down {
		return true
	}
	if g.o.HealthPath != "" || now.Before(o.downUntil) {
		return false
	}
	o.down = false
	o.fails = max(g.o.MaxFails-1, 0)
	if g.o.Logger != nil {
		g.o.Logger.Info("origin back on trial after fail_timeout", "group", g.o.Name, "origin", o.addr)
	}
	return true
}

// pick chooses the origin for h among those usable and not tried yet, or
// returns nil when none is left.
func (g *OriginGroup) pick(h *Head, tried []bool) *groupOrigin {
	n := len(g.origins)
	if n == 1 {
		if tried[0] || !g.usable(g.origins[0], time.Now()) {
			return nil
		}
		return g.origins[0]
	}
	now := time.Now()
	ok := func(i int) bool { return !tried[i] && g.usable(g.origins[i], now) }
	switch g.o.Balance {
	case BalanceRandom:
		var cands []int
		for i := range n {
			if ok(i) {
				cands = append(cands, i)
			}
		}
		if len(cands) == 0 {
			return nil
		}
		return g.origins[cands[rand.IntN(len(cands))]]
	case BalanceLeastRequests:
		// Ties go round robin, so sequential requests (all at zero)
		// still spread.
		start := int(g.rr.Add(1)-1) % n
		var best *groupOrigin
		for j := range n {
			i := (start + j) % n
			if !ok(i) {
				continue
			}
			if best == nil || g.origins[i].inflight.Load() < best.inflight.Load() {
				best = g.origins[i]
			}
		}
		return best
	case BalanceSticky:
		kind, name := "header", g.o.StickyHeader
		if name == "" {
			kind, name = "cookie", g.o.StickyCookie
		}
		if key := stickyValue(h.Header, kind, name); key != "" {
			// Rendezvous hashing: the key goes to the usable origin with
			// the highest score, so an origin leaving moves only its own
			// keys, and coming back takes back only those.
			var best *groupOrigin
			var bestScore uint64
			for i, o := range g.origins {
				if s := rendezvous(key, o.addr); ok(i) && (best == nil || s > bestScore) {
					best, bestScore = o, s
				}
			}
			return best
		}
	}
	start := int(g.rr.Add(1)-1) % n
	for j := range n {
		if i := (start + j) % n; ok(i) {
			return g.origins[i]
		}
	}
	return nil
}

// rendezvous is the score of addr for key: FNV-1a over both, then a
// 64-bit finalizer (splitmix64) so that similar addresses spread.
func rendezvous(key, addr string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(key))
	h.Write([]byte{0})
	h.Write([]byte(addr))
	x := h.Sum64()
	x ^= x >> 30
	x *= 0xbf58476d1ce4e5b9
	x ^= x >> 27
	x *= 0x94d049bb133111eb
	x ^= x >> 31
	return x
}

// failed counts a failure of o (passive health check): connecting was
// refused or timed out, or a new connection ended before any byte of a
// response. A 5xx is an answer, not a failure.
func (g *OriginGroup) failed(o *groupOrigin, err error) {
	o.mu.Lock()
	o.fails++
	out := !o.down && g.o.MaxFails > 0 && o.fails >= g.o.MaxFails && len(g.origins) > 1
	if out {
		o.down = true
		o.downUntil = time.Now().Add(g.o.FailTimeout)
	}
	fails := o.fails
	o.mu.Unlock()
	if out && g.o.Logger != nil {
		back := "after fail_timeout " + g.o.FailTimeout.String()
		if g.o.HealthPath != "" {
			back = "when a health check passes"
		}
		g.o.Logger.Warn("origin taken out: too many consecutive failures", "group", g.o.Name, "origin", o.addr,
			"fails", fails, "error", err, "back", back)
	}
}

// succeeded clears o's failure count: it answered.
func (g *OriginGroup) succeeded(o *groupOrigin) {
	o.mu.Lock()
	if !o.down {
		o.fails = 0
	}
	o.mu.Unlock()
}

// checked records the result of an active health check: a pass brings o
// back at once, a failure takes it out at once (the check is a deliberate
// probe: waiting for max_fails of them would keep sending requests to an
// origin known to fail).
func (g *OriginGroup) checked(o *groupOrigin, err error) {
	o.mu.Lock()
	was := o.down
	if err == nil {
		o.down, o.fails = false, 0
	} else {
		o.down = true
		o.fails++
	}
	o.mu.Unlock()
	if g.o.Logger == nil || was == (err != nil) {
		return
	}
	if err == nil {
		g.o.Logger.Info("origin back: health check passed", "group", g.o.Name, "origin", o.addr)
	} else {
		g.o.Logger.Warn("origin taken out: health check failed", "group", g.o.Name, "origin", o.addr, "error", err)
	}
}

// HasHealthChecks reports whether RunHealthChecks has work to do.
func (g *OriginGroup) HasHealthChecks() bool { return g.o.HealthPath != "" }

// RunHealthChecks probes every origin of the group with a GET of
// HealthPath, at once and then every HealthInterval, until ctx ends. Each
// round's probes run concurrently, one goroutine per origin, and are
// joined before the round ends, each bounded by HealthTimeout. It returns
// at once for a group without a HealthPath.
func (g *OriginGroup) RunHealthChecks(ctx context.Context) {
	if g.o.HealthPath == "" {
		return
	}
	t := time.NewTicker(g.o.HealthInterval)
	defer t.Stop()
	for {
		var wg sync.WaitGroup
		for _, o := range g.origins {
			wg.Go(func() {
				err := g.probe(ctx, o)
				if ctx.Err() == nil {
					g.checked(o, err)
				}
			})
		}
		wg.Wait()
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// errHealthStatus is a check answered with a status that does not pass.
var errHealthStatus = errors.New("health check status")

// probe runs one health check of o.
func (g *OriginGroup) probe(ctx context.Context, o *groupOrigin) error {
	ctx, cancel := context.WithTimeout(ctx, g.o.HealthTimeout)
	defer cancel()
	scheme := "http"
	if g.o.Origin.TLS != nil {
		scheme = "https"
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, scheme+"://"+o.addr+g.o.HealthPath, nil)
	if err != nil {
		return err
	}
	req.Header.Set("User-Agent", "ptproxy-health-check")
	resp, err := o.probe.Do(req)
	if err != nil {
		return err
	}
	// A small body is read so the origin does not see a reset; the
	// connection is not kept anyway.
	var buf [512]byte
	resp.Body.Read(buf[:])
	resp.Body.Close()
	if !g.o.HealthStatus(resp.StatusCode) {
		return fmt.Errorf("%w %d", errHealthStatus, resp.StatusCode)
	}
	return nil
}

// probeClient is the HTTP/1.1 client of an origin's health checks: no
// proxy from the environment, no keep-alive (each check proves that
// connecting works), the origin's TLS settings.
func probeClient(oo OriginOptions, timeout time.Duration) *http.Client {
	var tc *tls.Config
	if oo.TLS != nil {
		tc = oo.TLS.Clone()
		tc.NextProtos = []string{"http/1.1"}
	}
	return &http.Client{
		Timeout: timeout,
		Transport: &http.Transport{
			Proxy:             nil,
			DialContext:       (&net.Dialer{Timeout: timeout}).DialContext,
			TLSClientConfig:   tc,
			DisableKeepAlives: true,
			ForceAttemptHTTP2: false,
		},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

// noOriginError is the 502 of a request no origin of its group could take.
func noOriginError(g *OriginGroup, tried int, last error) *Error {
	var err error
	if last != nil {
		err = fmt.Errorf("origin group %q: %d of %d origins tried, none could be connected: %w", g.o.Name, tried, len(g.origins), last)
	} else {
		err = fmt.Errorf("origin group %q: all %d origins are out", g.o.Name, len(g.origins))
	}
	e := NewError(KindUpstream, ServerSide, MsgCouldNotProxy, err)
	e.Public = "no origin of group " + quoteName(g.o.Name) + " is available"
	return e
}

// quoteName quotes a name for a response body when it needs it.
func quoteName(s string) string {
	if s != "" && !strings.ContainsAny(s, " \"\\") {
		return s
	}
	return fmt.Sprintf("%q", s)
}
