package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"syscall"
	"time"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/session/pki"
)

// Demo names: the certificates are issued for these and nothing resolves
// them; the client dials 127.0.0.1 (connect_address) and verifies the name.
const (
	demoClientName = "client.ptproxy.test"
	demoServerName = "server.ptproxy.test"
)

// Demo is a running local demonstration: origin, server and client on
// loopback with throwaway certificates.
type Demo struct {
	Client, Server *Instance
	origin         *http.Server
	originLn       net.Listener
	dir            string
}

// StartDemo starts an origin, a server-mode and a client-mode instance on
// loopback. listen is the client's HTTP/1.1 address.
func StartDemo(listen string, log *slog.Logger) (*Demo, error) {
	d := &Demo{}
	ok := false
	defer func() {
		if !ok {
			d.Close()
		}
	}()
	dir, err := os.MkdirTemp("", "ptproxy-demo-")
	if err != nil {
		return nil, err
	}
	d.dir = dir
	ca, err := pki.NewCA("ptproxy demo CA (throwaway)")
	if err != nil {
		return nil, err
	}
	cl, err := ca.Client(demoClientName)
	if err != nil {
		return nil, err
	}
	sv, err := ca.Server(demoServerName)
	if err != nil {
		return nil, err
	}
	if err := pki.WriteFiles(dir, ca, map[string]*pki.Leaf{"client": cl, "server": sv}); err != nil {
		return nil, err
	}

	d.originLn, err = net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	d.origin = &http.Server{Handler: demoOrigin(), ReadHeaderTimeout: 10 * time.Second}
	go d.origin.Serve(d.originLn)

	scfg := config.Defaults()
	scfg.General.Mode = config.ModeServer
	scfg.General.PeerHostname = demoClientName
	scfg.General.BindAddress = "127.0.0.1"
	scfg.General.QUICPort = 0 // any free port; the client is told which
	scfg.General.HTTPConnectAddress = d.originLn.Addr().String()
	scfg.General.HTTPBindAddress = ""
	scfg.TLS = config.TLS{CA: dir + "/ca.pem", Cert: dir + "/server.pem", Key: dir + "/server-key.pem"}
	scfg.System.AddForwarded = true
	if d.Server, err = Start(&scfg, log.With("side", "server")); err != nil {
		return nil, err
	}

	ccfg := config.Defaults()
	ccfg.General.Mode = config.ModeClient
	ccfg.General.PeerHostname = demoServerName
	ccfg.General.ConnectAddress = "127.0.0.1"
	ccfg.General.BindAddress = "127.0.0.1"
	ccfg.General.QUICPort = d.Server.QUICAddr().(*net.UDPAddr).Port
	ccfg.General.HTTPBindAddress = listen
	ccfg.TLS = config.TLS{CA: dir + "/ca.pem", Cert: dir + "/client.pem", Key: dir + "/client-key.pem"}
	ccfg.System.AddForwarded = true
	ccfg.System.AdminAddress = "127.0.0.1:0"
	if d.Client, err = Start(&ccfg, log.With("side", "client")); err != nil {
		return nil, err
	}
	<-d.Client.Ready()
	ok = true
	return d, nil
}

// Drain stops the client, then the server, then the origin.
func (d *Demo) Drain(ctx context.Context) error {
	var errs []error
	if d.Client != nil {
		errs = append(errs, d.Client.Drain(ctx))
	}
	if d.Server != nil {
		errs = append(errs, d.Server.Drain(ctx))
	}
	d.Close()
	return errors.Join(errs...)
}

// Close stops everything at once and removes the throwaway certificates.
func (d *Demo) Close() {
	if d.Client != nil {
		d.Client.Close()
	}
	if d.Server != nil {
		d.Server.Close()
	}
	if d.origin != nil {
		d.origin.Close()
	}
	if d.dir != "" {
		os.RemoveAll(d.dir)
	}
}

func runDemo(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ptproxy demo", flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", "127.0.0.1:20080", "HTTP/1.1 address of the demo client")
	format := fs.String("log-format", "auto", "auto, text or json")
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	log, err := newLogger(stderr, *format, "info")
	if err != nil {
		fmt.Fprintln(stderr, err)
		return exitUsage
	}
	stdlogBridge(log)
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	defer signal.Stop(sigs)
	d, err := StartDemo(*listen, log)
	if err != nil {
		fmt.Fprintf(stderr, "failed at starting the demo: %v\n(is %s already in use? try: ptproxy demo --listen 127.0.0.1:0)\n", err, *listen)
		return ExitFatal
	}
	addr := d.Client.HTTPAddr().String()
	fmt.Fprintf(stdout, `
ptproxy demo: caller -> client %s ==HTTP/3 (mutual TLS, throwaway certificates)==> server %s -> origin %s

Try:
  curl -i http://%s/
  curl -i --data-binary 'hello over QUIC' http://%s/echo
  curl -i http://%s/chunked?n=5
  ptproxy status --admin %s      (or: curl http://%[7]s/metrics)
Press Ctrl-C to stop (twice to stop at once).
`, addr, d.Server.QUICAddr(), d.originLn.Addr(), addr, addr, addr, d.Client.AdminAddr())
	<-sigs
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- d.Drain(ctx) }()
	select {
	case <-done:
		return ExitOK
	case <-sigs:
		return ExitForced
	}
}
