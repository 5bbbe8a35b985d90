package app

import (
	"errors"
	"log/slog"
	"net/http"
	"runtime"
	"strconv"
	"sync/atomic"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/quic-go/quic-go"

	"github.com/ptproxy/ptproxy/pipeline"
	"github.com/ptproxy/ptproxy/session"
)

// metrics are the Prometheus series of one instance. Each instance has its
// own registry, so tests (and the demo, which runs two instances) never
// share global state.
type metrics struct {
	reg    *prometheus.Registry
	client bool // the session metrics' server label is the peer's name

	// Session metrics: label server is the server's name (client mode,
	// one session per server), "" in server mode.
	state       *prometheus.GaugeVec
	transitions *prometheus.CounterVec
	attempts    *prometheus.CounterVec
	failures    *prometheus.CounterVec
	handshake   *prometheus.HistogramVec

	requests  *prometheus.CounterVec
	synthetic *prometheus.CounterVec
	outcomes  *prometheus.CounterVec
	inflight  *prometheus.GaugeVec
	duration  *prometheus.HistogramVec
	bodyBytes *prometheus.CounterVec
}

func newMetrics(mode string) *metrics {
	m := &metrics{reg: prometheus.NewRegistry(), client: mode == "Client"}
	f := func(c prometheus.Collector) { m.reg.MustRegister(c) }
	m.state = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ptproxy_session_state", Help: "1 for the current state of the session FSM, 0 for the others.",
	}, []string{"server", "state"})
	m.transitions = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ptproxy_session_transitions_total", Help: "Session FSM transitions.",
	}, []string{"server", "from", "to"})
	m.attempts = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ptproxy_connection_attempts_total", Help: "QUIC connection attempts (client).",
	}, []string{"server"})
	m.failures = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ptproxy_connection_failures_total", Help: "Failed connection attempts and lost sessions, by reason class.",
	}, []string{"server", "reason"})
	m.handshake = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ptproxy_handshake_duration_seconds", Help: "Time from the start of a connection attempt to a ready session.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14),
	}, []string{"server"})
	m.requests = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ptproxy_requests_total", Help: "Finished exchanges by side, method and status class.",
	}, []string{"side", "method", "code"})
	m.synthetic = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ptproxy_synthetic_responses_total", Help: "Responses ptproxy generated itself, by reason.",
	}, []string{"side", "reason", "code"})
	m.outcomes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ptproxy_exchange_outcomes_total", Help: "How exchanges ended: completed, synthetic, cut (after the head), aborted (before a response).",
	}, []string{"side", "outcome"})
	m.inflight = prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ptproxy_requests_in_flight", Help: "Exchanges started and not yet finished.",
	}, []string{"side"})
	m.duration = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "ptproxy_request_duration_seconds", Help: "Time from the request head to the end of the response.",
		Buckets: prometheus.ExponentialBuckets(0.0005, 2, 16),
	}, []string{"side"})
	m.bodyBytes = prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "ptproxy_body_bytes_total", Help: "Body bytes proxied: request (from the caller) and response (to the caller).",
	}, []string{"side", "direction"})
	for _, c := range []prometheus.Collector{m.state, m.transitions, m.attempts, m.failures, m.handshake,
		m.requests, m.synthetic, m.outcomes, m.inflight, m.duration, m.bodyBytes} {
		f(c)
	}
	build := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "ptproxy_build_info", Help: "Always 1; labels carry the build.",
	}, []string{"version", "goversion", "mode"})
	build.WithLabelValues(Version, runtime.Version(), mode).Set(1)
	f(build)
	f(collectors.NewGoCollector())
	f(collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return m
}

// addServer creates the series of one session (server is its label), so
// that every state shows from the start.
func (m *metrics) addServer(server string) {
	for _, s := range session.States() {
		m.state.WithLabelValues(server, s.String())
	}
	m.attempts.WithLabelValues(server)
}

// transition records a session FSM transition. In client mode t.Peer is
// the server's name (the instance's hook sets it per session).
func (m *metrics) transition(t session.Transition) {
	server := ""
	if m.client {
		server = t.Peer
	}
	m.state.WithLabelValues(server, t.From.String()).Set(0)
	m.state.WithLabelValues(server, t.To.String()).Set(1)
	m.transitions.WithLabelValues(server, t.From.String(), t.To.String()).Inc()
	switch {
	case t.To == session.Connecting:
		m.attempts.WithLabelValues(server).Inc()
	case t.From == session.Connecting && t.To == session.Ready:
		m.handshake.WithLabelValues(server).Observe(t.InState.Seconds())
	case t.Event == session.EvFail || t.Event == session.EvLost:
		m.failures.WithLabelValues(server, reasonClass(t.Reason)).Inc()
	}
}

// reasonClass maps a failure to a small, fixed set of label values.
func reasonClass(err error) string {
	var (
		idle *quic.IdleTimeoutError
		hs   *quic.HandshakeTimeoutError
		app  *quic.ApplicationError
		tr   *quic.TransportError
	)
	switch {
	case err == nil:
		return "unknown"
	case errors.Is(err, session.ErrServerClosed), errors.Is(err, session.ErrServerGoaway):
		return "server_closed"
	case errors.As(err, &hs):
		return "handshake_timeout"
	case errors.As(err, &idle):
		return "idle_timeout"
	case errors.As(err, &tr) && tr.ErrorCode.IsCryptoError():
		return "tls"
	case errors.As(err, &tr):
		return "transport_error"
	case errors.As(err, &app):
		return "application_error"
	default:
		return "other"
	}
}

// Started implements pipeline.Observer.
func (m *metrics) Started(side pipeline.Side) { m.inflight.WithLabelValues(side.String()).Inc() }

// Finished implements pipeline.Observer.
func (m *metrics) Finished(r *pipeline.Record) {
	side := r.Side.String()
	m.inflight.WithLabelValues(side).Dec()
	m.requests.WithLabelValues(side, methodLabel(r.Method), codeClass(r.Status)).Inc()
	m.outcomes.WithLabelValues(side, r.Outcome.String()).Inc()
	if r.Err != nil {
		m.synthetic.WithLabelValues(side, r.Err.Kind.String(), strconv.Itoa(r.Status)).Inc()
	}
	m.duration.WithLabelValues(side).Observe(r.Duration.Seconds())
	m.bodyBytes.WithLabelValues(side, "request").Add(float64(r.RequestBytes))
	m.bodyBytes.WithLabelValues(side, "response").Add(float64(r.ResponseBytes))
}

// methodLabel keeps the label set bounded: a caller can send any token.
func methodLabel(m string) string {
	switch m {
	case http.MethodGet, http.MethodHead, http.MethodPost, http.MethodPut, http.MethodPatch,
		http.MethodDelete, http.MethodOptions, http.MethodTrace, http.MethodConnect:
		return m
	case "":
		return "invalid"
	default:
		return "other"
	}
}

func codeClass(status int) string {
	if status < 100 || status > 599 {
		return "none"
	}
	return strconv.Itoa(status/100) + "xx"
}

// quicCollector exports the statistics of every client session at scrape
// time, labelled by server. They restart at zero with each new session,
// so they are gauges.
type quicCollector struct {
	sessions []*serverSession
	descs    map[string]*prometheus.Desc
}

func newQUICCollector(sessions []*serverSession) *quicCollector {
	d := func(name, help string, labels ...string) *prometheus.Desc {
		return prometheus.NewDesc(name, help, append([]string{"server"}, labels...), nil)
	}
	return &quicCollector{sessions: sessions, descs: map[string]*prometheus.Desc{
		"rtt":     d("ptproxy_quic_rtt_seconds", "RTT of the current session (smoothed, min, latest).", "kind"),
		"cwnd":    d("ptproxy_quic_congestion_window_bytes", "Congestion window of the current session."),
		"bytes":   d("ptproxy_quic_session_bytes", "Bytes of the current session (sent, received, lost).", "direction"),
		"packets": d("ptproxy_quic_session_packets", "Packets of the current session (sent, received, lost).", "direction"),
	}}
}

func (c *quicCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range c.descs {
		ch <- d
	}
}

func (c *quicCollector) Collect(ch chan<- prometheus.Metric) {
	for _, ss := range c.sessions {
		s, ok := ss.client.ConnStats()
		if !ok {
			continue
		}
		g := func(d *prometheus.Desc, v float64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, append([]string{ss.srv.Name}, labels...)...)
		}
		g(c.descs["rtt"], s.SmoothedRTT.Seconds(), "smoothed")
		g(c.descs["rtt"], s.MinRTT.Seconds(), "min")
		g(c.descs["rtt"], s.LatestRTT.Seconds(), "latest")
		g(c.descs["cwnd"], float64(s.CongestionWindow))
		g(c.descs["bytes"], float64(s.BytesSent), "sent")
		g(c.descs["bytes"], float64(s.BytesReceived), "received")
		g(c.descs["bytes"], float64(s.BytesLost), "lost")
		g(c.descs["packets"], float64(s.PacketsSent), "sent")
		g(c.descs["packets"], float64(s.PacketsReceived), "received")
		g(c.descs["packets"], float64(s.PacketsLost), "lost")
	}
}

// fecCollector exports the counters of the FEC layer (transport.fec) at
// scrape time. On a client they are labelled by server like the session
// metrics, one series per server session (each has its own socket); a
// server has one socket for every client and one series without the
// label. They count since the process started, across sessions.
type fecCollector struct {
	stats                                                    func() []serverFEC
	perServer                                                bool
	recovered, retrieved, unrecoverable, mismatched, packets *prometheus.Desc
}

// serverFEC is the FEC counters of one server's session (Server "" on a
// server).
type serverFEC struct {
	Server string
	Stats  session.FECStats
}

func newFECCollector(stats func() []serverFEC, perServer bool) *fecCollector {
	var server []string
	if perServer {
		server = []string{"server"}
	}
	return &fecCollector{
		stats: stats, perServer: perServer,
		recovered: prometheus.NewDesc("ptproxy_fec_recovered_datagrams_total",
			"Datagrams lost on the link and rebuilt by FEC before QUIC saw the loss.", server, nil),
		retrieved: prometheus.NewDesc("ptproxy_fec_retrieved_datagrams_total",
			"Datagrams lost on the link beyond FEC's repairs that came again on request before QUIC saw the loss (fec = \"auto\").", server, nil),
		unrecoverable: prometheus.NewDesc("ptproxy_fec_unrecoverable_datagrams_total",
			"Datagrams lost on the link that FEC could not rebuild in time (QUIC saw the loss).", server, nil),
		mismatched: prometheus.NewDesc("ptproxy_fec_mismatched_datagrams_total",
			"Datagrams dropped because the peer's transport.fec differs from ours.", server, nil),
		packets: prometheus.NewDesc("ptproxy_fec_datagrams_total",
			"Datagrams through the FEC layer by direction (sent, received) and kind (data, repair; with fec = \"auto\" also report: loss reports, request: requests for datagrams to send again, resent: datagrams sent again on request).",
			append(server, "direction", "kind"), nil),
	}
}

func (c *fecCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- c.recovered
	ch <- c.retrieved
	ch <- c.unrecoverable
	ch <- c.mismatched
	ch <- c.packets
}

func (c *fecCollector) Collect(ch chan<- prometheus.Metric) {
	for _, f := range c.stats() {
		s := f.Stats
		n := func(d *prometheus.Desc, v uint64, labels ...string) {
			if c.perServer {
				labels = append([]string{f.Server}, labels...)
			}
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
		}
		n(c.recovered, s.Recovered)
		n(c.retrieved, s.Retrieved)
		n(c.unrecoverable, s.Unrecoverable)
		n(c.mismatched, s.Mismatched)
		n(c.packets, s.DataSent, "sent", "data")
		n(c.packets, s.RepairSent, "sent", "repair")
		n(c.packets, s.DataReceived, "received", "data")
		n(c.packets, s.RepairReceived, "received", "repair")
		n(c.packets, s.ReportsSent, "sent", "report")
		n(c.packets, s.ReportsReceived, "received", "report")
		n(c.packets, s.AsksSent, "sent", "request")
		n(c.packets, s.Resent, "sent", "resent")
	}
}

// accessLog is the optional per-request log line.
type accessLog struct{ log *slog.Logger }

func (a accessLog) Started(pipeline.Side) {}

func (a accessLog) Finished(r *pipeline.Record) {
	attrs := []any{"side", r.Side.String(), "method", r.Method, "authority", r.Authority, "path", r.Path,
		"peer", r.Peer, "status", r.Status, "outcome", r.Outcome.String(),
		"duration_ms", float64(r.Duration.Microseconds()) / 1000, "request_bytes", r.RequestBytes, "response_bytes", r.ResponseBytes}
	if r.Err != nil {
		attrs = append(attrs, "error", r.Err.Error())
	}
	a.log.Info("request", attrs...)
}

// observers fans out to several observers.
type observers []pipeline.Observer

func (o observers) Started(s pipeline.Side) {
	for _, x := range o {
		x.Started(s)
	}
}

func (o observers) Finished(r *pipeline.Record) {
	for _, x := range o {
		x.Finished(r)
	}
}

// inflightCounter keeps the number of exchanges in flight for /status.
type inflightCounter struct{ n *atomic.Int64 }

func (c inflightCounter) Started(pipeline.Side)     { c.n.Add(1) }
func (c inflightCounter) Finished(*pipeline.Record) { c.n.Add(-1) }
