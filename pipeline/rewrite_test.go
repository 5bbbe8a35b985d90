package pipeline

// Golden tests of the forwarding rules, end to end through the pure
// functions: testdata/rewrite/request/*.txtar and
// testdata/rewrite/response/*.txtar.
//
// Each file is a txtar archive. Its comment says what the case is about.
// Sections:
//
//	policy    "key: value" lines (all optional):
//	            client.forwarded / server.forwarded: true|false (AddForwarded)
//	            client.for, client.by, server.for, server.by: peer addresses
//	            method: the request method a response answers (default GET)
//	            caller: HTTP/1.1 or HTTP/1.0, the caller's version (responses)
//	            close: true when the caller's connection closes (responses)
//	in.http   what the caller sends (requests) or the origin sends (responses)
//	tunnel    what crosses HTTP/3, decoded by the codec (httpio/h3): each
//	          HEADERS frame (pseudo-header fields, then the fields as they
//	          are on the wire: in order, duplicates kept, lower-case
//	          names), each DATA frame (Go-quoted), and a trailing HEADERS
//	          frame for trailers
//	out.http  the exact bytes the origin receives (requests) or the caller
//	          receives (responses; Date fixed at rwNow)
//	error     instead of tunnel/out.http when the message is refused:
//	          "<status> <side>: <synthetic body text>"
//
// Lines in files end in LF; the loader turns every LF of a *.http section
// into CRLF before use, and the bytes produced are turned back (they must
// not contain a bare LF). A Content-Length in in.http therefore counts the
// CR of every body line. testdata/** is marked -text in .gitattributes so
// checkouts keep the bytes.
//
// Regenerate with: go test ./pipeline -run Rewrite -update
// and review the diff: the files are the specification.
//
// Nothing is simulated: each case runs through the functions the client
// and the server run, with the HTTP/3 codec writing into a buffer that the
// other side reads. Requests: httpio reads the caller's bytes, RequestHead
// and Normalize, RequestH3Head, the client's body upload
// (clientUpload.send); then streamRequestHead, Normalize, writeOriginHead
// and the server's upload (uploadBody) write what the origin gets.
// Responses: httpio reads the origin's bytes, ResponseHead, the server
// sink (streamSink.head, relayOriginBody, streamSink.end); then HeadFromH3Response and the
// client sink (callerSink.head, callerSink.body) write what the caller
// gets.

import (
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/ptproxy/ptproxy/httpio/h3"
)

var rwUpdate = flag.Bool("update", false, "rewrite the golden files under testdata/rewrite and testdata/synth")

// rwNow is the fixed clock of the golden files.
var rwNow = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

func TestRewriteRequest(t *testing.T) {
	rwRunDir(t, "request", rwRequestCase)
}

func TestRewriteResponse(t *testing.T) {
	rwRunDir(t, "response", rwResponseCase)
}

// rwResult is what a case produces.
type rwResult struct {
	tunnel string
	out    []byte // CRLF bytes
	err    string // the error section, when refused
}

func rwRunDir(t *testing.T, dir string, run func(t *testing.T, pol rwPolicy, in []byte) rwResult) {
	files, err := filepath.Glob(filepath.Join("..", "testdata", "rewrite", dir, "*.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatalf("no golden files in testdata/rewrite/%s", dir)
	}
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txtar"), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sec := rwSections(ar)
			in, ok := sec["in.http"]
			if !ok {
				t.Fatal("no in.http section")
			}
			pol := rwParsePolicy(t, sec["policy"])
			res := run(t, pol, rwToCRLF(in))
			var want []txtar.File
			if res.err != "" {
				want = []txtar.File{{Name: "error", Data: []byte(res.err + "\n")}}
			} else {
				want = []txtar.File{
					{Name: "tunnel", Data: []byte(res.tunnel)},
					{Name: "out.http", Data: rwToLF(t, res.out)},
				}
			}
			rwCompare(t, file, ar, []string{"policy", "in.http"}, want)
		})
	}
}

// rwCompare checks the generated sections against the file, or rewrites
// the file with -update (keeping its comment and the input sections).
func rwCompare(t *testing.T, file string, ar *txtar.Archive, keep []string, want []txtar.File) {
	t.Helper()
	sec := rwSections(ar)
	if *rwUpdate {
		out := &txtar.Archive{Comment: ar.Comment}
		for _, name := range keep {
			if data, ok := sec[name]; ok {
				out.Files = append(out.Files, txtar.File{Name: name, Data: data})
			}
		}
		out.Files = append(out.Files, want...)
		if err := os.WriteFile(file, txtar.Format(out), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	names := map[string]bool{}
	for _, f := range want {
		names[f.Name] = true
		got, ok := sec[f.Name]
		if !ok {
			t.Errorf("section %s missing; want:\n%s", f.Name, f.Data)
			continue
		}
		if !bytes.Equal(got, f.Data) {
			t.Errorf("section %s differs\n--- file:\n%s--- got:\n%s", f.Name, got, f.Data)
		}
	}
	for _, f := range ar.Files {
		if !names[f.Name] && !slices.Contains(keep, f.Name) {
			t.Errorf("unexpected section %s (run with -update)", f.Name)
		}
	}
}

func rwSections(ar *txtar.Archive) map[string][]byte {
	m := make(map[string][]byte, len(ar.Files))
	for _, f := range ar.Files {
		m[f.Name] = f.Data
	}
	return m
}

func rwToCRLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }

func rwToLF(t *testing.T, b []byte) []byte {
	t.Helper()
	lf := bytes.ReplaceAll(b, []byte("\r\n"), []byte("\n"))
	if bytes.Count(lf, []byte("\n")) != bytes.Count(b, []byte("\r\n")) || bytes.Contains(lf, []byte("\r")) {
		t.Fatalf("output has a bare CR or LF, not representable in a *.http section: %q", b)
	}
	if len(lf) > 0 && lf[len(lf)-1] != '\n' {
		t.Fatalf("output does not end in CRLF, not representable in a *.http section: %q", b)
	}
	return lf
}

type rwPolicy struct {
	client, server   Policy
	clientPeer       Peer
	serverPeer       Peer
	method           string
	callerMajorMinor [2]int
	close            bool
}

func rwParsePolicy(t *testing.T, data []byte) rwPolicy {
	t.Helper()
	p := rwPolicy{
		client:           Policy{Side: ClientSide},
		server:           Policy{Side: ServerSide},
		clientPeer:       Peer{For: "192.0.2.10:51000", By: "127.0.0.1:8080", Proto: "http"},
		serverPeer:       Peer{For: "198.51.100.7:40443", By: "[::]:20010", Proto: "http3"},
		method:           "GET",
		callerMajorMinor: [2]int{1, 1},
	}
	for line := range strings.Lines(string(data)) {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			t.Fatalf("policy line %q: want key: value", line)
		}
		v = strings.TrimSpace(v)
		switch k {
		case "client.forwarded":
			p.client.AddForwarded = v == "true"
		case "server.forwarded":
			p.server.AddForwarded = v == "true"
		case "client.for":
			p.clientPeer.For = v
		case "client.by":
			p.clientPeer.By = v
		case "server.for":
			p.serverPeer.For = v
		case "server.by":
			p.serverPeer.By = v
		case "method":
			p.method = v
		case "caller":
			switch v {
			case "HTTP/1.1":
				p.callerMajorMinor = [2]int{1, 1}
			case "HTTP/1.0":
				p.callerMajorMinor = [2]int{1, 0}
			default:
				t.Fatalf("policy caller %q", v)
			}
		case "close":
			p.close = v == "true"
		default:
			t.Fatalf("unknown policy key %q", k)
		}
	}
	return p
}

func rwRequestCase(t *testing.T, pol rwPolicy, in []byte) rwResult {
	// Client: HTTP/1.1 in.
	r := httpio.NewReader(bytes.NewReader(in), httpio.Limits{})
	defer r.Release()
	var req httpio.Request
	if err := r.ReadRequest(&req); err != nil {
		return rwErr(NewError(KindBadRequest, ClientSide, MsgBadRequest, err))
	}
	head, herr := RequestHead(&req, pol.clientPeer)
	if herr != nil {
		return rwErr(herr)
	}
	if herr := Normalize(head, pol.client); herr != nil {
		return rwErr(herr)
	}

	// Client: the HTTP/3 request, head and body, as the exchange and its
	// upload write them.
	var tun bytes.Buffer
	cm := clientWriting(&tun)
	if err := cm.cw.WriteHead(RequestH3Head(head)); err != nil {
		t.Fatal(err)
	}
	if head.Body.Kind == httpio.ChunkedBody || head.Body.Kind == httpio.LengthBody && head.Body.Length > 0 {
		var u clientUpload
		u.send(r, cm.client(), head.Body.Kind == httpio.ChunkedBody, nil, func(error) {})
		if herr := u.bad.Load(); herr != nil {
			return rwErr(NewError(KindBadRequest, ClientSide, MsgBadRequest, herr))
		}
		if !u.sent.Load() {
			t.Fatal("the upload did not send the whole body")
		}
	} else {
		cm.cw.Close()
	}
	tunnel := rwRenderH3(t, tun.Bytes(), "")

	// Server: the request the session hands to the handler.
	sm := serverReading(tun.Bytes())
	h3head, err := sm.sr.ReadHead()
	if err != nil {
		t.Fatalf("the codec does not read the request back: %v", err)
	}
	sm.head = h3head
	shead, err := streamRequestHead(sm.server(), pol.serverPeer)
	if err != nil {
		t.Fatal(err)
	}
	if herr := Normalize(shead, pol.server); herr != nil {
		return rwErr(herr)
	}

	// Server: HTTP/1.1 to the origin, through the forwarder's own writers
	// (writeOriginHead, then uploadBody for a body, as roundTrip runs
	// them).
	var out bytes.Buffer
	w := httpio.NewWriter(&out, httpio.TitleCase)
	defer w.Release()
	if err := writeOriginHead(w, shead); err != nil {
		t.Fatal(err)
	}
	if shead.Body.Kind == httpio.NoBody || shead.Body.Kind == httpio.LengthBody && shead.Body.Length == 0 {
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
	} else if err := uploadBody(sm.server(), w, shead.Body.Kind == httpio.ChunkedBody, nil, nil); err != nil {
		t.Fatal(err)
	}
	return rwResult{tunnel: tunnel, out: out.Bytes()}
}

func rwResponseCase(t *testing.T, pol rwPolicy, in []byte) rwResult {
	// Server: HTTP/1.1 from the origin.
	r := httpio.NewReader(bytes.NewReader(in), httpio.Limits{})
	defer r.Release()
	var resp httpio.Response
	if err := r.ReadResponse(&resp, pol.method); err != nil {
		return rwErr(originError(err))
	}
	head := ResponseHead(&resp)
	head.Method = pol.method

	// Server: the HTTP/3 response, written by the server sink.
	var tun bytes.Buffer
	sm := serverWriting(&tun)
	k := &streamSink{s: sm.server(), ctx: t.Context()}
	if err := k.head(head); err != nil {
		t.Fatal(err)
	}
	trailers, err := relayOriginBody(r, k, resp.Body.Kind == httpio.ChunkedBody)
	if err != nil {
		return rwErr(originError(err))
	}
	if err := k.end(trailers); err != nil {
		t.Fatal(err)
	}
	tunnel := rwRenderH3(t, tun.Bytes(), pol.method)

	// Client: the response read off the stream and written to the caller
	// by the client sink.
	cm := clientReading(tun.Bytes())
	ts := cm.client()
	fh, err := ts.ReadHead()
	if err != nil {
		t.Fatalf("the codec does not read the response back: %v", err)
	}
	ch := HeadFromH3Response(fh, pol.method)
	ch.Major, ch.Minor, ch.Close = pol.callerMajorMinor[0], pol.callerMajorMinor[1], pol.close
	if ch.Body.Kind == httpio.NoBody {
		ts.SetNoBody()
	}
	return rwResult{tunnel: tunnel, out: rwClientSink(t, ch, ts)}
}

// rwClientSink runs the client sink for one response and returns the
// bytes it wrote to the caller's connection.
func rwClientSink(t *testing.T, h *Head, ts TunnelStream) []byte {
	t.Helper()
	conn := &rwConn{}
	var s callerSink
	s.init(conn, &ClientOptions{Now: func() time.Time { return rwNow }})
	defer s.release()
	if err := s.head(h); err != nil {
		t.Fatalf("client sink: %v", err)
	}
	if err := s.body(ts); err != nil {
		t.Fatalf("client sink: %v", err)
	}
	if err := s.flush(); err != nil {
		t.Fatal(err)
	}
	return conn.bytes()
}

// rwConn is the caller's side of a connection as the client sink sees it:
// it records what is written.
type rwConn struct {
	net.Conn // nil: only the methods below are called
	mu       sync.Mutex
	out      bytes.Buffer
}

func (c *rwConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.Write(p)
}

func (c *rwConn) bytes() []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	return bytes.Clone(c.out.Bytes())
}

func rwErr(e *Error) rwResult {
	return rwResult{err: fmt.Sprintf("%d %s: %s", e.Status, e.Side, strings.TrimSuffix(SynthBody(e), "\n"))}
}

// rwRenderH3 decodes the frames of one direction of a stream with the
// codec and renders them. method is "" for a request, else the method a
// response answers.
func rwRenderH3(t *testing.T, data []byte, method string) string {
	t.Helper()
	role := h3.ReadsRequest
	if method != "" {
		role = h3.ReadsResponse
	}
	r := newH3Reader(&bufEnd{in: bytes.NewReader(data)}, role)
	defer r.Release()
	var b strings.Builder
	for {
		h, err := r.ReadHead()
		if err != nil {
			t.Fatalf("the codec does not read the head back: %v", err)
		}
		b.WriteString("HEADERS\n")
		if method == "" {
			fmt.Fprintf(&b, ":method: %s\n:scheme: %s\n:authority: %s\n:path: %s\n", h.Method, h.Scheme, h.Authority, h.Path)
			if h.Protocol != "" {
				fmt.Fprintf(&b, ":protocol: %s\n", h.Protocol)
			}
		} else {
			fmt.Fprintf(&b, ":status: %d\n", h.Status)
		}
		for _, f := range h.Fields {
			fmt.Fprintf(&b, "%s: %s\n", f.Name, f.Value)
		}
		if method == "" || h.Status >= 200 {
			if method == http.MethodHead || method != "" && !bodyAllowed(h.Status) {
				r.SetNoBody()
			}
			break
		}
	}
	buf := make([]byte, 64<<10)
	for {
		n, err := r.NextData()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("the codec does not read the body back: %v", err)
		}
		var frame []byte
		for int64(len(frame)) < n {
			m, err := r.ReadData(buf[:min(n-int64(len(frame)), int64(len(buf)))])
			frame = append(frame, buf[:m]...)
			if err != nil && int64(len(frame)) < n {
				t.Fatalf("DATA frame cut: %v", err)
			}
		}
		fmt.Fprintf(&b, "DATA %s\n", strconv.Quote(string(frame)))
	}
	if t := r.Trailers(); len(t) > 0 {
		b.WriteString("HEADERS\n")
		for _, f := range t {
			fmt.Fprintf(&b, "%s: %s\n", f.Name, f.Value)
		}
	}
	return b.String()
}
