// Command ptbench is ptproxy's benchmark harness: the tunnel against a
// direct connection and against nginx, Caddy (HTTP/3) and HAProxy pairs,
// on loopback and on an emulated WAN link. See docs/benchmarks/README.md.
//
//	ptbench loopback [flags]            loopback comparison (throughput, latency, CPU, RSS)
//	ptbench wan --rtt 50ms --loss 0%,1% emulated WAN comparison (needs root: namespaces, TUN)
//	ptbench profile [flags]             perf profile of the ptproxy pair under load
//	ptbench plot-loss [files]           1 MiB GET time against loss rate, from WAN results
//	ptbench origin --listen ADDR        the benchmark origin alone
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/origin"
)

func usage() {
	fmt.Fprint(os.Stderr, `usage: ptbench <command> [flags]

commands:
  loopback   every pair on loopback: latency at concurrency 1, throughput at 64,
             1 MiB down/up and chunked at 8; CPU per request and peak RSS;
             RSS of each side with 1,000 idle callers and 100 in flight
  wan        every pair across an emulated link (delay, jitter, loss, rate)
             between two network namespaces, random or bursty loss: latency,
             first request, 1 MiB GET and POST (time, bytes on the link),
             recovery after a server restart
  plot-loss  1 MiB GET time against loss rate from results-wan-*.json (SVG)
  profile    perf record of the ptproxy pair under the 64-concurrency load
  origin     run the benchmark origin (used by the harness)

Run 'ptbench <command> -h' for the flags. Results go to docs/benchmarks/.
`)
}

func main() {
	if len(os.Args) < 2 {
		usage()
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	if lim, err := raiseFileLimit(fileLimit); lim < minFileLimit {
		fmt.Fprintf(os.Stderr, "ptbench: open-file limit %d, too low for the idle scenario: %v\n", lim, err)
	}
	args := os.Args[2:]
	switch os.Args[1] {
	case "loopback":
		err = runLoopback(ctx, args)
	case "wan":
		err = runWAN(ctx, args)
	case "profile":
		err = runProfile(ctx, args)
	case "origin":
		err = runOrigin(ctx, args)
	case "plot-loss":
		err = runPlotLoss(args, os.Stdout)
	case "-h", "--help", "help":
		usage()
		return
	default:
		usage()
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "ptbench:", err)
		os.Exit(1)
	}
}

func runOrigin(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("ptbench origin", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:21080", "address to listen on")
	fs.Parse(args)
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return err
	}
	return origin.Serve(ctx, ln)
}
