package app

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"
)

// wsEchoOrigin accepts WebSocket connections on /ws and echoes every
// message until the client closes; it records the subprotocol asked for
// and whether the close handshake completed. /plain refuses the upgrade
// with an ordinary 403.
type wsEchoOrigin struct {
	closedClean atomic.Int32
	upgrades    atomic.Int32
	sawProtocol atomic.Value
}

func (o *wsEchoOrigin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		o.sawProtocol.Store(r.Header.Get("Sec-WebSocket-Protocol"))
		c, err := websocket.Accept(w, r, &websocket.AcceptOptions{Subprotocols: []string{"echo.v1"}})
		if err != nil {
			return
		}
		o.upgrades.Add(1)
		c.SetReadLimit(8 << 20)
		ctx := r.Context()
		for {
			typ, msg, err := c.Read(ctx)
			if err != nil {
				if websocket.CloseStatus(err) == websocket.StatusNormalClosure {
					o.closedClean.Add(1)
				}
				return
			}
			if err := c.Write(ctx, typ, msg); err != nil {
				return
			}
		}
	})
	mux.HandleFunc("/plain", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no websocket here", http.StatusForbidden)
	})
	return mux
}

// TestEndToEndWebSocket: a WebSocket client talks to a WebSocket origin
// through the pair (HTTP/1.1 upgrade, extended CONNECT over HTTP/3, HTTP/1.1
// upgrade again): the handshake's subprotocol and accept key come from the
// origin, text and binary messages (up to 1 MiB) echo byte for byte in both
// directions, several connections run at once over the one session, and
// the close handshake completes at both ends. An origin that refuses the
// upgrade answers as itself.
func TestEndToEndWebSocket(t *testing.T) {
	o := &wsEchoOrigin{}
	p := startPair(t, o.handler())
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // safety net
	defer cancel()
	wsURL := "ws://" + p.client.HTTPAddr().String()

	const conns = 4
	errs := make(chan error, conns)
	for i := range conns {
		go func() { errs <- wsEchoSession(ctx, wsURL+"/ws", i) }()
	}
	for range conns {
		if err := <-errs; err != nil {
			t.Error(err)
		}
	}
	if got := o.sawProtocol.Load(); got != "echo.v1" {
		t.Errorf("origin saw Sec-WebSocket-Protocol %q", got)
	}
	if n := o.upgrades.Load(); n != conns {
		t.Errorf("origin accepted %d upgrades, want %d", n, conns)
	}
	eventually(t, "close handshakes at the origin", func() bool { return o.closedClean.Load() == conns })

	// A refused upgrade is the origin's own answer, and the caller's
	// connection stays HTTP.
	_, resp, err := websocket.Dial(ctx, wsURL+"/plain", &websocket.DialOptions{HTTPClient: callerClient()})
	if err == nil || resp == nil || resp.StatusCode != http.StatusForbidden {
		t.Fatalf("refused upgrade: %v %v; want the origin's 403", resp, err)
	}
	if b, _ := io.ReadAll(resp.Body); !strings.Contains(string(b), "no websocket here") {
		t.Errorf("refused upgrade body %q", b)
	}
}

// wsEchoSession dials url, checks the subprotocol, echoes a few text and
// binary messages and closes normally.
func wsEchoSession(ctx context.Context, url string, i int) error {
	c, resp, err := websocket.Dial(ctx, url, &websocket.DialOptions{
		HTTPClient: callerClient(), Subprotocols: []string{"echo.v1"},
	})
	if err != nil {
		return err
	}
	defer c.CloseNow()
	c.SetReadLimit(8 << 20)
	if resp.StatusCode != http.StatusSwitchingProtocols || c.Subprotocol() != "echo.v1" {
		return errors.New("handshake: " + resp.Status + " subprotocol " + c.Subprotocol())
	}
	big := make([]byte, 1<<20)
	rand.Read(big)
	msgs := []struct {
		typ websocket.MessageType
		b   []byte
	}{
		{websocket.MessageText, []byte("hello " + strings.Repeat("x", i))},
		{websocket.MessageBinary, big},
		{websocket.MessageBinary, []byte{0}},
		{websocket.MessageText, bytes.Repeat([]byte("é"), 40000)},
	}
	for _, m := range msgs {
		if err := c.Write(ctx, m.typ, m.b); err != nil {
			return err
		}
		typ, got, err := c.Read(ctx)
		if err != nil {
			return err
		}
		if typ != m.typ || !bytes.Equal(got, m.b) {
			return errors.New("echo differs")
		}
	}
	return c.Close(websocket.StatusNormalClosure, "done")
}

// TestEndToEndWebSocketOriginGone: the origin's connection dying in the
// middle of a WebSocket session reaches the caller as the end of its
// connection, not a hang.
func TestEndToEndWebSocketOriginGone(t *testing.T) {
	var originConn atomic.Pointer[net.Conn]
	mux := http.NewServeMux()
	mux.HandleFunc("/ws", func(w http.ResponseWriter, r *http.Request) {
		c, err := websocket.Accept(w, r, nil)
		if err != nil {
			return
		}
		defer c.CloseNow()
		_, _, _ = c.Read(r.Context())
	})
	p := &pair{pki: newTestPKI(t)}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: mux, ConnState: func(c net.Conn, s http.ConnState) {
		if s == http.StateHijacked {
			originConn.Store(&c)
		}
	}}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	p.origin = ln.Addr().String()
	slog, _ := newTestLogger(t)
	p.server = startInstance(t, p.pki.serverConfig(p.origin), slog)
	clog, _ := newTestLogger(t)
	p.client = startInstance(t, p.pki.clientConfig(p.server.QUICAddr().(*net.UDPAddr).Port), clog)
	waitReady(t, p.client)

	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second) // safety net
	defer cancel()
	c, _, err := websocket.Dial(ctx, "ws://"+p.client.HTTPAddr().String()+"/ws", &websocket.DialOptions{HTTPClient: callerClient()})
	if err != nil {
		t.Fatal(err)
	}
	defer c.CloseNow()
	eventually(t, "origin connection hijacked", func() bool { return originConn.Load() != nil })
	(*originConn.Load()).Close()
	if _, _, err := c.Read(ctx); err == nil {
		t.Fatal("read after the origin went away succeeded")
	} else if ctx.Err() != nil {
		t.Fatal("the caller's connection did not end")
	}
}
