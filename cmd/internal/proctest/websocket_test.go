package proctest

import (
	"encoding/json"
	"net"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/ptproxy/ptproxy/session/nettest"
)

// wsOutcome is what testdata/interop/ws.py's client reports.
type wsOutcome struct {
	Subprotocol string `json:"subprotocol"`
	CloseCode   *int   `json:"close_code"`
	Echoes      []struct {
		Type   string `json:"type"`
		Len    int    `json:"len"`
		SHA256 string `json:"sha256"`
		Match  bool   `json:"match"`
	} `json:"echoes"`
}

// TestWebSocketInterop runs a WebSocket client and server we did not write
// (Python's websockets, Debian python3-websockets) directly and through a
// ptproxy pair (HTTP/1.1 upgrade -> extended CONNECT over HTTP/3 ->
// HTTP/1.1 upgrade): the handshake negotiates the subprotocol, a text, a
// 1 MiB binary, a 140 KB text and an empty binary message echo byte for
// byte, and the server's close code (4001) reaches the client. Both runs
// must report the same.
func TestWebSocketInterop(t *testing.T) {
	py := pythonWith(t, "websockets", "python3-websockets")
	script := filepath.Join(interopDir(t), "ws.py")
	dir := t.TempDir()
	port := nettest.FreePort(t, "tcp")
	originAddr := net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
	origin := startPeerProc(t, "ws-origin", exec.Command(py, script, "server", "--port", strconv.Itoa(port)), dir)
	if err := origin.waitAccepting(originAddr); err != nil {
		t.Fatal(err)
	}
	e := newEnv(t)
	udp := nettest.FreePort(t, "udp")
	_, _, addr := startPair(t, e, originAddr, udp, udp)

	run := func(what, url string) wsOutcome {
		t.Helper()
		out, err := exec.Command(py, script, "client", "--url", url).Output()
		if err != nil {
			var stderr []byte
			if ee, ok := err.(*exec.ExitError); ok {
				stderr = ee.Stderr
			}
			t.Fatalf("%s: client failed: %v\n%s", what, err, stderr)
		}
		var o wsOutcome
		if err := json.Unmarshal(out, &o); err != nil {
			t.Fatalf("%s: client output %q: %v", what, out, err)
		}
		return o
	}
	direct := run("direct", "ws://"+originAddr+"/echo")
	proxied := run("through ptproxy", "ws://"+addr+"/echo")

	// The direct run is what the test is about: otherwise two broken runs
	// would compare equal.
	if direct.Subprotocol != "echo.v1" || direct.CloseCode == nil || *direct.CloseCode != 4001 || len(direct.Echoes) != 4 {
		t.Fatalf("direct run is not the scenario: %+v", direct)
	}
	for i, e := range direct.Echoes {
		if !e.Match {
			t.Fatalf("direct echo %d differs", i)
		}
	}
	dj, _ := json.Marshal(direct)
	pj, _ := json.Marshal(proxied)
	if string(dj) != string(pj) {
		t.Fatalf("through ptproxy:\n%s\ndirectly:\n%s", pj, dj)
	}
}
