package config

import (
	"fmt"
	"reflect"
	"strings"
)

// Client-side routing sections (ptproxy-go extension, docs/routes.md):
// [[listeners]] add HTTP/1.1 listeners besides general.http_bind_address,
// and [[routes]] send matching requests to a named endpoint of the server.
// They are decoded like the server's routing sections (routes.go).

// Listener is one extra HTTP/1.1 listener of the client ([[listeners]]).
type Listener struct {
	// Address is the host:port to listen on.
	Address string `koanf:"address" json:"address"`
	// Endpoint is where this listener's requests go when no route
	// matches; "" is the default endpoint.
	Endpoint string `koanf:"endpoint" json:"endpoint,omitempty"`
}

// Route sends the requests it matches to a named endpoint ([[routes]]);
// the first route that matches wins. The endpoint travels with the request
// in the ptproxy-endpoint field, and the server maps it to an origin
// group ([[endpoints]]).
type Route struct {
	// Listener restricts the route to one listener, named by its address
	// as written (general.http_bind_address or a [[listeners]] address);
	// "" is every listener.
	Listener string `koanf:"listener" json:"listener,omitempty"`
	// Host matches the request's host (port ignored, case-insensitive);
	// "*.example.com" matches every name under example.com; "" any host.
	Host string `koanf:"host" json:"host,omitempty"`
	// PathPrefix matches the start of the path, byte for byte; "" any.
	PathPrefix string `koanf:"path_prefix" json:"path_prefix,omitempty"`
	// Endpoint is the server's endpoint name; "" is the default endpoint.
	Endpoint string `koanf:"endpoint" json:"endpoint,omitempty"`
	// StripPrefix removes PathPrefix from the path before it is sent; the
	// path keeps a leading "/".
	StripPrefix bool `koanf:"strip_prefix" json:"strip_prefix,omitempty"`
}

// decodeClientRoutes takes [[listeners]] and [[routes]] out of raw.
func (c *Config) decodeClientRoutes(d *tableDecoder, raw map[string]any) {
	decodeList(d, raw, "listeners", &c.Listeners)
	decodeList(d, raw, "routes", &c.Routes)
}

// decodeList takes the array of tables sec out of raw and decodes each
// table into one more element of *out.
func decodeList[T any](d *tableDecoder, raw map[string]any, sec string, out *[]T) {
	v, ok := raw[sec]
	if !ok {
		return
	}
	delete(raw, sec)
	d.list(sec, v, func(i int, path string, tbl map[string]any) {
		var e T
		d.table(path, tbl, reflect.ValueOf(&e).Elem())
		*out = append(*out, e)
	})
}

// checkClientRoutes validates [[listeners]] and [[routes]]: Client mode
// only, listener addresses valid and distinct, endpoint names of the
// charset the field allows, routes naming an existing listener, host
// patterns and path prefixes well formed.
func (k *checker) checkClientRoutes() {
	c := k.c
	if c.General.Mode != ModeClient {
		if c.General.Mode == ModeServer {
			if len(c.Listeners) > 0 {
				k.fail("listeners", "only allowed in Client mode")
			}
			if len(c.Routes) > 0 {
				k.fail("routes", "only allowed in Client mode")
			}
		}
		return
	}
	addrs := map[string]bool{c.General.HTTPBindAddress: true}
	for i, l := range c.Listeners {
		p := fmt.Sprintf("listeners[%d]", i)
		switch {
		case l.Address == "":
			k.fail(p+".address", "required: the host:port to listen on")
		case checkHostPort(l.Address, true) != "":
			k.fail(p+".address", "%s", checkHostPort(l.Address, true))
		case addrs[l.Address]:
			k.fail(p+".address", "%q is already a listener (general.http_bind_address or an earlier [[listeners]] entry)", l.Address)
		}
		addrs[l.Address] = true
		if l.Endpoint != "" && !validName(l.Endpoint) {
			k.fail(p+".endpoint", "must use only letters, digits, '-', '_' and '.', got %q", l.Endpoint)
		}
	}
	for i, r := range c.Routes {
		p := fmt.Sprintf("routes[%d]", i)
		if r.Endpoint != "" && !validName(r.Endpoint) {
			k.fail(p+".endpoint", "must use only letters, digits, '-', '_' and '.', got %q", r.Endpoint)
		}
		if r.Listener != "" && !addrs[r.Listener] {
			k.fail(p+".listener", "%q is not a listener address (general.http_bind_address or a [[listeners]] address, as written)", r.Listener)
		}
		if r.Host != "" {
			h := strings.TrimPrefix(r.Host, "*.")
			if checkHostname(h) != "" || strings.Contains(h, "*") {
				k.fail(p+".host", "must be a host name, or \"*.\" and a domain, without port, got %q", r.Host)
			}
		}
		if r.PathPrefix != "" && !strings.HasPrefix(r.PathPrefix, "/") {
			k.fail(p+".path_prefix", "must start with \"/\", got %q", r.PathPrefix)
		}
		if r.StripPrefix && r.PathPrefix == "" {
			k.fail(p+".strip_prefix", "needs path_prefix")
		}
		if r.Host == "" && r.PathPrefix == "" && r.Listener == "" {
			k.fail(p, "matches every request: give host, path_prefix or listener (a listener's endpoint is [[listeners]].endpoint)")
		}
	}
}
