package pipeline

import (
	"net"
	"strings"
	"sync/atomic"

	"github.com/ptproxy/ptproxy/httpio"
)

// ClientRoute sends the requests it matches to a named endpoint of the
// server (client side, docs/routes.md).
type ClientRoute struct {
	// Host matches the request's host, port ignored, without case; a
	// "*.example.com" pattern matches every name under example.com; ""
	// matches any host.
	Host string
	// PathPrefix matches the start of the request target byte for byte;
	// "" matches any.
	PathPrefix string
	// Endpoint is the server's endpoint name; "" the default endpoint.
	Endpoint string
	// StripPrefix removes PathPrefix from the target before it is sent.
	StripPrefix bool
}

// Router holds the routes of one listener; Set replaces them for the
// requests that follow, also on connections already open (a reload). A nil
// *Router sends everything to the default endpoint.
type Router struct{ t atomic.Pointer[routeTable] }

type routeTable struct {
	routes []ClientRoute
	def    string
}

// NewRouter returns a Router with routes and the default endpoint def of
// its listener ("" the server's default endpoint).
func NewRouter(routes []ClientRoute, def string) *Router {
	r := &Router{}
	r.Set(routes, def)
	return r
}

// Set replaces the routes and the listener's default endpoint.
func (r *Router) Set(routes []ClientRoute, def string) {
	r.t.Store(&routeTable{routes: routes, def: def})
}

// route sends h to its endpoint (see routeRequest).
func (r *Router) route(h *Head) {
	if r == nil {
		return
	}
	t := r.t.Load()
	routeRequest(h, t.routes, t.def)
}

// routeRequest sends h, a normalized request head (client side), to its
// endpoint: the first route that matches, else def. A route that strips
// its prefix rewrites the path (which keeps a leading "/"). A named
// endpoint goes in EndpointField, last; the default one sends no field.
// Normalize removed any EndpointField the caller sent, so a caller cannot
// pick an endpoint itself.
func routeRequest(h *Head, routes []ClientRoute, def string) {
	endpoint := def
	for i := range routes {
		r := &routes[i]
		if !hostMatches(r.Host, h.Authority) || !strings.HasPrefix(h.Path, r.PathPrefix) {
			continue
		}
		if r.StripPrefix {
			h.Path = "/" + strings.TrimPrefix(h.Path[len(r.PathPrefix):], "/")
		}
		endpoint = r.Endpoint
		break
	}
	if endpoint != "" {
		h.Header = append(h.Header, httpio.Field{Name: EndpointField, Value: endpoint})
	}
}

// hostMatches reports whether pattern (see ClientRoute.Host) matches the
// host of authority.
func hostMatches(pattern, authority string) bool {
	if pattern == "" {
		return true
	}
	host := authority
	if h, _, err := net.SplitHostPort(authority); err == nil {
		host = h
	} else {
		host = strings.TrimSuffix(strings.TrimPrefix(host, "["), "]")
	}
	host = strings.TrimSuffix(host, ".")
	if suffix, ok := strings.CutPrefix(pattern, "*."); ok {
		return len(host) > len(suffix)+1 && host[len(host)-len(suffix)-1] == '.' && httpio.EqualFold(host[len(host)-len(suffix):], suffix)
	}
	return httpio.EqualFold(host, pattern)
}
