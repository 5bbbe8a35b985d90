package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/session"
)

// Status is what /status reports and `ptproxy status` prints.
type Status struct {
	Mode        string    `json:"mode"`
	State       string    `json:"state"`
	Ready       bool      `json:"ready"`
	Peer        string    `json:"peer"`
	PeerAddress string    `json:"peer_address,omitempty"`
	Since       time.Time `json:"since"`
	Started     time.Time `json:"started"`
	LastFailure string    `json:"last_failure,omitempty"`
	// Session statistics (client mode, while a session is up).
	SessionStats
	InFlight int64 `json:"requests_in_flight"`
	// FEC is the FEC layer (transport.fec): always with fec = "on", and
	// with "off" once a peer's FEC-framed datagram was dropped.
	FEC *FECStatus `json:"fec,omitempty"`
	// Sessions (client mode): one per server, general.peer_hostname's
	// first. The fields above describe the first ready one (the first
	// when none is), and Ready is true while any is.
	Sessions []SessionStatus `json:"sessions,omitempty"`
	// Origins and Endpoints (server mode): every origin's health and every
	// endpoint's request count.
	Origins   []OriginStatus   `json:"origins,omitempty"`
	Endpoints []EndpointStatus `json:"endpoints,omitempty"`
	Version   string           `json:"version"`
}

// FECStatus is the FEC part of Status. Counters run since the start.
type FECStatus struct {
	Mode          string `json:"mode"` // "on", "auto" or "off"
	GroupSize     int    `json:"group_size,omitempty"`
	Repair        int    `json:"repair,omitempty"` // with "auto": the ceiling of the adaptive repairs
	Recovered     uint64 `json:"recovered_datagrams"`
	Unrecoverable uint64 `json:"unrecoverable_datagrams"`
	Mismatched    uint64 `json:"mismatched_datagrams"`
	DataReceived  uint64 `json:"data_datagrams_received"`
	// Loss reports (mode "auto").
	ReportsSent     uint64 `json:"loss_reports_sent,omitempty"`
	ReportsReceived uint64 `json:"loss_reports_received,omitempty"`
	// Resending on request (mode "auto"): datagrams lost beyond the
	// repairs that came again before QUIC saw the loss, and datagrams
	// this end sent again on the peer's requests.
	Retrieved uint64 `json:"retrieved_datagrams,omitempty"`
	Resent    uint64 `json:"resent_datagrams,omitempty"`
}

// status builds the current Status.
func (in *Instance) status() Status {
	st := Status{
		Mode:     string(in.cfg.General.Mode),
		Peer:     in.cfg.General.PeerHostname,
		Started:  in.started,
		Version:  Version,
		InFlight: in.inflight.Load(),
	}
	var state session.State
	switch {
	case in.client != nil:
		in.sessionsStatus(&st)
	case in.server != nil:
		state = in.server.State()
		st.Since = in.server.Since()
		in.routeStatus(&st)
	}
	if in.server != nil {
		st.State = state.String()
		st.Ready = state == session.Ready
	}
	t := in.cfg.Transport
	// One snapshot for the sum and the sessions' parts. Every session
	// has its own socket: the sum is the instance's.
	byServer := in.fecByServer()
	var fs session.FECStats
	for _, f := range byServer {
		fs.Add(f.Stats)
	}
	if t.FEC != config.FECOff || fs.Mismatched > 0 {
		st.FEC = &FECStatus{Mode: string(t.FEC), Recovered: fs.Recovered, Unrecoverable: fs.Unrecoverable,
			Mismatched: fs.Mismatched, DataReceived: fs.DataReceived}
		if t.FEC != config.FECOff {
			st.FEC.GroupSize, st.FEC.Repair = t.FECGroupSize, t.FECRepair
		}
		if t.FEC == config.FECAuto {
			st.FEC.Repair = fecRepair(in.cfg)
			st.FEC.ReportsSent, st.FEC.ReportsReceived = fs.ReportsSent, fs.ReportsReceived
			st.FEC.Retrieved, st.FEC.Resent = fs.Retrieved, fs.Resent
		}
		if len(st.Sessions) > 0 {
			for i, f := range byServer {
				st.Sessions[i].FEC = &SessionFEC{Recovered: f.Stats.Recovered, Unrecoverable: f.Stats.Unrecoverable,
					Mismatched: f.Stats.Mismatched, DataReceived: f.Stats.DataReceived,
					Retrieved: f.Stats.Retrieved, Resent: f.Stats.Resent}
			}
		}
	}
	return st
}

// recordFailure keeps the latest failure reason of the session for
// /status; the FSM itself forgets it once the session is back.
func (in *Instance) recordFailure(t session.Transition) {
	if (t.Event == session.EvFail || t.Event == session.EvLost) && t.Reason != nil {
		s := t.Reason.Error()
		in.lastFailure.Store(&s)
	}
}

// startAdmin serves /metrics, /healthz and /status on admin_address. The
// listener is bound before Start returns, so a bad address fails the start.
func (in *Instance) startAdmin(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return step("binding admin listener", err)
	}
	in.adminLn = ln
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(in.metrics.reg, promhttp.HandlerOpts{ErrorLog: slogErrorLog{in.log}}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		st := in.status()
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Cache-Control", "no-store")
		if !st.Ready {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintf(w, "%s\n", st.State)
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.HandleFunc("GET /status", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.Header().Set("Cache-Control", "no-store")
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		enc.Encode(in.status())
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	in.admin = srv
	in.wg.Go(func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			in.log.Error("admin listener failed", "error", err)
		}
	})
	in.log.Info("admin listener", "address", ln.Addr().String())
	return nil
}

func (in *Instance) stopAdmin() {
	if in.admin == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if in.admin.Shutdown(ctx) != nil {
		in.admin.Close()
	}
}

// AdminAddr is the admin listener's address (nil when off).
func (in *Instance) AdminAddr() net.Addr {
	if in.adminLn == nil {
		return nil
	}
	return in.adminLn.Addr()
}

// slogErrorLog adapts promhttp's error logger to slog.
type slogErrorLog struct{ l *slog.Logger }

func (s slogErrorLog) Println(v ...any) { s.l.Error("metrics: " + fmt.Sprint(v...)) }
