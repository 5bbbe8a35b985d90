package httpio

import (
	"errors"
	"io"
	"strings"
	"testing"
)

func TestUpgradeProtocol(t *testing.T) {
	for _, c := range []struct {
		name, head string
		want       string
	}{
		{"websocket", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", "websocket"},
		{"case and lists", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, UPGRADE\r\nUpgrade: foo, WebSocket\r\n\r\n", "websocket"},
		{"no connection token", "GET /ws HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\n\r\n", ""},
		{"no upgrade field", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\n\r\n", ""},
		{"other protocol", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: h2c\r\n\r\n", ""},
		{"versioned name", "GET / HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket/13\r\n\r\n", ""},
		{"POST", "POST /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", ""},
		{"with a body", "GET /ws HTTP/1.1\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\nContent-Length: 1\r\n\r\nx", ""},
		{"HTTP/1.0", "GET /ws HTTP/1.0\r\nHost: a\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", ""},
	} {
		r := NewReader(strings.NewReader(c.head), Limits{})
		var req Request
		if err := r.ReadRequest(&req); err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		if got := UpgradeProtocol(&req, "websocket"); got != c.want {
			t.Errorf("%s: %q, want %q", c.name, got, c.want)
		}
		r.Release()
	}
}

// TestReadUpgradeResponse: a 101 to the protocol asked for ends the HTTP
// part of the connection, and the bytes after its head (read in the same
// read) come back through ReadRaw, then the source's; a 101 to another
// protocol, or to a request that asked for none, is refused; another
// answer is read as usual.
func TestReadUpgradeResponse(t *testing.T) {
	in := "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: x\r\n\r\n\x81\x02hi" + strings.Repeat("z", 10000)
	r := NewReader(strings.NewReader(in), Limits{})
	defer r.Release()
	var resp Response
	if err := r.ReadUpgradeResponse(&resp, "websocket"); err != nil || resp.Status != 101 || resp.Body.Kind != NoBody {
		t.Fatalf("101: %v status %d body %v", err, resp.Status, resp.Body.Kind)
	}
	if resp.Header.Get("Sec-WebSocket-Accept") != "x" {
		t.Fatalf("fields: %v", resp.Header)
	}
	rest, err := io.ReadAll(readerFunc(r.ReadRaw))
	if err != nil || string(rest) != "\x81\x02hi"+strings.Repeat("z", 10000) {
		t.Fatalf("raw bytes: %q %v", rest, err)
	}

	for _, c := range []struct {
		name, in, proto string
		status          int
	}{
		{"other protocol", "HTTP/1.1 101 Switching Protocols\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n", "websocket", 0},
		{"no Upgrade field", "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\n\r\n", "websocket", 0},
		{"refused", "HTTP/1.1 403 Forbidden\r\nContent-Length: 2\r\n\r\nno", "websocket", 403},
	} {
		r := NewReader(strings.NewReader(c.in), Limits{})
		var resp Response
		err := r.ReadUpgradeResponse(&resp, c.proto)
		if c.status == 0 {
			var herr *Error
			if !errors.As(err, &herr) || herr.Kind != ErrUnsupportedResponse {
				t.Errorf("%s: %v, want ErrUnsupportedResponse", c.name, err)
			}
		} else if err != nil || resp.Status != c.status || resp.Body.Kind != LengthBody {
			t.Errorf("%s: %v status %d", c.name, err, resp.Status)
		}
		r.Release()
	}
	// Without an upgrade asked for, a 101 stays refused.
	r2 := NewReader(strings.NewReader(in), Limits{})
	defer r2.Release()
	if err := r2.ReadResponse(&resp, "GET"); err == nil {
		t.Fatal("101 to a plain request accepted")
	}
}

type readerFunc func([]byte) (int, error)

func (f readerFunc) Read(p []byte) (int, error) { return f(p) }
