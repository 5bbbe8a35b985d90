package main

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"syscall"
	"testing"
)

// TestSIGHUPReload: SIGHUP makes a running server re-read its file. A new
// origin address takes effect for the next requests, systemd hears
// RELOADING=1 then READY=1; a broken file is refused with a log line that
// names the problem, and the process keeps serving with what it had.
func TestSIGHUPReload(t *testing.T) {
	a := startOrigin(t)
	lb := startOriginB(t)

	s := writeConfigs(t, a.addr, 2000)
	srvSock, cliSock := newNotifySock(t), newNotifySock(t)
	server := startProc(t, "server", s.serverCfg, sdEnv(srvSock)...)
	eventually(t, "server READY", func() bool { return srvSock.index("READY=1") >= 0 })
	startProc(t, "client", s.client, sdEnv(cliSock)...)
	eventually(t, "client READY", func() bool { return cliSock.index("READY=1") >= 0 })
	get := func() string {
		resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Get("http://" + s.httpAddr + "/x")
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if got := get(); got != "done /x" {
		t.Fatalf("before the reload: %q", got)
	}

	raw, err := os.ReadFile(s.serverCfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(s.serverCfg, []byte(strings.Replace(string(raw), a.addr, lb.Addr().String(), 1)), 0o644); err != nil {
		t.Fatal(err)
	}
	server.signal(t, syscall.SIGHUP)
	eventually(t, "requests at the new origin", func() bool { return get() == "B /x" })
	// The new origin serves as soon as the configuration is swapped; the
	// log line and READY=1 follow it, so each is awaited, not sampled.
	eventually(t, "READY=1 after RELOADING=1", func() bool {
		i := srvSock.index("RELOADING=1")
		return i >= 0 && strings.Contains(strings.Join(srvSock.all()[i:], "\n"), "READY=1")
	})
	eventually(t, "the reload log line", func() bool {
		return strings.Contains(server.stderr.String(), `"msg":"configuration reloaded"`)
	})

	if err := os.WriteFile(s.serverCfg, []byte("[general]\nmode = \"Server\"\nquic_port = \"many\"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	server.signal(t, syscall.SIGHUP)
	eventually(t, "the refusal logged", func() bool {
		return strings.Contains(server.stderr.String(), `"msg":"configuration reload refused"`) &&
			strings.Contains(server.stderr.String(), "general.quic_port")
	})
	if got := get(); got != "B /x" {
		t.Fatalf("after a refused reload: %q", got)
	}
	server.signal(t, syscall.SIGTERM)
	if code := server.exitCode(t); code != 0 {
		t.Fatalf("server exit %d", code)
	}
}

// TestSIGHUPSwitchesRouteDuringDownload: the client's SIGHUP adds a route
// to the server's endpoint "b" while a slow request on the default
// endpoint is in flight: requests matching the route go to origin B from
// then on, and the slow request completes on the default route.
func TestSIGHUPSwitchesRouteDuringDownload(t *testing.T) {
	a := startOrigin(t)
	lb := startOriginB(t)

	s := writeConfigs(t, a.addr, 2000)
	f, err := os.OpenFile(s.serverCfg, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	fmt.Fprintf(f, "\n[[origin_groups]]\nname = \"b\"\naddresses = [%q]\n\n[[endpoints]]\nname = \"b\"\norigin_group = \"b\"\n", lb.Addr().String())
	f.Close()
	srvSock, cliSock := newNotifySock(t), newNotifySock(t)
	startProc(t, "server", s.serverCfg, sdEnv(srvSock)...)
	eventually(t, "server READY", func() bool { return srvSock.index("READY=1") >= 0 })
	client := startProc(t, "client", s.client, sdEnv(cliSock)...)
	eventually(t, "client READY", func() bool { return cliSock.index("READY=1") >= 0 })
	get := func(path string) string {
		resp, err := (&http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}).Get("http://" + s.httpAddr + path)
		if err != nil {
			return "error: " + err.Error()
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return string(body)
	}
	if got := get("/b/x"); got != "done /b/x" {
		t.Fatalf("before the reload: %q", got)
	}
	slow := fire(s.httpAddr, "/slow", 1)
	eventually(t, "the slow request at the origin", func() bool { return a.entered.Load() == 1 })

	f, err = os.OpenFile(s.client, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(f, "\n[[routes]]\npath_prefix = \"/b/\"\nendpoint = \"b\"\nstrip_prefix = true\n")
	f.Close()
	client.signal(t, syscall.SIGHUP)
	eventually(t, "the new route", func() bool { return get("/b/x") == "B /x" })
	a.free()
	r := <-slow
	if r.err != nil || r.status != 200 || r.body != "done /slow" {
		t.Fatalf("the request in flight across the reload: %d %q %v", r.status, r.body, r.err)
	}
}

// startOriginB serves "B <path>" on loopback until the test ends.
func startOriginB(t *testing.T) net.Listener {
	t.Helper()
	lb, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	b := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "B "+r.URL.Path) })}
	go b.Serve(lb)
	t.Cleanup(func() { b.Close() })
	return lb
}
