package app

import (
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/ptproxy/ptproxy/config"
)

// runStatus prints an instance's /status for a human.
func runStatus(args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("ptproxy status", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var admin string
	path := configFlag(fs, "configuration file whose [system] admin_address to ask")
	fs.StringVar(&admin, "admin", "", "admin address (host:port) to ask instead of reading the configuration")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: ptproxy status [-c FILE | --admin HOST:PORT]")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return exitUsage
	}
	if admin == "" {
		cfg, err := config.Load(*path)
		if err != nil {
			fmt.Fprintf(stderr, "failed at reading configuration file (%s):\n%v\n", *path, err)
			return ExitFatal
		}
		if cfg.System.AdminAddress == "" {
			fmt.Fprintf(stderr, "%s sets no [system] admin_address: the instance serves no status\n", *path)
			return ExitFatal
		}
		admin = cfg.System.AdminAddress
	}
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get("http://" + admin + "/status")
	if err != nil {
		fmt.Fprintf(stderr, "failed at asking %s: %v\n", admin, err)
		return ExitFatal
	}
	defer resp.Body.Close()
	var st Status
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&st); err != nil {
		fmt.Fprintf(stderr, "failed at reading the status from %s: %v\n", admin, err)
		return ExitFatal
	}
	writeStatus(stdout, &st, time.Now())
	return ExitOK
}

// writeStatus renders st as aligned lines.
func writeStatus(w io.Writer, st *Status, now time.Time) {
	line := func(k, f string, a ...any) { fmt.Fprintf(w, "%-12s %s\n", k+":", fmt.Sprintf(f, a...)) }
	line("mode", "%s", st.Mode)
	line("state", "%s for %s (since %s)", st.State, round(now.Sub(st.Since)), st.Since.UTC().Format(time.RFC3339))
	if st.PeerAddress != "" && st.PeerAddress != st.Peer {
		line("peer", "%s (dialled at %s)", st.Peer, st.PeerAddress)
	} else {
		line("peer", "%s", st.Peer)
	}
	line("uptime", "%s", round(now.Sub(st.Started)))
	if st.SmoothedRTTms != nil {
		line("rtt", "smoothed %.2f ms, min %.2f ms, latest %.2f ms", *st.SmoothedRTTms, *st.MinRTTms, *st.LatestRTTms)
	}
	if st.CongestionWindow != nil {
		line("cwnd", "%d bytes", *st.CongestionWindow)
	}
	line("in flight", "%d requests", st.InFlight)
	if len(st.Sessions) > 1 {
		// Several servers: one line per session, in priority order (the
		// lines above describe the first ready one).
		for _, ss := range st.Sessions {
			text := fmt.Sprintf("%s at %s: %s for %s", ss.Server, ss.PeerAddress, ss.State, round(now.Sub(ss.Since)))
			if ss.SmoothedRTTms != nil {
				text += fmt.Sprintf(", rtt %.2f ms", *ss.SmoothedRTTms)
			}
			if f := ss.FEC; f != nil {
				text += fmt.Sprintf(", fec recovered %d, unrecoverable %d of %d datagrams", f.Recovered, f.Unrecoverable, f.DataReceived)
				if f.Retrieved > 0 || f.Resent > 0 {
					text += fmt.Sprintf(", retrieved %d, resent %d", f.Retrieved, f.Resent)
				}
			}
			if ss.LastFailure != "" {
				text += "; last error: " + ss.LastFailure
			}
			line("session", "%s", text)
		}
	}
	if f := st.FEC; f != nil {
		switch f.Mode {
		case "on":
			line("fec", "on (%d+%d): recovered %d, unrecoverable %d of %d datagrams received, mismatched %d",
				f.GroupSize, f.Repair, f.Recovered, f.Unrecoverable, f.DataReceived, f.Mismatched)
		case "auto":
			line("fec", "auto (%d+1..%d): recovered %d, retrieved %d, unrecoverable %d of %d datagrams received, mismatched %d, loss reports sent %d received %d, resent %d",
				f.GroupSize, f.Repair, f.Recovered, f.Retrieved, f.Unrecoverable, f.DataReceived, f.Mismatched, f.ReportsSent, f.ReportsReceived, f.Resent)
		default:
			line("fec", "off: dropped %d FEC-framed datagrams (the peer has transport.fec on)", f.Mismatched)
		}
	}
	if st.LastFailure != "" {
		line("last error", "%s", st.LastFailure)
	}
	for _, o := range st.Origins {
		state := "up"
		if !o.Up {
			state = "DOWN"
		}
		line("origin", "%s %s: %s, %d consecutive failures, %d in flight", o.Group, o.Address, state, o.Fails, o.InFlight)
	}
	for _, e := range st.Endpoints {
		name := e.Name
		if name == "" {
			name = "(default)"
		}
		line("endpoint", "%s -> group %s: %d requests", name, e.Group, e.Requests)
	}
	line("version", "%s", st.Version)
}

func round(d time.Duration) time.Duration {
	switch {
	case d > time.Hour:
		return d.Round(time.Minute)
	case d > time.Minute:
		return d.Round(time.Second)
	default:
		return d.Round(time.Millisecond)
	}
}
