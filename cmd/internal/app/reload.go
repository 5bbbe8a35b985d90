package app

import (
	"crypto/tls"
	"errors"
	"fmt"
	"reflect"
	"slices"
	"strings"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/pipeline"
)

// reloadable are the keys a reload switches while running. Certificates,
// key and CA are read again on every reload, even when their paths did not
// change (a renewal writes the same files). Every other key needs a
// restart: a reload that changes one keeps the running value and says so.
var reloadable = []string{
	"general.http_connect_address",
	"tls.ca", "tls.cert", "tls.key", "tls.listener_cert", "tls.listener_key",
	"system.access_log",
	"system.add_forwarded",
	"system.upstream_timeout",
	"system.header_read_timeout",
	"system.default_host",
	"system.origin_idle_timeout",
}

// serverReloadable are keys a server also switches while running: the
// accepted client names (a client's own peer_hostname names its server,
// whose session was made at start).
var serverReloadable = []string{"general.peer_hostname", "general.peer_hostnames"}

// ReloadResult says what a reload did.
type ReloadResult struct {
	Applied []string // keys switched for new connections and requests
	Kept    []string // keys that changed in the file but need a restart
}

// errReloadRefused marks a reload that changed nothing.
var errReloadRefused = errors.New("reload refused; the running configuration stays")

// Reload switches the running instance to cfg where it can without a
// restart: new TLS handshakes use the certificates and CA read now (the
// sessions and connections up keep theirs; a server closes those of
// clients its new CA or accepted names refuse), new caller connections (client)
// and new request streams (server) use the new pipeline options, and a new
// origin address gets a new connection pool while exchanges on the old one
// finish. A configuration whose certificates cannot be loaded, or that
// switches the mode, is refused whole, and nothing changes.
func (in *Instance) Reload(cfg *config.Config) (ReloadResult, error) {
	in.reloadMu.Lock()
	defer in.reloadMu.Unlock()
	if in.drainCtx.Err() != nil {
		return ReloadResult{}, fmt.Errorf("%w: the instance is stopping", errReloadRefused)
	}
	old := in.live
	if cfg.General.Mode != old.General.Mode {
		return ReloadResult{}, fmt.Errorf("%w: general.mode changed from %s to %s, which needs a restart", errReloadRefused, old.General.Mode, cfg.General.Mode)
	}
	var res ReloadResult
	next := *cfg
	for _, key := range config.Changed(old, cfg) {
		if slices.Contains(reloadable, key) || in.server != nil && slices.Contains(serverReloadable, key) {
			res.Applied = append(res.Applied, key)
		} else {
			res.Kept = append(res.Kept, key)
			config.CopyKey(&next, old, key)
		}
	}
	// The client's arrays: routes switch, listeners are sockets opened at
	// start.
	if !reflect.DeepEqual(old.Listeners, next.Listeners) {
		res.Kept = append(res.Kept, "listeners")
		next.Listeners = old.Listeners
	}
	if !reflect.DeepEqual(old.Servers, next.Servers) {
		// One session (and socket) per server, made at start.
		res.Kept = append(res.Kept, "servers")
		next.Servers = old.Servers
	}
	if !reflect.DeepEqual(old.Routes, next.Routes) {
		res.Applied = append(res.Applied, "routes")
	}
	if (old.TLS.ListenerCert == "") != (next.TLS.ListenerCert == "") {
		// Turning TLS on the listener on or off changes the listener.
		for _, key := range []string{"tls.listener_cert", "tls.listener_key"} {
			if i := slices.Index(res.Applied, key); i >= 0 {
				res.Applied = slices.Delete(res.Applied, i, i+1)
				res.Kept = append(res.Kept, key)
			}
			config.CopyKey(&next, old, key)
		}
	}
	tlsConf, err := tlsConfig(&next)
	if err != nil {
		return ReloadResult{}, fmt.Errorf("%w: %w", errReloadRefused, err)
	}
	if in.keyLog != nil {
		tlsConf.KeyLogWriter = in.keyLog
	}
	var sessionsTLS []*tls.Config
	if in.client != nil {
		if sessionsTLS, err = in.sessionsTLS(&next); err != nil {
			return ReloadResult{}, fmt.Errorf("%w: %w", errReloadRefused, err)
		}
	}
	if in.client != nil && next.TLS.ListenerCert != "" {
		if err := in.loadListenerCert(&next); err != nil {
			return ReloadResult{}, fmt.Errorf("%w: %w", errReloadRefused, err)
		}
	}
	if in.client != nil {
		for i, s := range in.sessions {
			s.client.SetTLS(sessionsTLS[i])
		}
		for _, l := range in.lis {
			l.router.Set(listenerRoutes(&next, l.name), l.endpoint)
			l.opts.Store(in.clientOptions(&next, l))
		}
	}
	if in.server != nil {
		routesChanged := old.General.HTTPConnectAddress != next.General.HTTPConnectAddress ||
			old.System.OriginIdleTimeout != next.System.OriginIdleTimeout ||
			!reflect.DeepEqual(old.OriginGroups, next.OriginGroups) ||
			!reflect.DeepEqual(old.Endpoints, next.Endpoints) ||
			!reflect.DeepEqual(old.DefaultEndpoint, next.DefaultEndpoint)
		in.routesMu.RLock()
		endpoints := in.endpoints
		in.routesMu.RUnlock()
		var groups []*pipeline.OriginGroup
		if routesChanged {
			groups, endpoints, err = in.buildRoutes(&next)
			if err != nil {
				return ReloadResult{}, fmt.Errorf("%w: %w", errReloadRefused, err)
			}
			for _, sec := range []string{"origin_groups", "endpoints", "default_endpoint"} {
				if !reflect.DeepEqual(routingSection(old, sec), routingSection(&next, sec)) {
					res.Applied = append(res.Applied, sec)
				}
			}
		}
		in.server.SetTLS(tlsConf)
		in.server.SetPeerIdentities(next.PeerIdentities())
		// Connections of clients the new CA or names no longer accept
		// close now (each with a WARN line); the others stay.
		in.server.RecheckPeers()
		in.handler.SetOptions(in.serverOptions(&next, endpoints))
		if routesChanged {
			// The old groups' idle connections close now; those in use
			// close when their exchange ends (a closed pool takes nothing
			// back).
			in.useRoutes(groups, endpoints)
		}
	}
	in.live = &next
	return res, nil
}

// reload loads path and applies it, logging what happened: the keys
// switched, the keys that need a restart, or why the reload was refused.
func (in *Instance) reload(load func() (*config.Config, error)) error {
	cfg, err := load()
	if err != nil {
		err = fmt.Errorf("%w: %w", errReloadRefused, err)
		in.log.Error("configuration reload refused", "error", err.Error())
		return err
	}
	res, err := in.Reload(cfg)
	if err != nil {
		in.log.Error("configuration reload refused", "error", err.Error())
		return err
	}
	if len(res.Kept) > 0 {
		in.log.Warn("configuration reload: these changes need a restart and are not applied", "keys", strings.Join(res.Kept, ","))
	}
	in.log.Info("configuration reloaded", "applied", strings.Join(res.Applied, ","), "certificates", "re-read")
	return nil
}

// routingSection is the routing section sec of c ([[origin_groups]],
// [[endpoints]], [default_endpoint]), which the flat key schema does not
// cover.
func routingSection(c *config.Config, sec string) any {
	switch sec {
	case "origin_groups":
		return c.OriginGroups
	case "endpoints":
		return c.Endpoints
	}
	return c.DefaultEndpoint
}
