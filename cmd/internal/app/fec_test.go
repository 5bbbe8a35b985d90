package app

import (
	"bytes"
	"cmp"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/session"
	"github.com/ptproxy/ptproxy/session/fec/fectest"
)

// TestFECEndToEnd: caller -> client -> 2% lossy relay -> server -> origin
// with transport.fec = "on" at both ends: 1 MiB answers arrive identical,
// and /metrics and /status show what FEC rebuilt.
func TestFECEndToEnd(t *testing.T) { testFECEndToEnd(t, config.FECOn) }

// TestFECAutoEndToEnd: the same with transport.fec = "auto": the answers
// arrive identical, and both ends exchanged loss reports.
func TestFECAutoEndToEnd(t *testing.T) { testFECEndToEnd(t, config.FECAuto) }

// fecRelayPair starts a server for origin and a client that reaches it
// through a fectest.Relay dropping loss of the datagrams (seeded), both
// with FEC set by withFEC and an admin address; it returns once the
// client is ready.
func fecRelayPair(t *testing.T, pk *testPKI, origin string, loss float64, seed uint64, withFEC func(*config.Config)) (server, client *Instance, relay *fectest.Relay) {
	t.Helper()
	conf := func(c *config.Config) *config.Config {
		withFEC(c)
		c.System.AdminAddress = "127.0.0.1:0"
		return c
	}
	slog, _ := newTestLogger(t)
	server = startInstance(t, conf(pk.serverConfig(origin)), slog)
	relay = fectest.NewRelay(t, server.QUICAddr().(*net.UDPAddr), loss, seed)
	clog, _ := newTestLogger(t)
	client = startInstance(t, conf(pk.clientConfig(relay.Port())), clog)
	waitReady(t, client)
	return server, client, relay
}

func testFECEndToEnd(t *testing.T, mode config.FECMode) {
	body := make([]byte, 1<<20)
	for i := range body {
		body[i] = byte(i * 7)
	}
	pk := newTestPKI(t)
	origin := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	_, client, _ := fecRelayPair(t, pk, origin, 0.02, 7, func(c *config.Config) {
		c.Transport.FEC, c.Transport.FECGroupSize, c.Transport.FECRepair = mode, 16, 2
	})

	c := callerClient()
	for i := range 3 {
		resp, err := c.Get("http://" + client.HTTPAddr().String() + "/")
		if err != nil {
			t.Fatal(err)
		}
		got, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil || !bytes.Equal(got, body) {
			t.Fatalf("GET %d: %d bytes, err %v", i, len(got), err)
		}
	}

	m := scrape(t, "http://"+client.AdminAddr().String()+"/metrics")
	for _, k := range []string{`ptproxy_fec_recovered_datagrams_total{server="server.test"}`, `ptproxy_fec_unrecoverable_datagrams_total{server="server.test"}`,
		`ptproxy_fec_mismatched_datagrams_total{server="server.test"}`, `ptproxy_fec_datagrams_total{direction="received",kind="data",server="server.test"}`} {
		if _, ok := m[k]; !ok {
			t.Errorf("/metrics has no %s", k)
		}
	}
	if m[`ptproxy_fec_recovered_datagrams_total{server="server.test"}`] == 0 || m[`ptproxy_fec_datagrams_total{direction="sent",kind="repair",server="server.test"}`] == 0 {
		t.Errorf("client metrics: recovered %v, repairs sent %v", m[`ptproxy_fec_recovered_datagrams_total{server="server.test"}`],
			m[`ptproxy_fec_datagrams_total{direction="sent",kind="repair",server="server.test"}`])
	}

	resp, err := http.Get("http://" + client.AdminAddr().String() + "/status")
	if err != nil {
		t.Fatal(err)
	}
	var st Status
	err = json.NewDecoder(resp.Body).Decode(&st)
	resp.Body.Close()
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	writeStatus(&out, &st, st.Started)
	switch mode {
	case config.FECOn:
		if st.FEC == nil || st.FEC.Mode != "on" || st.FEC.GroupSize != 16 || st.FEC.Repair != 2 || st.FEC.Recovered == 0 ||
			st.FEC.ReportsSent != 0 || st.FEC.ReportsReceived != 0 {
			t.Fatalf("status fec %+v", st.FEC)
		}
		if !strings.Contains(out.String(), "fec:         on (16+2): recovered ") {
			t.Fatalf("status output:\n%s", out.String())
		}
	case config.FECAuto:
		// fec_repair is not set explicitly (the config is built in
		// code): the ceiling is a quarter of the group.
		if st.FEC == nil || st.FEC.Mode != "auto" || st.FEC.GroupSize != 16 || st.FEC.Repair != 4 || st.FEC.Recovered == 0 ||
			st.FEC.ReportsSent == 0 || st.FEC.ReportsReceived == 0 || st.FEC.Mismatched != 0 {
			t.Fatalf("status fec %+v", st.FEC)
		}
		if !strings.Contains(out.String(), "fec:         auto (16+1..4): recovered ") {
			t.Fatalf("status output:\n%s", out.String())
		}
		for _, dir := range []string{"sent", "received"} {
			if k := `ptproxy_fec_datagrams_total{direction="` + dir + `",kind="report",server="server.test"}`; m[k] == 0 {
				t.Errorf("/metrics: %s is %v, want the loss reports counted", k, m[k])
			}
		}
		// Whether a loss goes beyond its group's repairs here is chance;
		// the counters of resending on request must be there either way
		// (session/fec's TestResend* show them counting).
		for _, k := range []string{`ptproxy_fec_retrieved_datagrams_total{server="server.test"}`,
			`ptproxy_fec_datagrams_total{direction="sent",kind="request",server="server.test"}`,
			`ptproxy_fec_datagrams_total{direction="sent",kind="resent",server="server.test"}`} {
			if _, ok := m[k]; !ok {
				t.Errorf("/metrics has no %s", k)
			}
		}
		t.Logf("client: retrieved %d, resent %d, unrecoverable %d", st.FEC.Retrieved, st.FEC.Resent, st.FEC.Unrecoverable)
	}
}

// TestFECResendHidesLossFromQUIC: with transport.fec = "auto", one data
// datagram of a POST body that the relay drops together with every repair
// of its group (so FEC cannot rebuild it) is asked for and sent again
// below QUIC: the POST is answered, the server counts the datagram
// retrieved and none unrecoverable, and the client's quic-go counts no
// lost packet (it would count one if the datagram were given up).
func TestFECResendHidesLossFromQUIC(t *testing.T) {
	pk := newTestPKI(t)
	origin := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		fmt.Fprint(w, n)
	}))
	server, client, relay := fecRelayPair(t, pk, origin, 0, 1, func(c *config.Config) { c.Transport.FEC = config.FECAuto })
	serverMetrics := "http://" + server.AdminAddr().String() + "/metrics"
	clientMetrics := "http://" + client.AdminAddr().String() + "/metrics"
	// The server asks only a client whose reports say it answers.
	deadline := time.Now().Add(20 * time.Second)
	for scrape(t, serverMetrics)[`ptproxy_fec_datagrams_total{direction="received",kind="report"}`] == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the server never got a loss report from the client")
		}
		time.Sleep(10 * time.Millisecond)
	}

	// Framing of session/fec: data 0x31 | seq u32, or 0x36 | seq u32 | 5
	// zero bytes (padded, once the peer's reports say it reads that);
	// repairs 0x32 and 0x34
	// | first u32 | n u8 | r u8 | idx (0x34: (stride-1)<<5 | idx).
	var big int
	var target uint32
	var targeted, dropped bool
	relay.DropWhen(func(fromClient bool, b []byte) bool {
		if !fromClient || len(b) < 8 {
			return false
		}
		switch b[0] {
		case 0x31, 0x36:
			seq := binary.BigEndian.Uint32(b[1:5])
			if targeted {
				if seq == target && !dropped {
					dropped = true
					return true
				}
				return false
			}
			// The third full-size datagram: body data, which quic-go
			// counts as lost when it is given up.
			if len(b) > 1000 {
				if big++; big == 3 {
					target, targeted, dropped = seq, true, true
					return true
				}
			}
		case 0x32, 0x34:
			if !targeted {
				return false
			}
			first, n, stride := binary.BigEndian.Uint32(b[1:5]), uint32(b[5]), uint32(1)
			if b[0] == 0x34 {
				stride = uint32(b[7]>>5) + 1
			}
			d := target - first
			return int32(d) >= 0 && d%stride == 0 && d/stride < n
		}
		return false
	})
	body := bytes.Repeat([]byte("ptproxy "), 8<<10) // 64 KiB
	resp, err := callerClient().Post("http://"+client.HTTPAddr().String()+"/", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil || resp.StatusCode != 200 || string(got) != fmt.Sprint(len(body)) {
		t.Fatalf("POST: %d %q, err %v", resp.StatusCode, got, err)
	}
	if _, drops := relay.Counts(); !targeted || drops < 2 {
		t.Fatalf("the relay dropped %d datagrams (target chosen: %v): want the target and its group's repairs", drops, targeted)
	}
	sm, cm := scrape(t, serverMetrics), scrape(t, clientMetrics)
	if sm[`ptproxy_fec_retrieved_datagrams_total`] < 1 || sm[`ptproxy_fec_unrecoverable_datagrams_total`] != 0 {
		t.Errorf("server: retrieved %v, unrecoverable %v; want the dropped datagram retrieved",
			sm[`ptproxy_fec_retrieved_datagrams_total`], sm[`ptproxy_fec_unrecoverable_datagrams_total`])
	}
	if k := `ptproxy_fec_datagrams_total{direction="sent",kind="resent",server="server.test"}`; cm[k] < 1 {
		t.Errorf("client: %s = %v, want the datagram sent again", k, cm[k])
	}
	if k := `ptproxy_quic_session_packets{direction="lost",server="server.test"}`; cm[k] != 0 {
		t.Errorf("client: %s = %v, want quic-go to have seen no loss", k, cm[k])
	}
	// /status says the same, at the top and for the session.
	st := fetchStatus(t, "http://"+client.AdminAddr().String())
	if st.FEC == nil || len(st.Sessions) != 1 || st.Sessions[0].FEC == nil ||
		st.FEC.Resent < 1 || st.Sessions[0].FEC.Resent != st.FEC.Resent || st.Sessions[0].FEC.Retrieved != st.FEC.Retrieved {
		t.Errorf("client status: fec %+v, sessions %+v", st.FEC, st.Sessions)
	}
}

// TestFECPacketSize: with FEC quic-go's packets start at
// transport.fec_packet_size (1270 by default, so that no datagram on the
// wire, repairs included, is larger than 1280 bytes). "on" keeps that
// size. With "auto" path MTU discovery grows them (the relay carries any
// size): every data datagram above the start size goes out padded (tag
// 0x36) to a repair's size, and none is larger than quic-go's largest
// packet (1452) plus 10. With 1452 there is nothing to discover.
func TestFECPacketSize(t *testing.T) {
	if config.DefaultFECPacketSize != session.FECPacketSize {
		t.Fatalf("config.DefaultFECPacketSize %d, session.FECPacketSize %d", config.DefaultFECPacketSize, session.FECPacketSize)
	}
	body := bytes.Repeat([]byte("0123456789abcdef"), 1<<14) // 256 KiB
	pk := newTestPKI(t)
	origin := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	for _, tc := range []struct {
		mode  config.FECMode
		size  int // 0: the default
		grows bool
	}{
		{config.FECOn, 0, false},
		{config.FECAuto, 0, true},
		{config.FECAuto, config.MaxFECPacketSize, false},
	} {
		start := cmp.Or(tc.size, config.DefaultFECPacketSize)
		_, client, relay := fecRelayPair(t, pk, origin, 0, 1, func(c *config.Config) {
			c.Transport.FEC, c.Transport.FECPacketSize = tc.mode, start
		})
		var mu sync.Mutex
		var plainAbove, paddedAbove, largest int
		relay.DropWhen(func(_ bool, b []byte) bool {
			mu.Lock()
			defer mu.Unlock()
			largest = max(largest, len(b))
			switch {
			case b[0] == 0x31 && len(b) > start+5:
				plainAbove++
			case b[0] == 0x36 && len(b) > start+10:
				paddedAbove++
			}
			return false
		})
		// Path MTU discovery probes every few round trips: GET until a
		// packet above the start size went through (at most 200).
		for i := 0; i < 200; i++ {
			resp, err := callerClient().Get("http://" + client.HTTPAddr().String() + "/")
			if err != nil {
				t.Fatal(err)
			}
			got, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil || !bytes.Equal(got, body) {
				t.Fatalf("%s, size %d: %d bytes, err %v", tc.mode, start, len(got), err)
			}
			mu.Lock()
			grown := paddedAbove > 0
			mu.Unlock()
			if grown || !tc.grows && i == 2 {
				break
			}
		}
		mu.Lock()
		if plainAbove != 0 || largest > max(start, 1452)+10 || (paddedAbove > 0) != tc.grows {
			t.Errorf("%s, size %d: %d unpadded data datagrams above the start size, %d padded ones, largest datagram %d; want none unpadded, padded ones only when the packets grow (%v), none above %d",
				tc.mode, start, plainAbove, paddedAbove, largest, tc.grows, max(start, 1452)+10)
		}
		if !tc.grows && largest > start+10 {
			t.Errorf("%s, size %d: largest datagram %d, want at most %d", tc.mode, start, largest, start+10)
		}
		mu.Unlock()
	}
}

// TestFECOffStatus: with FEC off (the default) /status has no fec part and
// the FEC series are zero.
func TestFECOffStatus(t *testing.T) {
	pk := newTestPKI(t)
	origin := startOrigin(t, echoOrigin(nil))
	slog, _ := newTestLogger(t)
	scfg := pk.serverConfig(origin)
	scfg.System.AdminAddress = "127.0.0.1:0"
	server := startInstance(t, scfg, slog)
	st := server.status()
	if st.FEC != nil {
		t.Fatalf("status fec %+v with fec off", st.FEC)
	}
	m := scrape(t, "http://"+server.AdminAddr().String()+"/metrics")
	if v, ok := m["ptproxy_fec_recovered_datagrams_total"]; !ok || v != 0 {
		t.Fatalf("recovered %v %v", v, ok)
	}
}

// TestFECRepairSetting: in auto mode fec_repair is the ceiling of the
// adaptive repairs when set, else a quarter of the group; in on mode the
// count.
func TestFECRepairSetting(t *testing.T) {
	for _, c := range []struct {
		env  []string
		want int
	}{
		{[]string{"PTPROXY_TRANSPORT__FEC=on"}, 2},
		{[]string{"PTPROXY_TRANSPORT__FEC=auto"}, 4},
		{[]string{"PTPROXY_TRANSPORT__FEC=auto", "PTPROXY_TRANSPORT__FEC_GROUP_SIZE=10"}, 2},
		{[]string{"PTPROXY_TRANSPORT__FEC=auto", "PTPROXY_TRANSPORT__FEC_REPAIR=3"}, 3},
	} {
		cfg, err := config.LoadFile("../../../config/testdata/valid/client.toml", c.env)
		if err != nil {
			t.Fatal(err)
		}
		tr := transportOf(cfg)
		if got := tr.FECRepair; got != c.want || !tr.FEC || tr.FECAuto != (cfg.Transport.FEC == config.FECAuto) {
			t.Errorf("%v: repair %d (want %d), %+v", c.env, got, c.want, tr)
		}
	}
}

// TestFECPerServer: a client with two servers, FEC on everywhere, the
// first server behind a 2% lossy relay. Every session has its own socket
// and its own counters: /metrics labels them by server, /status has them
// per session, and they add up to the top-level FEC status.
func TestFECPerServer(t *testing.T) {
	body := bytes.Repeat([]byte("fec per server "), 1<<16)
	pk := newTestPKI(t)
	origin := startOrigin(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(body) }))
	fecOn := func(c *config.Config) *config.Config {
		c.Transport.FEC, c.Transport.FECGroupSize, c.Transport.FECRepair = config.FECOn, 16, 2
		return c
	}
	ts := newTwoServers(t, pk)
	ts.origins = [2]string{origin, origin}
	for i := range 2 {
		slog, _ := newTestLogger(t)
		ts.servers[i] = startInstance(t, fecOn(ts.serverConfig(i, 0)), slog)
		ts.ports[i] = ts.servers[i].QUICAddr().(*net.UDPAddr).Port
	}
	relay := fectest.NewRelay(t, ts.servers[0].QUICAddr().(*net.UDPAddr), 0.02, 11)
	ccfg := fecOn(pk.clientConfig(relay.Port()))
	ccfg.Servers = []config.Server{{PeerHostname: server2Name, ConnectAddress: "127.0.0.1", QUICPort: ts.ports[1]}}
	ccfg.System.AdminAddress = "127.0.0.1:0"
	if err := ccfg.Validate(); err != nil {
		t.Fatal(err)
	}
	clog, _ := newTestLogger(t)
	ts.client = startInstance(t, ccfg, clog)
	ts.waitState(t, 0, session.Ready)
	ts.waitState(t, 1, session.Ready)

	url := "http://" + ts.client.HTTPAddr().String() + "/"
	for i := range 3 {
		code, got := getStatusBody(t, callerClient(), url)
		if code != 200 || got != string(body) {
			t.Fatalf("GET %d: %d, %d bytes", i, code, len(got))
		}
	}

	admin := "http://" + ts.client.AdminAddr().String()
	m := scrape(t, admin+"/metrics")
	for _, server := range []string{serverName, server2Name} {
		for _, k := range []string{`ptproxy_fec_recovered_datagrams_total{server="` + server + `"}`,
			`ptproxy_fec_datagrams_total{direction="received",kind="data",server="` + server + `"}`} {
			if _, ok := m[k]; !ok {
				t.Errorf("/metrics has no %s", k)
			}
		}
	}
	// Every answer came over the first server's lossy path (priority).
	if v := m[`ptproxy_fec_recovered_datagrams_total{server="`+serverName+`"}`]; v == 0 {
		t.Errorf("the first server's session recovered %v datagrams, want some", v)
	}
	st := fetchStatus(t, admin)
	if st.FEC == nil || len(st.Sessions) != 2 || st.Sessions[0].FEC == nil || st.Sessions[1].FEC == nil {
		t.Fatalf("status: fec %+v, sessions %+v", st.FEC, st.Sessions)
	}
	if st.Sessions[0].FEC.Recovered == 0 {
		t.Errorf("first session's fec %+v, want datagrams recovered", st.Sessions[0].FEC)
	}
	// One snapshot of the counters: the top level is the sum.
	if s0, s1 := st.Sessions[0].FEC, st.Sessions[1].FEC; st.FEC.DataReceived != s0.DataReceived+s1.DataReceived ||
		st.FEC.Recovered != s0.Recovered+s1.Recovered || s1.DataReceived >= s0.DataReceived {
		t.Errorf("top-level fec %+v, sessions %+v and %+v", st.FEC, s0, s1)
	}
	var out strings.Builder
	writeStatus(&out, &st, st.Started)
	if strings.Count(out.String(), ", fec recovered ") != 2 {
		t.Errorf("ptproxy status: want a fec part on both session lines:\n%s", out.String())
	}
}
