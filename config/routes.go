package config

// Server-side routing sections (ptproxy-go extension, docs/routes.md):
// [[origin_groups]], [[endpoints]] and [default_endpoint]. Unlike the four
// scalar sections they are arrays of tables (or hold one), so they are not
// part of the flat key schema: loadBytes takes them out of the parsed file
// before the koanf layers and decodes them here, as strictly as the rest
// (unknown keys, wrong types), naming each field by its path
// ("origin_groups[1].balance"). They cannot be set from the environment.

import (
	"fmt"
	"net"
	"net/http"
	"reflect"
	"slices"
	"strconv"
	"strings"
)

// Balance is how an origin group spreads requests over its addresses.
type Balance string

// Balancing methods.
const (
	BalanceRoundRobin    Balance = "round_robin"
	BalanceRandom        Balance = "random"
	BalanceLeastRequests Balance = "least_requests"
	BalanceSticky        Balance = "sticky"
)

// DefaultGroupName is the origin group the default endpoint uses; without
// an [[origin_groups]] entry of that name it is general.http_connect_address.
const DefaultGroupName = "default"

// Defaults of an [[origin_groups]] entry.
const (
	DefaultMaxFails       = 3
	DefaultFailTimeout    = Millis(10000)
	DefaultHealthInterval = Millis(5000)
	DefaultHealthTimeout  = Millis(2000)
	DefaultHealthStatuses = "200-399"
)

// OriginGroup is one [[origin_groups]] entry (Server mode).
type OriginGroup struct {
	// Name is referred to by endpoints (required, unique).
	Name string `koanf:"name" json:"name"`
	// Addresses are the origins' host:port (at least one).
	Addresses []string `koanf:"addresses" json:"addresses"`
	// Balance picks an origin per request.
	Balance Balance `koanf:"balance" json:"balance"`
	// StickyKey is "header:<Name>" or "cookie:<name>" (balance = sticky).
	StickyKey string `koanf:"sticky_key" json:"sticky_key,omitempty"`
	// MaxFails consecutive failures take an origin out; 0 never does.
	MaxFails int `koanf:"max_fails" json:"max_fails"`
	// FailTimeout is how long an origin taken out stays out (without
	// active health checks).
	FailTimeout Millis `koanf:"fail_timeout" json:"fail_timeout"`
	// HealthPath, when set, is probed with GET on every address.
	HealthPath     string `koanf:"health_path" json:"health_path,omitempty"`
	HealthInterval Millis `koanf:"health_interval" json:"health_interval"`
	HealthTimeout  Millis `koanf:"health_timeout" json:"health_timeout"`
	// HealthStatuses are the statuses of a passing check: "200-399",
	// "200,204", "200-299,301".
	HealthStatuses string `koanf:"health_statuses" json:"health_statuses"`
	// TLS speaks HTTPS to the origins.
	TLS           bool   `koanf:"tls" json:"tls"`
	TLSCA         string `koanf:"tls_ca" json:"tls_ca,omitempty"`
	TLSServerName string `koanf:"tls_server_name" json:"tls_server_name,omitempty"`
	TLSCert       string `koanf:"tls_cert" json:"tls_cert,omitempty"`
	TLSKey        string `koanf:"tls_key" json:"tls_key,omitempty"`

	// Implicit is set on the group built from general.http_connect_address.
	Implicit bool `koanf:"-" json:"-"`
}

// Endpoint is one [[endpoints]] entry (Server mode): a name the client
// puts in the ptproxy-endpoint request field, the group it goes to, and
// who may use it.
type Endpoint struct {
	Name        string       `koanf:"name" json:"name"`
	OriginGroup string       `koanf:"origin_group" json:"origin_group"`
	Allow       []AccessRule `koanf:"allow" json:"allow,omitempty"`
}

// DefaultEndpoint is the [default_endpoint] table: the endpoint of requests
// without ptproxy-endpoint.
type DefaultEndpoint struct {
	OriginGroup string       `koanf:"origin_group" json:"origin_group,omitempty"`
	Allow       []AccessRule `koanf:"allow" json:"allow,omitempty"`
}

// AccessRule is one allow rule of an endpoint: a request passes when every
// non-empty list matches (identity, method, path prefix); an endpoint's
// request passes when any of its rules does.
type AccessRule struct {
	Identities   []string `koanf:"identities" json:"identities,omitempty"`
	Methods      []string `koanf:"methods" json:"methods,omitempty"`
	PathPrefixes []string `koanf:"path_prefixes" json:"path_prefixes,omitempty"`
}

// routeSections are the structured sections, in documentation order.
var routeSections = []string{"origin_groups", "endpoints", "default_endpoint", "listeners", "routes", "servers"}

func isRouteSection(name string) bool { return slices.Contains(routeSections, name) }

// routeSectionHint suggests a structured section for a misspelt one.
func routeSectionHint(name string) string {
	for _, s := range routeSections {
		if editDistance(name, s) < 3 {
			if s == "default_endpoint" {
				return " (did you mean [default_endpoint]?)"
			}
			return fmt.Sprintf(" (did you mean [[%s]]?)", s)
		}
	}
	return ""
}

// newOriginGroup returns an entry with its defaults, before decoding.
func newOriginGroup() OriginGroup {
	return OriginGroup{
		Balance:        BalanceRoundRobin,
		MaxFails:       DefaultMaxFails,
		FailTimeout:    DefaultFailTimeout,
		HealthInterval: DefaultHealthInterval,
		HealthTimeout:  DefaultHealthTimeout,
		HealthStatuses: DefaultHealthStatuses,
	}
}

// decodeRoutes takes the structured sections out of raw and decodes them
// into c. Keys found are recorded in set ("origin_groups[0].tls") so that
// validation knows what was given, keys refused in bad.
func (c *Config) decodeRoutes(raw map[string]any, file string, set, bad map[string]bool) []error {
	d := &tableDecoder{file: file, set: set, bad: bad}
	if v, ok := raw["origin_groups"]; ok {
		delete(raw, "origin_groups")
		d.list("origin_groups", v, func(i int, path string, tbl map[string]any) {
			g := newOriginGroup()
			d.table(path, tbl, reflect.ValueOf(&g).Elem())
			c.OriginGroups = append(c.OriginGroups, g)
		})
	}
	decodeList(d, raw, "endpoints", &c.Endpoints)
	c.decodeClientRoutes(d, raw)
	c.decodeServers(d, raw)
	if v, ok := raw["default_endpoint"]; ok {
		delete(raw, "default_endpoint")
		tbl, ok := v.(map[string]any)
		if !ok {
			d.fail("default_endpoint", "must be a table (a [default_endpoint] section), got %s", describe(v))
		} else {
			set["default_endpoint"] = true
			d.table("default_endpoint", tbl, reflect.ValueOf(&c.DefaultEndpoint).Elem())
		}
	}
	return d.errs
}

// tableDecoder decodes parsed TOML/YAML tables into structs by their koanf
// tags, refusing unknown keys and values of the wrong type.
type tableDecoder struct {
	file string
	set  map[string]bool
	bad  map[string]bool // keys refused here: validation does not report them again
	errs []error
}

func (d *tableDecoder) fail(path, format string, args ...any) {
	d.bad[path] = true
	d.errs = append(d.errs, &FieldError{File: d.file, Field: path, Problem: fmt.Sprintf(format, args...)})
}

// list walks an array of tables.
func (d *tableDecoder) list(path string, v any, each func(i int, path string, tbl map[string]any)) {
	items, ok := v.([]any)
	if !ok {
		d.fail(path, "must be an array of tables ([[%s]] entries), got %s", path, describe(v))
		return
	}
	for i, it := range items {
		p := fmt.Sprintf("%s[%d]", path, i)
		tbl, ok := it.(map[string]any)
		if !ok {
			d.fail(p, "must be a table, got %s", describe(it))
			continue
		}
		each(i, p, tbl)
	}
}

// table decodes tbl into the struct dst.
func (d *tableDecoder) table(path string, tbl map[string]any, dst reflect.Value) {
	t := dst.Type()
	for _, name := range sortedKeys(tbl) {
		key := path + "." + name
		idx := -1
		var names []string
		for i := range t.NumField() {
			tag := t.Field(i).Tag.Get("koanf")
			if tag == "" || tag == "-" {
				continue
			}
			names = append(names, tag)
			if tag == name {
				idx = i
			}
		}
		if idx < 0 {
			d.fail(key, "unknown key%s", closest(name, names))
			continue
		}
		fv := dst.Field(idx)
		raw := tbl[name]
		switch {
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.String:
			items, ok := raw.([]any)
			if !ok {
				d.fail(key, "expected array of strings, got %s", describe(raw))
				continue
			}
			out := make([]string, 0, len(items))
			good := true
			for j, it := range items {
				s, ok := it.(string)
				if !ok {
					d.fail(fmt.Sprintf("%s[%d]", key, j), "expected string, got %s", describe(it))
					good = false
					continue
				}
				out = append(out, s)
			}
			if good {
				fv.Set(reflect.ValueOf(out))
				d.set[key] = true
			}
		case fv.Kind() == reflect.Slice && fv.Type().Elem().Kind() == reflect.Struct:
			d.set[key] = true
			d.list(key, raw, func(i int, p string, sub map[string]any) {
				ev := reflect.New(fv.Type().Elem()).Elem()
				d.table(p, sub, ev)
				fv.Set(reflect.Append(fv, ev))
			})
		default:
			f := &field{Type: fv.Type()}
			v, problem := f.coerce(raw)
			if problem != "" {
				d.fail(key, "%s", problem)
				continue
			}
			fv.Set(reflect.ValueOf(v).Convert(fv.Type()))
			d.set[key] = true
		}
	}
}

// closest suggests the name of names closest to a misspelt one.
func closest(name string, names []string) string {
	best, bestDist := "", 3
	for _, n := range names {
		if dd := editDistance(name, n); dd < bestDist {
			best, bestDist = n, dd
		}
	}
	if best == "" {
		return " (allowed: " + strings.Join(names, ", ") + ")"
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// checkRoutes validates the structured sections and general.peer_hostnames
// (Server mode only).
func (k *checker) checkRoutes() {
	k.checkClientRoutes()
	k.checkServers()
	c := k.c
	g := &c.General
	server := g.Mode == ModeServer
	if !server && g.Mode == ModeClient {
		if len(g.PeerHostnames) > 0 {
			k.fail("general.peer_hostnames", "only allowed in Server mode")
		}
		if len(c.OriginGroups) > 0 {
			k.fail("origin_groups", "only allowed in Server mode")
		}
		if len(c.Endpoints) > 0 {
			k.fail("endpoints", "only allowed in Server mode")
		}
		if c.routeGiven("default_endpoint") {
			k.fail("default_endpoint", "only allowed in Server mode")
		}
		return
	}
	for i, h := range g.PeerHostnames {
		if p := checkHostname(h); p != "" {
			k.fail(fmt.Sprintf("general.peer_hostnames[%d]", i), "parsing peer hostname %q: %s", h, p)
		}
	}

	groups := map[string]int{}
	for i := range c.OriginGroups {
		k.checkGroup(i, &c.OriginGroups[i], groups)
	}
	if _, ok := groups[DefaultGroupName]; ok && g.HTTPConnectAddress != "" {
		k.fail("general.http_connect_address", "conflicts with origin_groups[%d] named %q: the default group is either general.http_connect_address or that entry; remove one",
			groups[DefaultGroupName], DefaultGroupName)
	}
	names := make([]string, 0, len(groups)+1)
	for n := range groups {
		names = append(names, n)
	}
	if _, ok := groups[DefaultGroupName]; !ok {
		names = append(names, DefaultGroupName)
	}
	slices.Sort(names)
	identities := c.PeerIdentities()

	refGroup := func(key, name string) {
		if name == "" || slices.Contains(names, name) {
			return
		}
		k.fail(key, "unknown origin group %q: no origin_groups[].name is %q (known: %s)", name, name, strings.Join(names, ", "))
	}
	endpoints := map[string]int{}
	for i := range c.Endpoints {
		e := &c.Endpoints[i]
		p := fmt.Sprintf("endpoints[%d]", i)
		k.uniqueName("endpoints", i, e.Name, "the name the client sends in the ptproxy-endpoint field (the default endpoint is [default_endpoint])", endpoints)
		refGroup(p+".origin_group", e.OriginGroup)
		k.checkRules(p+".allow", e.Allow, identities)
	}
	refGroup("default_endpoint.origin_group", c.DefaultEndpoint.OriginGroup)
	k.checkRules("default_endpoint.allow", c.DefaultEndpoint.Allow, identities)
}

// routeGiven reports whether key of a structured section was in the file
// (or, for a Config built in code, is non-zero).
func (c *Config) routeGiven(key string) bool {
	if c.set != nil {
		return c.set[key]
	}
	return key == "default_endpoint" && (c.DefaultEndpoint.OriginGroup != "" || len(c.DefaultEndpoint.Allow) > 0)
}

func (k *checker) checkGroup(i int, og *OriginGroup, seen map[string]int) {
	p := fmt.Sprintf("origin_groups[%d]", i)
	k.uniqueName("origin_groups", i, og.Name, "the name endpoints refer to", seen)
	if len(og.Addresses) == 0 {
		k.fail(p+".addresses", `required: at least one origin host:port, e.g. ["10.0.0.1:8080"]`)
	}
	addrs := map[string]bool{}
	for j, a := range og.Addresses {
		if pr := checkHostPort(a, false); pr != "" {
			k.fail(fmt.Sprintf("%s.addresses[%d]", p, j), "%s", pr)
		} else if host, _, _ := net.SplitHostPort(a); host == "" {
			k.fail(fmt.Sprintf("%s.addresses[%d]", p, j), "%q has no host", a)
		} else if addrs[a] {
			k.fail(fmt.Sprintf("%s.addresses[%d]", p, j), "duplicate address %q", a)
		}
		addrs[a] = true
	}
	switch og.Balance {
	case BalanceRoundRobin, BalanceRandom, BalanceLeastRequests:
		if og.StickyKey != "" {
			k.fail(p+".sticky_key", `only used with balance = "sticky" (balance is %q)`, og.Balance)
		}
	case BalanceSticky:
		if og.StickyKey == "" {
			k.fail(p+".sticky_key", `required with balance = "sticky": "header:<Name>" or "cookie:<name>"`)
		} else if _, _, pr := ParseStickyKey(og.StickyKey); pr != "" {
			k.fail(p+".sticky_key", "%s", pr)
		}
	default:
		k.fail(p+".balance", `invalid value %q: must be one of "round_robin", "random", "least_requests", "sticky"`, og.Balance)
	}
	if og.MaxFails < 0 {
		k.fail(p+".max_fails", "must not be negative (0 never takes an origin out), got %d", og.MaxFails)
	}
	if og.FailTimeout < 1 {
		k.fail(p+".fail_timeout", "must be at least 1 (milliseconds), got %d", og.FailTimeout)
	}
	if og.HealthPath != "" && !strings.HasPrefix(og.HealthPath, "/") {
		k.fail(p+".health_path", `must start with "/", got %q`, og.HealthPath)
	}
	if og.HealthInterval < 1 {
		k.fail(p+".health_interval", "must be at least 1 (milliseconds), got %d", og.HealthInterval)
	}
	if og.HealthTimeout < 1 {
		k.fail(p+".health_timeout", "must be at least 1 (milliseconds), got %d", og.HealthTimeout)
	}
	if _, pr := ParseStatuses(og.HealthStatuses); pr != "" {
		k.fail(p+".health_statuses", "%s", pr)
	}
	if !og.TLS {
		for _, f := range []struct{ key, v string }{{"tls_ca", og.TLSCA}, {"tls_server_name", og.TLSServerName}, {"tls_cert", og.TLSCert}, {"tls_key", og.TLSKey}} {
			if f.v != "" {
				k.fail(p+"."+f.key, "only used with tls = true")
			}
		}
		return
	}
	if (og.TLSCert == "") != (og.TLSKey == "") {
		k.fail(p+".tls_key", "tls_cert and tls_key go together (the client certificate presented to the origins and its key)")
	}
	if og.TLSServerName != "" {
		if pr := checkHostname(og.TLSServerName); pr != "" {
			k.fail(p+".tls_server_name", "%s", pr)
		}
	}
}

func (k *checker) checkRules(path string, rules []AccessRule, identities []string) {
	for i, r := range rules {
		p := fmt.Sprintf("%s[%d]", path, i)
		for j, id := range r.Identities {
			if !slices.Contains(identities, id) {
				k.fail(fmt.Sprintf("%s.identities[%d]", p, j), "%q never matches: the client identities are general.peer_hostname and general.peer_hostnames (%s)", id, strings.Join(identities, ", "))
			}
		}
		for j, m := range r.Methods {
			if m == "" || strings.ToUpper(m) != m || strings.ContainsAny(m, " \t/:") {
				k.fail(fmt.Sprintf("%s.methods[%d]", p, j), "invalid method %q: an upper-case token such as \"GET\" (methods are case-sensitive)", m)
			}
		}
		for j, pp := range r.PathPrefixes {
			if !strings.HasPrefix(pp, "/") {
				k.fail(fmt.Sprintf("%s.path_prefixes[%d]", p, j), `must start with "/", got %q`, pp)
			}
		}
	}
}

// uniqueName checks the name of entry i of the array of tables list:
// given, of the allowed characters, and not taken by an earlier entry
// (seen maps names to entries).
func (k *checker) uniqueName(list string, i int, name, what string, seen map[string]int) {
	key := fmt.Sprintf("%s[%d].name", list, i)
	switch {
	case name == "":
		k.fail(key, "required: %s", what)
	case !validName(name):
		k.fail(key, "invalid name %q: use letters, digits, '.', '_' and '-'", name)
	default:
		if j, dup := seen[name]; dup {
			k.fail(key, "duplicate name %q (also %s[%d].name)", name, list, j)
		} else {
			seen[name] = i
		}
	}
}

// validName is the charset of group and endpoint names: they travel in an
// HTTP field and appear in logs and metric labels.
func validName(s string) bool {
	for _, r := range s {
		if !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || r == '-' || r == '_' || r == '.') {
			return false
		}
	}
	return s != ""
}

// ParseStickyKey splits "header:<Name>" or "cookie:<name>". It returns the
// kind ("header" or "cookie"), the name, and a problem or "".
func ParseStickyKey(s string) (kind, name, problem string) {
	kind, name, ok := strings.Cut(s, ":")
	if !ok || (kind != "header" && kind != "cookie") || name == "" {
		return "", "", fmt.Sprintf(`must be "header:<Name>" or "cookie:<name>", got %q`, s)
	}
	for _, r := range name {
		if r <= ' ' || r >= 0x7f || strings.ContainsRune("()<>@,;:\\\"/[]?={}", r) {
			return "", "", fmt.Sprintf("invalid %s name %q in %q", kind, name, s)
		}
	}
	if kind == "header" {
		name = http.CanonicalHeaderKey(name)
	}
	return kind, name, ""
}

// StatusRange is an inclusive range of status codes.
type StatusRange struct{ Lo, Hi int }

// ParseStatuses parses health_statuses: comma-separated codes or ranges
// ("200-399", "200,204", "200-299, 301").
func ParseStatuses(s string) ([]StatusRange, string) {
	var out []StatusRange
	for part := range strings.SplitSeq(s, ",") {
		part = strings.TrimSpace(part)
		lo, hi, isRange := strings.Cut(part, "-")
		a, err1 := strconv.Atoi(strings.TrimSpace(lo))
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(strings.TrimSpace(hi))
		}
		if err1 != nil || err2 != nil || a < 100 || b > 599 || a > b {
			return nil, fmt.Sprintf(`must be status codes or ranges between 100 and 599 separated by commas (e.g. "200-399" or "200,204"), got %q`, s)
		}
		out = append(out, StatusRange{a, b})
	}
	return out, ""
}

// PeerIdentities lists the client names the server accepts (Server mode):
// general.peer_hostname, then general.peer_hostnames, without repeats.
func (c *Config) PeerIdentities() []string {
	out := []string{c.General.PeerHostname}
	for _, h := range c.General.PeerHostnames {
		if !slices.Contains(out, h) {
			out = append(out, h)
		}
	}
	return out
}

// EffectiveOriginGroups returns the origin groups of a Server config: the
// [[origin_groups]] entries, then, unless one is named "default", the
// implicit default group made of general.http_connect_address (one
// address, round robin, no health checks; Implicit set).
func (c *Config) EffectiveOriginGroups() []OriginGroup {
	out := slices.Clone(c.OriginGroups)
	for _, g := range out {
		if g.Name == DefaultGroupName {
			return out
		}
	}
	if c.General.HTTPConnectAddress == "" {
		return out
	}
	d := newOriginGroup()
	d.Name, d.Addresses, d.Implicit = DefaultGroupName, []string{c.General.HTTPConnectAddress}, true
	return append(out, d)
}

// EffectiveEndpoints returns the endpoints of a Server config: the default
// endpoint "" first (origin group "default" unless [default_endpoint]
// names another), then the [[endpoints]] entries with their origin group
// filled in ("default" when not given).
func (c *Config) EffectiveEndpoints() []Endpoint {
	def := Endpoint{Name: "", OriginGroup: c.DefaultEndpoint.OriginGroup, Allow: c.DefaultEndpoint.Allow}
	out := append([]Endpoint{def}, c.Endpoints...)
	for i := range out {
		if out[i].OriginGroup == "" {
			out[i].OriginGroup = DefaultGroupName
		}
	}
	return out
}
