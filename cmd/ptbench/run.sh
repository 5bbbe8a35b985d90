#!/bin/sh
# ptproxy benchmark harness: the one command behind docs/benchmarks/.
#
#   sudo cmd/ptbench/run.sh            # everything: loopback, WAN 50 ms at 0% and 1% loss, profile
#   sudo cmd/ptbench/run.sh loopback   # one part: loopback | wan | profile
#
# Needs root (apt-get, network namespaces, TUN, perf) and the Go toolchain.
# Installs what is missing: nginx and haproxy (apt-get), caddy v2.11.9
# (go install, into the user cache folder), perf (apt-get linux-perf).
# Writes docs/benchmarks/results-*.md/json, plots/ (with plots/loss-1m.svg
# from every results-wan-*.json) and profile/.
set -eu
cd "$(dirname "$0")/../.."
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
go build -o "$tmp/ptbench" ./cmd/ptbench
what=${1:-all}
case $what in
all|loopback) "$tmp/ptbench" loopback --reps 3 ;;
esac
case $what in
all|wan)
	"$tmp/ptbench" wan --rtt 50ms --loss 0%,1% --reps 3
	"$tmp/ptbench" plot-loss
	;;
esac
case $what in
all|profile)
	"$tmp/ptbench" profile --concurrency 64 --duration 10s
	"$tmp/ptbench" profile --concurrency 1 --duration 10s
	"$tmp/ptbench" profile --concurrency 8 --path /1m --duration 10s
	;;
esac
