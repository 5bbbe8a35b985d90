package app

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/pipeline"
	"github.com/ptproxy/ptproxy/session"
)

// buildRoutes makes the server's origin groups and endpoints from cfg
// (docs/routes.md). The groups start no goroutine; useRoutes runs the
// health checks of those that have them.
func (in *Instance) buildRoutes(cfg *config.Config) ([]*pipeline.OriginGroup, []*pipeline.Endpoint, error) {
	var groups []*pipeline.OriginGroup
	var endpoints []*pipeline.Endpoint
	byName := map[string]*pipeline.OriginGroup{}
	fail := func(what string, err error) ([]*pipeline.OriginGroup, []*pipeline.Endpoint, error) {
		for _, g := range groups {
			g.Close()
		}
		return nil, nil, step(what, err)
	}
	for _, gc := range cfg.EffectiveOriginGroups() {
		g, err := newGroup(cfg, gc, in)
		if err != nil {
			return fail("building origin group "+gc.Name, err)
		}
		groups = append(groups, g)
		byName[gc.Name] = g
	}
	for _, ec := range cfg.EffectiveEndpoints() {
		g := byName[ec.OriginGroup]
		if g == nil {
			// Validation refuses this; a Config built in code may not have
			// been validated.
			return fail("building endpoints", fmt.Errorf("endpoint %q: unknown origin group %q", ec.Name, ec.OriginGroup))
		}
		ep := &pipeline.Endpoint{Name: ec.Name, Group: g}
		for _, r := range ec.Allow {
			ep.Allow = append(ep.Allow, pipeline.AccessRule{Identities: r.Identities, Methods: r.Methods, PathPrefixes: r.PathPrefixes})
		}
		endpoints = append(endpoints, ep)
	}
	return groups, endpoints, nil
}

// useRoutes puts groups and endpoints in force (the handler already serves
// with them): it starts their health checks, and stops the health checks
// and closes the idle connections of those they replace. Exchanges still
// running on an old group finish on their connections.
func (in *Instance) useRoutes(groups []*pipeline.OriginGroup, endpoints []*pipeline.Endpoint) {
	ctx, stop := context.WithCancel(in.runCtx)
	for _, g := range groups {
		if g.HasHealthChecks() {
			// Stops with the next reload's useRoutes, or runCtx (Close,
			// also at the end of Drain).
			in.wg.Go(func() { g.RunHealthChecks(ctx) })
		}
	}
	in.routesMu.Lock()
	oldGroups, oldStop := in.groups, in.stopHealth
	in.groups, in.endpoints, in.stopHealth = groups, endpoints, stop
	in.routesMu.Unlock()
	if oldStop != nil {
		oldStop()
	}
	for _, g := range oldGroups {
		g.Close()
	}
}

// newGroup builds one origin group.
func newGroup(cfg *config.Config, gc config.OriginGroup, in *Instance) (*pipeline.OriginGroup, error) {
	o := pipeline.GroupOptions{
		Name:           gc.Name,
		Addresses:      gc.Addresses,
		Balance:        string(gc.Balance),
		MaxFails:       gc.MaxFails,
		FailTimeout:    gc.FailTimeout.Duration(),
		HealthPath:     gc.HealthPath,
		HealthInterval: gc.HealthInterval.Duration(),
		HealthTimeout:  gc.HealthTimeout.Duration(),
		Origin: pipeline.OriginOptions{
			NoDelay:   cfg.System.TCPNodelay,
			KeepAlive: 15 * time.Second,
			MaxIdle:   cfg.Transport.MaxConcurrentHTTPStreams,
			IdleTime:  cfg.System.OriginIdleTimeout.Duration(),
			Limits:    pipeline.ResponseLimits(cfg.Transport.MaxResponseHeaderBytes),
		},
		Logger: in.log,
	}
	if gc.Balance == config.BalanceSticky {
		kind, name, _ := config.ParseStickyKey(gc.StickyKey)
		if kind == "header" {
			o.StickyHeader = name
		} else {
			o.StickyCookie = name
		}
	}
	if ranges, problem := config.ParseStatuses(gc.HealthStatuses); problem == "" {
		o.HealthStatus = func(s int) bool {
			for _, r := range ranges {
				if s >= r.Lo && s <= r.Hi {
					return true
				}
			}
			return false
		}
	}
	if gc.TLS {
		tc, err := originTLS(gc)
		if err != nil {
			return nil, err
		}
		o.Origin.TLS = tc
	}
	return pipeline.NewOriginGroup(o)
}

// originTLS is the TLS client config of a group with tls = true: its CA
// (system roots when unset), its server name (the host of each address
// when unset, filled in by the group) and optional client certificate.
// HTTP/1.1 is the only protocol offered.
func originTLS(gc config.OriginGroup) (*tls.Config, error) {
	tc := &tls.Config{MinVersion: tls.VersionTLS12, ServerName: gc.TLSServerName, NextProtos: []string{"http/1.1"}}
	if gc.TLSCA != "" {
		certs, err := session.LoadCACerts(gc.TLSCA)
		if err != nil {
			return nil, err
		}
		tc.RootCAs = x509.NewCertPool()
		for _, c := range certs {
			tc.RootCAs.AddCert(c)
		}
	}
	if gc.TLSCert != "" {
		kp, err := tls.LoadX509KeyPair(gc.TLSCert, gc.TLSKey)
		if err != nil {
			return nil, fmt.Errorf("loading origin client certificate (%s, %s): %w", gc.TLSCert, gc.TLSKey, err)
		}
		tc.Certificates = []tls.Certificate{kp}
	}
	return tc, nil
}

// OriginStatus is one origin of a group in /status.
type OriginStatus struct {
	Group    string `json:"group"`
	Address  string `json:"address"`
	Up       bool   `json:"up"`
	Fails    int    `json:"consecutive_failures"`
	InFlight int64  `json:"requests_in_flight"`
}

// EndpointStatus is one endpoint in /status.
type EndpointStatus struct {
	Name     string `json:"name"`
	Group    string `json:"origin_group"`
	Requests uint64 `json:"requests"`
}

// routeStatus fills the origins and endpoints of /status (server mode).
func (in *Instance) routeStatus(st *Status) {
	in.routesMu.RLock()
	defer in.routesMu.RUnlock()
	for _, g := range in.groups {
		for _, s := range g.States() {
			st.Origins = append(st.Origins, OriginStatus{Group: s.Group, Address: s.Address, Up: s.Up, Fails: s.Fails, InFlight: s.InFlight})
		}
	}
	for _, e := range in.endpoints {
		st.Endpoints = append(st.Endpoints, EndpointStatus{Name: e.Name, Group: e.Group.Name(), Requests: e.Requests()})
	}
}

// routeCollector exports origin health and endpoint request counts at
// scrape time.
type routeCollector struct {
	in                    *Instance
	up, fails, reqs, busy *prometheus.Desc
}

func newRouteCollector(in *Instance) *routeCollector {
	return &routeCollector{
		in: in,
		up: prometheus.NewDesc("ptproxy_origin_up",
			"1 when the origin takes requests, 0 when health checks took it out.", []string{"group", "origin"}, nil),
		fails: prometheus.NewDesc("ptproxy_origin_consecutive_failures",
			"Consecutive failures of the origin (passive and active health checks).", []string{"group", "origin"}, nil),
		busy: prometheus.NewDesc("ptproxy_origin_requests_in_flight",
			"Requests on the origin now.", []string{"group", "origin"}, nil),
		reqs: prometheus.NewDesc("ptproxy_endpoint_requests_total",
			"Requests by the endpoint they named (\"\" is the default endpoint), allowed or not.", []string{"endpoint"}, nil),
	}
}

func (c *routeCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.up
	ch <- c.fails
	ch <- c.busy
	ch <- c.reqs
}

func (c *routeCollector) Collect(ch chan<- prometheus.Metric) {
	c.in.routesMu.RLock()
	defer c.in.routesMu.RUnlock()
	for _, g := range c.in.groups {
		for _, s := range g.States() {
			up := 0.0
			if s.Up {
				up = 1
			}
			ch <- prometheus.MustNewConstMetric(c.up, prometheus.GaugeValue, up, s.Group, s.Address)
			ch <- prometheus.MustNewConstMetric(c.fails, prometheus.GaugeValue, float64(s.Fails), s.Group, s.Address)
			ch <- prometheus.MustNewConstMetric(c.busy, prometheus.GaugeValue, float64(s.InFlight), s.Group, s.Address)
		}
	}
	for _, e := range c.in.endpoints {
		ch <- prometheus.MustNewConstMetric(c.reqs, prometheus.CounterValue, float64(e.Requests()), e.Name)
	}
}
