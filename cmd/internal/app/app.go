// Package app is ptproxy's composition root: it turns a configuration into
// a running client or server, wires the session, the pipeline and the
// operator log together, and handles the command line and signals.
package app

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/ptproxy/ptproxy/config"
)

// Version is set at build time with -ldflags "-X ...app.Version=v1.2.3".
var Version = "dev"

// Exit statuses, as the original: 0 after a clean shutdown, 1 after a fatal
// error, 130 when a second signal forces the exit.
const (
	ExitOK     = 0
	ExitFatal  = 1
	ExitForced = 130
	exitUsage  = 2
)

const usage = `ptproxy: point-to-point HTTP/1.1 reverse proxy over one persistent HTTP/3 session

Usage:
  ptproxy [-c FILE]        run as configured (mode = "Client" or "Server")
  ptproxy demo             run a client, a server and an origin on loopback
  ptproxy check [-c FILE]  validate the configuration and certificates, print the effective setup
  ptproxy certs [flags]    write a CA and client/server certificates
  ptproxy status [-c FILE | --admin HOST:PORT]
                           print a running instance's state (needs [system] admin_address)
  ptproxy -V | --version
  ptproxy -h | --help

Options:
  -c, --config FILE   configuration file, TOML or YAML (default /etc/ptproxy/config.toml)

Environment variables PTPROXY_<SECTION>__<FIELD> override the file; see docs/config.md.
`

// defaultConfig is the configuration file read without -c.
const defaultConfig = "/etc/ptproxy/config.toml"

// configFlag defines -c and its long form --config on fs.
func configFlag(fs *flag.FlagSet, usage string) *string {
	path := new(string)
	fs.StringVar(path, "c", defaultConfig, usage)
	fs.StringVar(path, "config", defaultConfig, usage)
	return path
}

// parseArgs parses args with fs, a command that takes no positional
// argument and whose help is help. done is set when the command must exit
// with code: 0 after -h (the help goes to stdout), exitUsage after a
// mistake (said on stderr).
func parseArgs(fs *flag.FlagSet, args []string, help string, stdout, stderr io.Writer) (code int, done bool) {
	fs.SetOutput(stderr)
	fs.Usage = func() {} // the help is printed once, below
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(stdout, help)
			return ExitOK, true
		}
		fmt.Fprint(stderr, help) // after flag's own message
		return exitUsage, true
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n\n%s", fs.Name(), fs.Arg(0), help)
		return exitUsage, true
	}
	return 0, false
}

// Main runs the command line and returns the exit status.
func Main(args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 {
		switch args[0] {
		case "demo":
			return runDemo(args[1:], stdout, stderr)
		case "certs":
			return runCerts(args[1:], stdout, stderr)
		case "status":
			return runStatus(args[1:], stdout, stderr)
		case "check":
			return runCheck(args[1:], stdout, stderr)
		}
	}
	fs := flag.NewFlagSet("ptproxy", flag.ContinueOnError)
	var version bool
	path := configFlag(fs, "configuration file")
	fs.BoolVar(&version, "V", false, "print the version")
	fs.BoolVar(&version, "version", false, "print the version")
	if code, done := parseArgs(fs, args, usage, stdout, stderr); done {
		return code
	}
	if version {
		fmt.Fprintf(stdout, "ptproxy %s\n", Version)
		return ExitOK
	}
	cfg, err := config.Load(*path)
	if err != nil {
		fmt.Fprintf(stderr, "failed at reading configuration file (%s):\n%v\n", *path, err)
		return ExitFatal
	}
	log, err := newLogger(stderr, string(cfg.System.LogFormat), string(cfg.System.LogLevel))
	if err != nil {
		fmt.Fprintf(stderr, "failed at parsing configuration: %v\n", err)
		return ExitFatal
	}
	stdlogBridge(log)
	if ignored := cfg.IgnoredEnv(); len(ignored) > 0 {
		log.Debug("environment variables not of the PTPROXY_<SECTION>__<FIELD> shape ignored", "names", ignored)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
	defer signal.Stop(sigs)
	return Serve(cfg, log, sigs, func() (*config.Config, error) { return config.Load(*path) })
}

// Serve runs an instance until the first SIGINT or SIGTERM, drains it, and
// returns the exit status. A second signal during the drain returns
// ExitForced at once. SIGHUP reloads the configuration through load (nil:
// ignored; see Instance.Reload). It reports to systemd through sd_notify (a
// no-op without NOTIFY_SOCKET).
func Serve(cfg *config.Config, slogger *slog.Logger, sigs <-chan os.Signal, load func() (*config.Config, error)) int {
	return serve(cfg, slogger, sigs, sdNotifier{}, load)
}

func serve(cfg *config.Config, slogger *slog.Logger, sigs <-chan os.Signal, n notifier, load func() (*config.Config, error)) int {
	sd := newSystemd(n, slogger)
	defer sd.close() // flushes the last STATUS before the exit
	client := cfg.General.Mode == config.ModeClient
	var servers []string
	if client {
		for _, s := range cfg.EffectiveServers() {
			servers = append(servers, s.Name)
		}
	}
	in, err := Start(cfg, slogger, WithTransitionHook(sd.transitionHook(client, servers)))
	if err != nil {
		slogger.Error(err.Error())
		sd.fatal(err)
		return ExitFatal
	}
	// READY once the instance counts as started (server: listening;
	// client: after the first attempt with wait_for_first_attempt).
	bg, stopBG := context.WithCancel(context.Background())
	defer stopBG()
	var bgDone sync.WaitGroup
	defer bgDone.Wait()
	defer stopBG() // runs before bgDone.Wait
	bgDone.Go(func() {
		select {
		case <-in.Ready():
		case <-bg.Done():
			return
		}
		sd.markReady()
		if d := watchdogInterval(cfg.System.WatchdogFactor, slogger); d > 0 {
			slogger.Info("systemd watchdog enabled", "ping_interval_ms", d.Milliseconds())
			w := &watchdog{sd: sd, log: slogger, interval: d, probers: in.probers()}
			w.run(bg)
		}
	})

	sig := <-sigs
	for sig == syscall.SIGHUP {
		if load == nil {
			slogger.Info("SIGHUP ignored: no configuration file to reload")
		} else {
			sd.reloading()
			sd.reloaded(in.reload(load))
		}
		sig = <-sigs
	}
	sd.markStopping(fmt.Sprintf("stopping: draining %d in-flight requests", in.inFlight()))
	slogger.Info("stopping: draining in-flight requests", "signal", sig.String(), "drain_timeout_ms", cfg.System.DrainTimeout.Duration().Milliseconds())
	ctx := context.Background()
	if d := cfg.System.DrainTimeout.Duration(); d > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, d)
		defer cancel()
	}
	done := make(chan error, 1)
	go func() { done <- in.Drain(ctx) }()
	for {
		select {
		case err := <-done:
			if err != nil {
				slogger.Warn("drain ended early", "error", err)
			}
			slogger.Info("stopped")
			return ExitOK
		case sig := <-sigs:
			if sig == syscall.SIGHUP {
				slogger.Info("SIGHUP ignored: draining")
				continue
			}
			slogger.Warn("second signal: exiting at once", "signal", sig.String())
			sd.setStatus("second signal: exiting at once")
			return ExitForced
		}
	}
}
