package pipeline

// Golden tests of the synthetic responses: testdata/synth/<status>-<cause>.txtar.
//
// Sections:
//
//	error     "key: value" lines: kind (bad request, method not allowed,
//	          unavailable, draining, upstream, upstream timeout), side
//	          (client, server), msg, err (the cause's text; none if absent);
//	          or origin: refused|unreachable|timeout|closed|invalid, a real
//	          origin failure of that class classified by originError
//	in.http   instead of error: a request the client's parser or RequestHead
//	          refuses; the error is built as the client builds it
//	tunnel    server-side errors only: the response as it crosses HTTP/3
//	out.http  the head the caller receives (client side: as the client sink
//	          writes a Fail, Connection: close; server side: the relayed
//	          response), Date fixed at rwNow, LF for CRLF as in rewrite_test.go
//	body.raw  the body, byte for byte (it ends in a bare LF)
//
// Regenerate with: go test ./pipeline -run Synth -update

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/tools/txtar"

	"github.com/ptproxy/ptproxy/httpio"
)

func TestSynthGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "synth", "*.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in testdata/synth")
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sec := rwSections(ar)
			var e *Error
			if in, ok := sec["in.http"]; ok {
				e = synthFromRequest(t, rwToCRLF(in))
			} else {
				e = synthFromSpec(t, sec["error"])
			}
			want := synthRender(t, e)
			rwCompare(t, file, ar, []string{"error", "in.http"}, want)
			if st := strings.SplitN(filepath.Base(file), "-", 2)[0]; st != strconv.Itoa(e.Status) {
				t.Errorf("file name says status %s, error has %d", st, e.Status)
			}
		})
	}
}

// synthFromRequest builds the error the client answers in with.
func synthFromRequest(t *testing.T, in []byte) *Error {
	t.Helper()
	r := httpio.NewReader(bytes.NewReader(in), httpio.Limits{})
	var req httpio.Request
	if err := r.ReadRequest(&req); err != nil {
		return NewError(KindBadRequest, ClientSide, MsgBadRequest, err)
	}
	if _, herr := RequestHead(&req, Peer{}); herr != nil {
		return herr
	}
	t.Fatal("in.http is not refused")
	return nil
}

func synthFromSpec(t *testing.T, data []byte) *Error {
	t.Helper()
	var (
		kind     Kind
		side     Side
		msg, cau string
		seenKind bool
	)
	for line := range strings.Lines(string(data)) {
		k, v, ok := strings.Cut(strings.TrimSpace(line), ":")
		if !ok {
			continue
		}
		v = strings.TrimSpace(v)
		switch k {
		case "kind":
			for i := range kindNames {
				if kindNames[i] == v {
					kind, seenKind = Kind(i), true
				}
			}
			if !seenKind {
				t.Fatalf("unknown kind %q", v)
			}
		case "side":
			switch v {
			case "client":
				side = ClientSide
			case "server":
				side = ServerSide
			default:
				t.Fatalf("unknown side %q", v)
			}
		case "msg":
			msg = v
		case "err":
			cau = v
		case "origin":
			// A real failure of the server forwarder, classified by the
			// function the forwarder uses.
			return originError(synthOriginFailure(t, v))
		default:
			t.Fatalf("unknown key %q", k)
		}
	}
	var err error
	if cau != "" {
		err = errors.New(cau)
	}
	return NewError(kind, side, msg, err)
}

// synthRender produces the sections for e.
func synthRender(t *testing.T, e *Error) []txtar.File {
	t.Helper()
	sh, sb := Synthesize(e)
	defer sb.Release()
	var files []txtar.File
	head := sh
	closeConn := true
	if e.Side == ServerSide {
		// The server sink writes it over HTTP/3; the client relays it.
		var tun bytes.Buffer
		m := serverWriting(&tun)
		k := &streamSink{s: m.server(), ctx: t.Context()}
		k.fail(e)
		if !m.srvClosed.Load() {
			t.Fatal("the synthetic response did not end the stream")
		}
		files = append(files, txtar.File{Name: "tunnel", Data: []byte(rwRenderH3(t, tun.Bytes(), http.MethodGet))})
		fh, err := clientReading(tun.Bytes()).cr.ReadHead()
		if err != nil {
			t.Fatal(err)
		}
		head = HeadFromH3Response(fh, http.MethodGet)
		closeConn = false
	}
	var out bytes.Buffer
	w := httpio.NewWriter(&out, httpio.TitleCase)
	if err := w.WriteResponseHead(head.Status, http.StatusText(head.Status), CallerResponseFields(head, rwNow, closeConn)); err != nil {
		t.Fatal(err)
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	body := append([]byte(nil), sb.Data...)
	return append(files,
		txtar.File{Name: "out.http", Data: rwToLF(t, out.Bytes())},
		txtar.File{Name: "body.raw", Data: body},
	)
}

func TestSynthesize(t *testing.T) {
	for _, tc := range []struct {
		e      *Error
		status int
		close  bool
		server string
		body   string
	}{
		{NewError(KindMethodNotAllowed, ClientSide, MsgConnectNotImplemented, nil), 405, true, "ptproxy client", "CONNECT requests not implemented yet\n"},
		{NewError(KindUnavailable, ClientSide, MsgTunnelDown, nil), 503, false, "ptproxy client", "tunnel not established\n"},
		{NewError(KindDraining, ServerSide, MsgDraining, nil), 503, false, "ptproxy server", "shutting down\n"},
		// The cause is for the log, not for the caller.
		{NewError(KindUpstream, ClientSide, MsgSendingRequest, errors.New("dial 10.0.0.1:20010: boom")), 502, false, "ptproxy client", "error sending request\n"},
		{NewError(KindUpstreamTimeout, ServerSide, MsgCouldNotProxy, errors.New("timeout")), 504, false, "ptproxy server", "could not proxy request\n"},
		{originError(&net.OpError{Op: "read", Net: "tcp", Err: os.ErrDeadlineExceeded}), 504, false, "ptproxy server", "could not proxy request: origin did not answer in time\n"},
		{NewError(KindUnavailable, ClientSide, MsgTunnelDown, fmt.Errorf("%w: connecting to 10.0.0.1:20010: timeout", ErrTunnelDown)), 503, false, "ptproxy client", "tunnel not established\n"},
		{NewError(KindBadRequest, ClientSide, MsgHostRequired, nil), 400, true, "ptproxy client", "Host header required\n"},
		{NewError(KindBadRequest, ClientSide, MsgBadRequest, &httpio.Error{Kind: httpio.ErrHeaderTooLarge, Status: 431}), 431, true, "ptproxy client", "bad request: httpio: header too large\n"},
		{NewError(KindBadRequest, ClientSide, MsgBadRequest, &httpio.Error{Kind: httpio.ErrUnsupportedTransferCoding, Status: 400, Detail: `"gzip"`}), 400, true, "ptproxy client", MsgBadTransferEncoding + "\n"},
	} {
		h, c := Synthesize(tc.e)
		if h.Status != tc.status || h.Close != tc.close || h.Header.Get("Server") != tc.server ||
			h.Header.Get("Content-Type") != "text/plain;charset=UTF-8" || string(c.Data) != tc.body ||
			h.Body.Kind != httpio.LengthBody || h.Body.Length != int64(len(tc.body)) {
			t.Errorf("Synthesize(%v) = %+v, %q; want status %d close %v server %q body %q", tc.e, h, c.Data, tc.status, tc.close, tc.server, tc.body)
		}
		c.Release()
	}
}

func TestSynthBodyBounded(t *testing.T) {
	long := strings.Repeat("é", ChunkSize) // 2 bytes each
	e := NewError(KindUpstream, ClientSide, MsgSendingRequest, nil)
	e.Public = long
	h, c := Synthesize(e)
	defer c.Release()
	if len(c.Data) > ChunkSize || c.Data[len(c.Data)-1] != '\n' || h.Body.Length != int64(len(c.Data)) {
		t.Fatalf("body of %d bytes, length %d", len(c.Data), h.Body.Length)
	}
	if !strings.HasPrefix(string(c.Data), MsgSendingRequest+": é") || !utf8Valid(c.Data) {
		t.Fatalf("body cut badly: %q...", c.Data[:40])
	}
}

func utf8Valid(b []byte) bool { return strings.ToValidUTF8(string(b), "\uFFFD") == string(b) }

func TestSynthErrorStatusAndText(t *testing.T) {
	cause := errors.New("dial: refused")
	for _, tc := range []struct {
		e      *Error
		status int
		text   string
	}{
		{NewError(KindBadRequest, ClientSide, "x", nil), 400, "x"},
		{NewError(KindBadRequest, ClientSide, "x", &httpio.Error{Kind: httpio.ErrLineTooLong, Status: 414}), 414, "x: httpio: line too long"},
		{NewError(KindBadRequest, ClientSide, "", &httpio.Error{Kind: httpio.ErrUnsupportedVersion, Status: 505}), 505, "httpio: unsupported version"},
		{NewError(KindBadRequest, ClientSide, "x", &httpio.Error{Kind: httpio.ErrBadStatus, Status: 200}), 400, "x: httpio: bad status code"},
		{NewError(KindMethodNotAllowed, ClientSide, "m", nil), 405, "m"},
		{NewError(KindUnavailable, ClientSide, "m", cause), 503, "m: dial: refused"},
		{NewError(KindDraining, ServerSide, "m", nil), 503, "m"},
		{NewError(KindUpstream, ServerSide, "m", cause), 502, "m: dial: refused"},
		{NewError(KindUpstreamTimeout, ServerSide, "m", cause), 504, "m: dial: refused"},
	} {
		if tc.e.Status != tc.status || tc.e.Error() != tc.text {
			t.Errorf("%v: status %d text %q, want %d %q", tc.e.Kind, tc.e.Status, tc.e.Error(), tc.status, tc.text)
		}
	}
	e := NewError(KindUpstream, ClientSide, "m", cause)
	if !errors.Is(e, cause) {
		t.Error("Unwrap does not reach the cause")
	}
	if ClientSide.String() != "client" || ServerSide.String() != "server" || KindUpstreamTimeout.String() != "upstream_timeout" {
		t.Error("String methods")
	}
}

// synthOriginFailure builds an error of the given class as the server
// forwarder meets it, with the details (addresses) that must not reach the
// caller.
func synthOriginFailure(t *testing.T, class string) error {
	t.Helper()
	addr := &net.TCPAddr{IP: net.IPv4(10, 1, 2, 3), Port: 8000}
	switch class {
	case "refused":
		return &originDialError{err: &net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: os.NewSyscallError("connect", syscall.ECONNREFUSED)}}
	case "unreachable":
		return &originDialError{err: &net.OpError{Op: "dial", Net: "tcp", Addr: addr, Err: os.NewSyscallError("connect", syscall.EHOSTUNREACH)}}
	case "timeout":
		return &net.OpError{Op: "read", Net: "tcp", Addr: addr, Err: os.ErrDeadlineExceeded}
	case "closed":
		return io.EOF
	case "invalid":
		r := httpio.NewReader(strings.NewReader("HTTP/1.1 2000 Nope\r\n\r\n"), httpio.Limits{})
		defer r.Release()
		var resp httpio.Response
		err := r.ReadResponse(&resp, "GET")
		if err == nil {
			t.Fatal("invalid response accepted")
		}
		return err
	}
	t.Fatalf("unknown origin failure %q", class)
	return nil
}
