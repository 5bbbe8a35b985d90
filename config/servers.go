package config

import (
	"fmt"
	"net"
	"strconv"
)

// Several servers from one client (ptproxy-go extension, docs/routes.md
// "Several servers"): general.peer_hostname, connect_address and quic_port
// are always the first server; [[servers]] entries add more, each with a
// session of its own. general.server_selection says how a request picks
// one. Decoded like the other arrays of tables (routes.go).

// ServerSelection is how the client spreads requests over its servers.
type ServerSelection string

// Selection methods.
const (
	// SelectPriority sends every request to the first server, in list
	// order, whose session is ready.
	SelectPriority ServerSelection = "priority"
	// SelectActiveActive spreads requests round robin over the servers
	// whose session is ready.
	SelectActiveActive ServerSelection = "active_active"
)

// Server is one [[servers]] entry (Client mode): a server the client keeps
// a session to besides general.peer_hostname's.
type Server struct {
	// PeerHostname is the name the server's certificate must carry (and
	// the SNI); required.
	PeerHostname string `koanf:"peer_hostname" json:"peer_hostname"`
	// ConnectAddress is the host or IP dialled; "" is PeerHostname.
	ConnectAddress string `koanf:"connect_address" json:"connect_address,omitempty"`
	// QUICPort is the UDP port dialled; 0 is general.quic_port.
	QUICPort int `koanf:"quic_port" json:"quic_port,omitempty"`

	// Name identifies the server in logs, /status and metric labels:
	// PeerHostname, unless another server has the same one
	// (EffectiveServers fills it in).
	Name string `koanf:"-" json:"-"`
}

// Addr is the host:port dialled.
func (s Server) Addr() string { return net.JoinHostPort(s.ConnectAddress, strconv.Itoa(s.QUICPort)) }

// decodeServers takes [[servers]] out of raw.
func (c *Config) decodeServers(d *tableDecoder, raw map[string]any) {
	decodeList(d, raw, "servers", &c.Servers)
}

// EffectiveServers returns the servers of a Client config in priority
// order: general.peer_hostname's first, then the [[servers]] entries, with
// their defaults filled in (connect_address = peer_hostname, quic_port =
// general.quic_port) and their Name.
func (c *Config) EffectiveServers() []Server {
	g := &c.General
	first := Server{PeerHostname: g.PeerHostname, ConnectAddress: g.ConnectAddress, QUICPort: g.QUICPort}
	out := append([]Server{first}, c.Servers...)
	count := map[string]int{}
	for i := range out {
		s := &out[i]
		if s.ConnectAddress == "" {
			s.ConnectAddress = s.PeerHostname
		}
		if s.QUICPort == 0 {
			s.QUICPort = g.QUICPort
		}
		count[s.PeerHostname]++
	}
	for i := range out {
		s := &out[i]
		s.Name = s.PeerHostname
		if count[s.PeerHostname] > 1 {
			// Two sessions to servers carrying the same name: the address
			// tells them apart in labels and logs.
			s.Name = s.PeerHostname + "@" + s.Addr()
		}
	}
	return out
}

// checkServers validates general.server_selection and [[servers]]: Client
// mode only, names and ports well formed, no server twice (same name,
// address and port as an earlier one or as general.peer_hostname's).
func (k *checker) checkServers() {
	c := k.c
	g := &c.General
	if g.Mode != ModeClient {
		if g.Mode == ModeServer {
			if len(c.Servers) > 0 {
				k.fail("servers", "only allowed in Client mode")
			}
			if c.given("general.server_selection") {
				k.fail("general.server_selection", "only allowed in Client mode")
			}
		}
		return
	}
	switch g.ServerSelection {
	case SelectPriority, SelectActiveActive:
	default:
		k.fail("general.server_selection", `invalid value %q: must be one of "priority", "active_active"`, g.ServerSelection)
	}
	connect := g.ConnectAddress
	if connect == "" {
		connect = g.PeerHostname
	}
	seen := map[string]string{g.PeerHostname + " " + net.JoinHostPort(connect, strconv.Itoa(g.QUICPort)): "general.peer_hostname"}
	for i, s := range c.Servers {
		p := fmt.Sprintf("servers[%d]", i)
		good := true
		if s.PeerHostname == "" {
			k.fail(p+".peer_hostname", "required: the DNS name (or IP address) the server's certificate must carry")
			good = false
		} else if pr := checkHostname(s.PeerHostname); pr != "" {
			k.fail(p+".peer_hostname", "parsing peer hostname %q: %s", s.PeerHostname, pr)
			good = false
		}
		if s.ConnectAddress != "" {
			if pr := checkHostname(s.ConnectAddress); pr != "" {
				k.fail(p+".connect_address", "must be a host name or an IP address without port (the port is quic_port), got %q: %s", s.ConnectAddress, pr)
				good = false
			}
		}
		if s.QUICPort < 0 || s.QUICPort > 65535 || s.QUICPort == 0 && c.set[p+".quic_port"] {
			k.fail(p+".quic_port", "must be a UDP port between 1 and 65535 (omit it for general.quic_port), got %d", s.QUICPort)
			good = false
		}
		if !good {
			continue
		}
		addr, port := s.ConnectAddress, s.QUICPort
		if addr == "" {
			addr = s.PeerHostname
		}
		if port == 0 {
			port = g.QUICPort
		}
		key := s.PeerHostname + " " + net.JoinHostPort(addr, strconv.Itoa(port))
		if prev, dup := seen[key]; dup {
			k.fail(p, "the same server as %s (peer_hostname %q at %s): each server once", prev, s.PeerHostname, net.JoinHostPort(addr, strconv.Itoa(port)))
			continue
		}
		seen[key] = p
	}
}
