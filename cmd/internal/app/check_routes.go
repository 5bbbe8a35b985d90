package app

import (
	"fmt"
	"strings"

	"github.com/ptproxy/ptproxy/config"
)

// routes prints the server's origin groups, endpoints and access rules
// (docs/routes.md), when the configuration has any of them: a file with
// only general.http_connect_address prints what it always did.
func (k *checker) routes() {
	c := k.cfg
	if len(c.OriginGroups) == 0 && len(c.Endpoints) == 0 && len(c.DefaultEndpoint.Allow) == 0 &&
		c.DefaultEndpoint.OriginGroup == "" && len(c.General.PeerHostnames) == 0 {
		return
	}
	k.r.item("identities", "%s (a client certificate must match one; the first it matches is its identity)", strings.Join(c.PeerIdentities(), ", "))
	for _, g := range c.EffectiveOriginGroups() {
		k.r.item("group", "%s", describeGroup(g))
	}
	for _, e := range c.EffectiveEndpoints() {
		name := e.Name
		if name == "" {
			name = "(default)"
		}
		k.r.item("endpoint", "%s -> group %s; %s", name, e.OriginGroup, describeRules(e.Allow))
	}
}

// describeGroup is one group on one line: addresses, balancing, health,
// TLS.
func describeGroup(g config.OriginGroup) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s: %s", g.Name, strings.Join(g.Addresses, ", "))
	if g.Implicit {
		b.WriteString(" (general.http_connect_address)")
		return b.String()
	}
	fmt.Fprintf(&b, "; balance %s", g.Balance)
	if g.Balance == config.BalanceSticky {
		fmt.Fprintf(&b, " by %s", g.StickyKey)
	}
	if g.MaxFails > 0 {
		fmt.Fprintf(&b, "; out after %d consecutive failures", g.MaxFails)
		if g.HealthPath == "" {
			fmt.Fprintf(&b, " for %d ms", g.FailTimeout)
		}
	} else {
		b.WriteString("; never out on failures")
	}
	if g.HealthPath != "" {
		fmt.Fprintf(&b, "; health check GET %s every %d ms (timeout %d ms, passes %s)", g.HealthPath, g.HealthInterval, g.HealthTimeout, g.HealthStatuses)
	}
	if g.TLS {
		ca := g.TLSCA
		if ca == "" {
			ca = "the system roots"
		}
		name := g.TLSServerName
		if name == "" {
			name = "the host of each address"
		}
		fmt.Fprintf(&b, "; TLS verified against %s for %s", ca, name)
		if g.TLSCert != "" {
			fmt.Fprintf(&b, ", client certificate %s", g.TLSCert)
		}
	}
	return b.String()
}

// describeRules is an endpoint's access rules on one line.
func describeRules(rules []config.AccessRule) string {
	if len(rules) == 0 {
		return "allows everything (no access rules)"
	}
	orAny := func(l []string) string {
		if len(l) == 0 {
			return "any"
		}
		return strings.Join(l, ",")
	}
	parts := make([]string, len(rules))
	for i, r := range rules {
		parts[i] = fmt.Sprintf("[identities %s; methods %s; paths %s]", orAny(r.Identities), orAny(r.Methods), orAny(r.PathPrefixes))
	}
	return "allows " + strings.Join(parts, " or ")
}

// originTLSFiles checks that the TLS files of every origin group load as
// they will at startup, naming the group's field.
func (k *checker) originTLSFiles() {
	for i, g := range k.cfg.OriginGroups {
		if !g.TLS {
			continue
		}
		if _, err := originTLS(g); err != nil {
			key := fmt.Sprintf("origin_groups[%d].tls_ca", i)
			if g.TLSCert != "" && strings.Contains(err.Error(), "client certificate") {
				key = fmt.Sprintf("origin_groups[%d].tls_cert", i)
			}
			k.problem(key, "%v", err)
		}
	}
}

// clientRoutes prints the client's extra listeners and its routes, in the
// order they are tried.
func (k *checker) clientRoutes() {
	c := k.cfg
	endpoint := func(e string) string {
		if e == "" {
			return "the default endpoint"
		}
		return "endpoint " + e
	}
	for _, l := range c.Listeners {
		k.r.item("listen", "%s (HTTP/1.1; requests no route matches go to %s)", l.Address, endpoint(l.Endpoint))
	}
	for i, r := range c.Routes {
		var match []string
		if r.Listener != "" {
			match = append(match, "listener "+r.Listener)
		}
		if r.Host != "" {
			match = append(match, "host "+r.Host)
		}
		if r.PathPrefix != "" {
			match = append(match, "path "+r.PathPrefix+"*")
		}
		strip := ""
		if r.StripPrefix {
			strip = fmt.Sprintf(" (without %s)", r.PathPrefix)
		}
		k.r.item("route", "%d: %s -> %s%s", i+1, strings.Join(match, ", "), endpoint(r.Endpoint), strip)
	}
}

// servers prints the client's servers, one line each in list order, when
// [[servers]] adds any: a file with one server prints what it always did.
func (k *checker) servers() {
	c := k.cfg
	if len(c.Servers) == 0 {
		return
	}
	how := "requests go to the first server whose session is ready, in this order"
	if c.General.ServerSelection == config.SelectActiveActive {
		how = "requests go round robin to the servers whose session is ready"
	}
	k.r.item("selection", "%s (%s)", c.General.ServerSelection, how)
	for i, s := range c.EffectiveServers() {
		from := "general.peer_hostname"
		if i > 0 {
			from = fmt.Sprintf("servers[%d]", i-1)
		}
		k.r.item("server", "%d: %s at %s (%s; its certificate must carry %s)", i+1, s.Name, s.Addr(), from, s.PeerHostname)
	}
}
