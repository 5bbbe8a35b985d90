package pairs

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"syscall"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/procstat"
)

// Names of the pairs, in report order.
const (
	Direct  = "direct"
	Ptproxy = "ptproxy"
	Nginx   = "nginx"
	Caddy   = "caddy"
	HAProxy = "haproxy"
	// PtproxyAlt is ptproxy with Env.PtproxyAltEnv added (by default
	// transport.fec = "auto"), so one run alternates two settings of
	// ptproxy (say FEC off and on) within every repetition, and machine
	// noise hits both alike.
	PtproxyAlt = "ptproxy-alt"
)

// All is every pair the harness knows.
var All = []string{Direct, Ptproxy, Nginx, Caddy, HAProxy, PtproxyAlt}

// Default is what a run measures unless --pairs says otherwise.
var Default = []string{Direct, Ptproxy, Nginx, Caddy, HAProxy}

// IsPtproxy reports whether the pair runs ptproxy (either setting).
func IsPtproxy(name string) bool { return name == Ptproxy || name == PtproxyAlt }

// DefaultAltEnv is what the PtproxyAlt pair adds to both processes.
var DefaultAltEnv = []string{"PTPROXY_TRANSPORT__FEC=auto"}

// MaxConnections is ptproxy's system.max_connections in the benchmark
// (its default, 1024, would refuse part of the idle scenario's 1,000 idle
// callers plus 100 in flight). The other pairs' limits already fit: nginx's
// worker_connections 4096 per worker (callers and upstream connections
// together; not raised further because nginx allocates and touches its
// connection array up front, which would add to its RSS) with
// worker_rlimit_nofile 8192, HAProxy's maxconn 8192, Caddy none.
const MaxConnections = 4096

// Certificate identities written by `ptproxy certs`.
const (
	ClientName = "client.bench"
	ServerName = "server.bench"
)

// Bins are the programs used.
type Bins struct {
	Ptproxy, Nginx, Caddy, HAProxy string
	// PtproxyAlt is the ptproxy of the PtproxyAlt pair; "" is Ptproxy.
	PtproxyAlt string
}

// Env is where pairs run.
type Env struct {
	Work       string // scratch folder (configs, logs)
	Certs      string // output of `ptproxy certs`
	Bins       Bins
	ClientNS   string // namespace of the callers and client sides ("" = current)
	ServerNS   string // namespace of the server sides and origin
	ServerIP   string // address server sides bind and client sides dial
	OriginPort int    // the origin listens on ServerIP (or 127.0.0.1) at this port
	PortBase   int    // pair i uses PortBase+100*i+80 (client side) and +43 (server side)
	// ConnectInterval is ptproxy's system.connect_interval.
	ConnectInterval time.Duration
	// PtproxyEnv is added to both ptproxy processes' environment (for
	// experiments such as GOMAXPROCS=1 or PTPROXY_* overrides).
	PtproxyEnv []string
	// PtproxyAltEnv is added after PtproxyEnv for the PtproxyAlt pair.
	PtproxyAltEnv []string
}

// Pair is one system under test.
type Pair struct {
	Name   string
	Addr   string // where the load generator sends HTTP/1.1 (in ClientNS)
	Server *Proc  // nil for direct
	Client *Proc  // nil for direct
	// RestartSignal stops the server side for the restart measurement.
	RestartSignal syscall.Signal
	StopSignal    syscall.Signal
}

func (e *Env) cert(name string) string { return filepath.Join(e.Certs, name) }

// Build writes the configuration of pair name and returns it, not started.
func Build(e *Env, name string) (*Pair, error) {
	idx := map[string]int{Direct: 0, Ptproxy: 1, Nginx: 2, Caddy: 3, HAProxy: 4, PtproxyAlt: 5}[name]
	front := e.PortBase + 100*idx + 80
	back := e.PortBase + 100*idx + 43
	dir := filepath.Join(e.Work, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	p := &Pair{Name: name, Addr: fmt.Sprintf("127.0.0.1:%d", front), RestartSignal: syscall.SIGINT, StopSignal: syscall.SIGTERM}
	origin := fmt.Sprintf("127.0.0.1:%d", e.OriginPort)
	backAddr := net.JoinHostPort(e.ServerIP, strconv.Itoa(back))
	var err error
	switch name {
	case Direct:
		p.Addr = net.JoinHostPort(e.ServerIP, strconv.Itoa(e.OriginPort))
		return p, nil
	case Ptproxy:
		err = buildPtproxy(e, p, dir, front, back, origin)
	case PtproxyAlt:
		if err = buildPtproxy(e, p, dir, front, back, origin); err == nil {
			env := append(slices.Clone(e.PtproxyEnv), e.PtproxyAltEnv...)
			p.Server.Env, p.Client.Env = env, env
			if e.Bins.PtproxyAlt != "" {
				p.Server.Argv[0], p.Client.Argv[0] = e.Bins.PtproxyAlt, e.Bins.PtproxyAlt
			}
		}
	case Nginx:
		err = buildNginx(e, p, dir, front, backAddr, origin)
	case Caddy:
		err = buildCaddy(e, p, dir, front, backAddr, origin)
	case HAProxy:
		err = buildHAProxy(e, p, dir, front, backAddr, origin)
	default:
		return nil, fmt.Errorf("unknown pair %q", name)
	}
	if err != nil {
		return nil, err
	}
	p.Server.NS, p.Client.NS = e.ServerNS, e.ClientNS
	p.Server.Log = filepath.Join(dir, "server.log")
	p.Client.Log = filepath.Join(dir, "client.log")
	return p, nil
}

func buildPtproxy(e *Env, p *Pair, dir string, front, quicPort int, origin string) error {
	bind := e.ServerIP
	clientBind := "127.0.0.1"
	if e.ServerNS != "" {
		clientBind = "0.0.0.0"
	}
	ci := e.ConnectInterval
	if ci <= 0 {
		ci = time.Second
	}
	server := fmt.Sprintf(`[general]
mode = "Server"
peer_hostname = %q
quic_port = %d
bind_address = %q
http_connect_address = %q

[tls]
ca = %q
cert = %q
key = %q

[system]
log_level = "warn"
drain_timeout = 2000
`, ClientName, quicPort, bind, origin, e.cert("ca.pem"), e.cert(ServerName+".pem"), e.cert(ServerName+"-key.pem"))
	client := fmt.Sprintf(`[general]
mode = "Client"
peer_hostname = %q
connect_address = %q
quic_port = %d
bind_address = %q
http_bind_address = "127.0.0.1:%d"

[tls]
ca = %q
cert = %q
key = %q

[system]
log_level = "warn"
connect_interval = %d
drain_timeout = 2000
max_connections = %d
`, ServerName, e.ServerIP, quicPort, clientBind, front, e.cert("ca.pem"), e.cert(ClientName+"-client.pem"), e.cert(ClientName+"-client-key.pem"), ci.Milliseconds(), MaxConnections)
	sc, err := writeFile(dir, "server.toml", server)
	if err != nil {
		return err
	}
	cc, err := writeFile(dir, "client.toml", client)
	if err != nil {
		return err
	}
	p.Server = &Proc{Name: "ptproxy server", Env: e.PtproxyEnv, Argv: []string{e.Bins.Ptproxy, "-c", sc}}
	p.Client = &Proc{Name: "ptproxy client", Env: e.PtproxyEnv, Argv: []string{e.Bins.Ptproxy, "-c", cc}}
	return nil
}

// nginx: one worker per side (two in all, one per core), upstream
// keep-alive on both hops, streaming (no buffering) like the other pairs.
func buildNginx(e *Env, p *Pair, dir string, front int, backAddr, origin string) error {
	common := func(side string) string {
		tmp := filepath.Join(dir, side+"-tmp")
		os.MkdirAll(tmp, 0o755)
		return fmt.Sprintf(`user root;
worker_processes 1;
daemon off;
master_process on;
pid %[1]s/%[2]s.pid;
error_log %[1]s/%[2]s-error.log warn;
worker_rlimit_nofile 8192;
events { worker_connections 4096; }
http {
    access_log off;
    client_body_temp_path %[3]s/body;
    proxy_temp_path %[3]s/proxy;
    fastcgi_temp_path %[3]s/fastcgi;
    uwsgi_temp_path %[3]s/uwsgi;
    scgi_temp_path %[3]s/scgi;
    keepalive_requests 1000000;
    keepalive_timeout 300s;
    proxy_http_version 1.1;
    proxy_set_header Connection "";
    proxy_buffering off;
    proxy_request_buffering off;
    client_max_body_size 0;
`, dir, side, tmp)
	}
	frontConf := common("front") + fmt.Sprintf(`    upstream back {
        server %s;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen 127.0.0.1:%d;
        location / {
            proxy_pass https://back;
            proxy_ssl_certificate %s;
            proxy_ssl_certificate_key %s;
            proxy_ssl_trusted_certificate %s;
            proxy_ssl_verify on;
            proxy_ssl_name %s;
            proxy_ssl_server_name on;
            proxy_ssl_protocols TLSv1.3;
            proxy_ssl_session_reuse on;
        }
    }
}
`, backAddr, front, e.cert(ClientName+"-client.pem"), e.cert(ClientName+"-client-key.pem"), e.cert("ca.pem"), ServerName)
	backConf := common("back") + fmt.Sprintf(`    upstream origin {
        server %s;
        keepalive 64;
        keepalive_requests 1000000;
        keepalive_timeout 300s;
    }
    server {
        listen %s ssl;
        ssl_certificate %s;
        ssl_certificate_key %s;
        ssl_client_certificate %s;
        ssl_verify_client on;
        ssl_protocols TLSv1.3;
        location / {
            proxy_pass http://origin;
        }
    }
}
`, origin, backAddr, e.cert(ServerName+".pem"), e.cert(ServerName+"-key.pem"), e.cert("ca.pem"))
	fc, err := writeFile(dir, "front.conf", frontConf)
	if err != nil {
		return err
	}
	bc, err := writeFile(dir, "back.conf", backConf)
	if err != nil {
		return err
	}
	p.Server = &Proc{Name: "nginx back", Argv: []string{e.Bins.Nginx, "-p", dir, "-e", filepath.Join(dir, "back-error.log"), "-c", bc}}
	p.Client = &Proc{Name: "nginx front", Argv: []string{e.Bins.Nginx, "-p", dir, "-e", filepath.Join(dir, "front-error.log"), "-c", fc}}
	p.StopSignal = syscall.SIGTERM
	return nil
}

// Caddy: the front speaks HTTP/3 with a client certificate to the back,
// which requires and verifies it.
func buildCaddy(e *Env, p *Pair, dir string, front int, backAddr, origin string) error {
	host, port, _ := net.SplitHostPort(backAddr)
	// The back must not insist that Host equal the SNI (Caddy's default
	// with client authentication): every pair forwards the caller's Host.
	global := func(servers string) string {
		return fmt.Sprintf(`{
	admin off
	persist_config off
	auto_https off
	storage file_system %s
	servers {
		%s
	}
}
`, filepath.Join(dir, "storage"), servers)
	}
	back := global("protocols h3\n\t\tstrict_sni_host insecure_off") + fmt.Sprintf(`https://:%s {
	bind %s
	tls %s %s {
		protocols tls1.3
		client_auth {
			mode require_and_verify
			trust_pool file %s
		}
	}
	reverse_proxy %s {
		transport http {
			keepalive 5m
			keepalive_idle_conns 64
		}
	}
}
`, port, host, e.cert(ServerName+".pem"), e.cert(ServerName+"-key.pem"), e.cert("ca.pem"), origin)
	frontConf := global("protocols h1") + fmt.Sprintf(`http://:%d {
	bind 127.0.0.1
	reverse_proxy https://%s {
		transport http {
			versions 3
			tls_client_auth %s %s
			tls_trust_pool file %s
			tls_server_name %s
		}
	}
}
`, front, backAddr, e.cert(ClientName+"-client.pem"), e.cert(ClientName+"-client-key.pem"), e.cert("ca.pem"), ServerName)
	bc, err := writeFile(dir, "back.Caddyfile", back)
	if err != nil {
		return err
	}
	fc, err := writeFile(dir, "front.Caddyfile", frontConf)
	if err != nil {
		return err
	}
	env := []string{"HOME=" + dir, "XDG_DATA_HOME=" + filepath.Join(dir, "data"), "XDG_CONFIG_HOME=" + filepath.Join(dir, "config")}
	p.Server = &Proc{Name: "caddy back", Env: env, Argv: []string{e.Bins.Caddy, "run", "--adapter", "caddyfile", "--config", bc}}
	p.Client = &Proc{Name: "caddy front", Env: env, Argv: []string{e.Bins.Caddy, "run", "--adapter", "caddyfile", "--config", fc}}
	return nil
}

// HAProxy: one thread per side, TLS 1.3 with a client certificate between
// them, connection reuse on both hops.
func buildHAProxy(e *Env, p *Pair, dir string, front int, backAddr, origin string) error {
	combine := func(name, cert, key string) (string, error) {
		c, err := os.ReadFile(e.cert(cert))
		if err != nil {
			return "", err
		}
		k, err := os.ReadFile(e.cert(key))
		if err != nil {
			return "", err
		}
		return writeFile(dir, name, string(c)+string(k))
	}
	cc, err := combine("client-combined.pem", ClientName+"-client.pem", ClientName+"-client-key.pem")
	if err != nil {
		return err
	}
	sc, err := combine("server-combined.pem", ServerName+".pem", ServerName+"-key.pem")
	if err != nil {
		return err
	}
	global := `global
    nbthread 1
    maxconn 8192
defaults
    mode http
    timeout connect 5s
    timeout client 300s
    timeout server 300s
    timeout http-keep-alive 300s
    option http-keep-alive
`
	frontConf := global + fmt.Sprintf(`frontend fe
    bind 127.0.0.1:%d
    default_backend be
backend be
    http-reuse always
    server back %s ssl crt %s ca-file %s verify required verifyhost %s sni str(%s) ssl-min-ver TLSv1.3 alpn http/1.1
`, front, backAddr, cc, e.cert("ca.pem"), ServerName, ServerName)
	backConf := global + fmt.Sprintf(`frontend fe
    bind %s ssl crt %s ca-file %s verify required ssl-min-ver TLSv1.3 alpn http/1.1
    default_backend origin
backend origin
    http-reuse always
    server o %s
`, backAddr, sc, e.cert("ca.pem"), origin)
	fc, err := writeFile(dir, "front.cfg", frontConf)
	if err != nil {
		return err
	}
	bc, err := writeFile(dir, "back.cfg", backConf)
	if err != nil {
		return err
	}
	p.Server = &Proc{Name: "haproxy back", Argv: []string{e.Bins.HAProxy, "-db", "-f", bc}}
	p.Client = &Proc{Name: "haproxy front", Argv: []string{e.Bins.HAProxy, "-db", "-f", fc}}
	return nil
}

// Procs are the pair's processes (none for direct).
func (p *Pair) Procs() []*Proc {
	if p.Server == nil {
		return nil
	}
	return []*Proc{p.Client, p.Server}
}

// Start starts the server side and, right after it, the client side.
func (p *Pair) Start() error {
	for _, pr := range []*Proc{p.Server, p.Client} {
		if pr == nil {
			continue
		}
		if err := pr.Start(); err != nil {
			p.Stop()
			return err
		}
	}
	return nil
}

// Stop stops both sides.
func (p *Pair) Stop() {
	for _, pr := range p.Procs() {
		pr.Stop(p.StopSignal, 5*time.Second)
	}
}

// Pids are every live process of the pair (workers included).
func (p *Pair) Pids() []int {
	var out []int
	for _, pr := range p.Procs() {
		if pr.Running() {
			out = append(out, procstat.Tree(pr.Pid())...)
		}
	}
	return out
}

// CheckRunning returns an error naming a side that exited, with its log.
func (p *Pair) CheckRunning() error {
	for _, pr := range p.Procs() {
		if !pr.Running() {
			return fmt.Errorf("%s exited: %v\n%s", pr.Name, pr.err, pr.Tail(2000))
		}
	}
	return nil
}

// WaitListening waits until a TCP connection to the client side's
// listener succeeds (no request is sent), bounded by timeout.
func (p *Pair) WaitListening(ctx context.Context, dial func(ctx context.Context) (net.Conn, error), timeout time.Duration) error {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	for {
		if err := p.CheckRunning(); err != nil {
			return err
		}
		c, err := dial(ctx)
		if err == nil {
			c.Close()
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: client side not listening after %v: %v", p.Name, timeout, err)
		case <-time.After(2 * time.Millisecond):
		}
	}
}
