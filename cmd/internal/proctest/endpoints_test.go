package proctest

import (
	"crypto/sha256"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/ptproxy/ptproxy/session/nettest"
)

// TestTwoEndpointsInterop: one pair, two endpoints over its one session,
// each to an origin we did not write: nginx is the default endpoint, a
// Node.js http.createServer origin the endpoint "node", which the client
// routes /node/ to (prefix stripped). curl gets the same answers through
// the pair as from each origin directly, GET and a POST echoed by Node.
func TestTwoEndpointsInterop(t *testing.T) {
	curl := needTool(t, "curl", "curl")
	nginx := startOriginKind(t, nginxOrigin())
	node := startOriginKind(t, nodeOrigin("node", 0))
	e := newEnv(t)
	port := nettest.FreePort(t, "udp")
	serverCfg := e.serverConfig("server.toml", port, nginx.addr())
	appendTo(t, serverCfg, fmt.Sprintf("[[origin_groups]]\nname = \"node\"\naddresses = [%q]\n\n[[endpoints]]\nname = \"node\"\norigin_group = \"node\"\n", node.addr()))
	clientCfg := e.clientConfig("client.toml", port)
	appendTo(t, clientCfg, "[[routes]]\npath_prefix = \"/node/\"\nendpoint = \"node\"\nstrip_prefix = true\n")

	server := startProc(t, "server", serverCfg)
	server.waitLog("server listening", "accepting connections", 0, nil)
	client := startProc(t, "client", clientCfg)
	addr := client.httpAddr()
	client.waitLog("tunnel up", "session ready", 0, event("established"))

	// run returns curl's status code and body for url (extra curl args
	// before it).
	run := func(url string, args ...string) string {
		t.Helper()
		out, err := exec.Command(curl, append([]string{"-s", "-S", "-w", "\n%{http_code}"}, append(args, url)...)...).Output()
		if err != nil {
			t.Fatalf("curl %s: %v", url, err)
		}
		return string(out)
	}
	body := strings.Repeat("0123456789abcdef", 4096) // 64 KiB
	bodyFile := e.write("body.bin", body)
	for _, c := range []struct {
		what, direct, proxied string
		args                  []string
		want                  string // in the direct answer: the check is about something
	}{
		{"nginx GET (default endpoint)", nginx.base() + "/static.txt", "http://" + addr + "/static.txt", nil, "hello from nginx"},
		{"Node GET (endpoint node)", node.base() + "/static", "http://" + addr + "/node/static", nil, "hello from node"},
		{"Node POST echo (endpoint node)", node.base() + "/echo", "http://" + addr + "/node/echo", []string{"--data-binary", "@" + bodyFile}, fmt.Sprintf(`"length":65536,"sha256":"%x"`, sha256.Sum256([]byte(body)))},
	} {
		d, p := run(c.direct, c.args...), run(c.proxied, c.args...)
		if !strings.Contains(d, c.want) || !strings.HasSuffix(d, "\n200") {
			t.Fatalf("%s directly: %.200q", c.what, d)
		}
		if p != d {
			t.Errorf("%s through the pair differs:\n%.300q\ndirectly:\n%.300q", c.what, p, d)
		}
	}
}

// appendTo appends text to the file at path.
func appendTo(t *testing.T, path, text string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if _, err := f.WriteString("\n" + text); err != nil {
		t.Fatal(err)
	}
}
