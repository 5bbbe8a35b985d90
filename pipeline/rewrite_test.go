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
//	tunnel    what crosses HTTP/3: HEADERS (pseudo-header fields, then the
//	          fields with lowercase names, sorted by name, duplicates in
//	          order, as quic-go would encode them), DATA frames (Go-quoted),
//	          and a trailing HEADERS section for trailers
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
// The HTTP/3 hop is simulated, not run: rwEncodeRequest mirrors quic-go
// v0.65.0 http3 requestWriter.encodeHeaders (field order, the fields it
// skips, the single User-Agent rule, content-length from
// shouldSendReqContentLength, the trailer declaration), rwServerRequest
// mirrors requestFromHeaders (Header.Add canonicalisation, content-length
// parsing, Host from :authority, RequestURI = :path, Cookie joining,
// extractAnnouncedTrailers), rwRecorder mirrors responseWriter
// (WriteHeader's Date, encodeHeader's trailer exclusion) and
// rwClientResponse mirrors updateResponseFromHeaders. Map iteration is
// replaced by sorted iteration so the files are deterministic. The
// end-to-end tests with real QUIC live in internal/e2e.

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"golang.org/x/tools/txtar"

	"github.com/ptproxy/ptproxy/httpio"
)

var rwUpdate = flag.Bool("update", false, "rewrite the golden files under testdata/rewrite and testdata/synth")

// rwNow is the fixed clock of the golden files.
var rwNow = time.Date(2026, time.March, 1, 12, 0, 0, 0, time.UTC)

// rwH3Date is what the simulated http3 server adds when the Date key is
// absent; it never appears in a golden file because WriteHTTP3ResponseHead
// suppresses it.
const rwH3Date = "Thu, 01 Jan 1970 00:00:00 GMT"

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

// rwBody is a body as the source stage hands it on: one piece per chunk
// (chunked) or per read, and the trailers.
type rwBody struct {
	pieces   [][]byte
	trailers httpio.Header
}

// rwReadBody reads the body of the message r just read, splitting it where
// chunks end.
func rwReadBody(r *httpio.Reader) (rwBody, error) {
	var b rwBody
	var cur []byte
	buf := make([]byte, ChunkSize)
	for {
		n, chunkEnd, err := r.ReadBody(buf)
		cur = append(cur, buf[:n]...)
		if (chunkEnd || err != nil) && len(cur) > 0 {
			b.pieces = append(b.pieces, cur)
			cur = nil
		}
		if err == io.EOF {
			b.trailers = r.Trailers().Clone()
			return b, nil
		}
		if err != nil {
			return b, err
		}
	}
}

func rwRequestCase(t *testing.T, pol rwPolicy, in []byte) rwResult {
	// Client: HTTP/1.1 in.
	r := httpio.NewReader(bytes.NewReader(in), httpio.Limits{})
	var req httpio.Request
	if err := r.ReadRequest(&req); err != nil {
		return rwErr(NewError(KindBadRequest, ClientSide, MsgBadRequest, err))
	}
	head, herr := RequestHead(&req, pol.clientPeer)
	if herr != nil {
		return rwErr(herr)
	}
	body, err := rwReadBody(r)
	if err != nil {
		return rwErr(NewError(KindBadRequest, ClientSide, MsgBadRequest, err))
	}
	if herr := Normalize(head, pol.client); herr != nil {
		return rwErr(herr)
	}

	// Client: the HTTP/3 request, as quic-go encodes it.
	h3req := HTTP3Request(t.Context(), head)
	if head.Body.Kind != httpio.NoBody && !(head.Body.Kind == httpio.LengthBody && head.Body.Length == 0) {
		h3req.Body = io.NopCloser(bytes.NewReader(nil)) // the client sets a body reader
	}
	fields, err := rwEncodeRequest(h3req)
	if err != nil {
		return rwErr(NewError(KindUpstream, ClientSide, MsgSendingRequest, err))
	}
	var trailers []rwField
	for _, f := range body.trailers {
		if rwValidTrailer(f.Name) {
			trailers = append(trailers, rwField{strings.ToLower(f.Name), f.Value})
		}
	}
	rwSortFields(trailers)
	tunnel := rwRenderTunnel(fields, body.pieces, trailers)

	// Server: the request the http3 server hands to the handler.
	sreq, err := rwServerRequest(fields)
	if err != nil {
		t.Fatalf("simulated http3 server refuses the request: %v", err)
	}
	shead := HeadFromHTTP3Request(sreq, pol.serverPeer)
	if shead.Body.Kind == httpio.ChunkedBody && len(body.pieces) == 0 && len(trailers) == 0 {
		// The server source makes a body of unknown length that ends right
		// after the head a NoBody (REFERENCE 5.4).
		shead.Body = httpio.Framing{Kind: httpio.NoBody}
	}
	if herr := Normalize(shead, pol.server); herr != nil {
		return rwErr(herr)
	}

	// Server: HTTP/1.1 to the origin, through the forwarder's own writers
	// (writeOriginHead, then upload for a body, as originRoundTrip runs
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
	} else {
		in := prefilled(rwBodyMsgs(body.pieces, rwTrailerHeader(rwTrailerMap(trailers)))...)
		if err := upload(t.Context(), w, shead.Body.Kind == httpio.ChunkedBody, in); err != nil {
			t.Fatal(err)
		}
	}
	return rwResult{tunnel: tunnel, out: out.Bytes()}
}

// rwBodyMsgs is a body as the stages pass it: one Chunk per piece, then
// an End with the trailers.
func rwBodyMsgs(pieces [][]byte, trailers httpio.Header) []Msg {
	var msgs []Msg
	for _, p := range pieces {
		c := NewChunk()
		c.Data = append(c.Data[:0], p...)
		msgs = append(msgs, c)
	}
	return append(msgs, &End{Trailers: trailers})
}

func rwResponseCase(t *testing.T, pol rwPolicy, in []byte) rwResult {
	// Server: HTTP/1.1 from the origin.
	r := httpio.NewReader(bytes.NewReader(in), httpio.Limits{})
	var resp httpio.Response
	if err := r.ReadResponse(&resp, pol.method); err != nil {
		return rwErr(originError(err))
	}
	head := ResponseHead(&resp)
	body, err := rwReadBody(r)
	if err != nil {
		return rwErr(originError(err))
	}

	// Server: the HTTP/3 response, written by the server sink
	// (writeHTTP3Response) into a recorder that encodes the head as
	// quic-go does and keeps each Write as one DATA frame.
	rec := &rwRecorder{header: http.Header{}}
	head.Method = pol.method
	if err := RunFrom(t.Context(), prefilled(append([]Msg{head}, rwBodyMsgs(body.pieces, body.trailers)...)...), writeHTTP3Response(rec, nil, nil)); err != nil {
		t.Fatalf("server sink: %v", err)
	}
	trailers := rec.trailers()
	if !bodyAllowed(head.Status) || pol.method == http.MethodHead {
		// quic-go's responseWriter drops a body it may not send.
		rec.data = nil
	}
	body.pieces = rec.data
	tunnel := rwRenderTunnel(rec.fields, body.pieces, trailers)

	// Client: the response quic-go's client returns.
	cresp, err := rwClientResponse(rec.fields)
	if err != nil {
		t.Fatalf("simulated http3 client refuses the response: %v", err)
	}
	ch := HeadFromHTTP3Response(cresp, pol.method)
	ch.Major, ch.Minor, ch.Close = pol.callerMajorMinor[0], pol.callerMajorMinor[1], pol.close

	// Client: HTTP/1.1 to the caller, written by the client sink
	// (writeResponses) onto a connection that records the bytes.
	return rwResult{tunnel: tunnel, out: rwClientSink(t, ch, body.pieces, rwTrailerHeader(rwTrailerMap(trailers)))}
}

// rwClientSink runs the client sink for one response and returns the
// bytes it wrote to the caller's connection.
func rwClientSink(t *testing.T, h *Head, pieces [][]byte, trailers httpio.Header) []byte {
	t.Helper()
	conn := &rwConn{}
	w := httpio.NewWriter(conn, httpio.TitleCase)
	defer w.Release()
	msgs := append([]Msg{h}, rwBodyMsgs(pieces, trailers)...)
	if err := RunFrom(t.Context(), prefilled(msgs...), writeResponses(conn, w, &ClientOptions{Now: func() time.Time { return rwNow }})); err != nil {
		t.Fatalf("client sink: %v", err)
	}
	return conn.out.Bytes()
}

// rwConn is the caller's side of a connection as the client sink sees it:
// it records what is written.
type rwConn struct {
	net.Conn // nil: only the methods below are called
	out      bytes.Buffer
}

func (c *rwConn) Write(p []byte) (int, error)      { return c.out.Write(p) }
func (c *rwConn) SetWriteDeadline(time.Time) error { return nil }

func rwTrailerHeader(m http.Header) httpio.Header {
	var h httpio.Header
	for _, k := range sortedKeys(m) {
		for _, v := range m[k] {
			h = append(h, httpio.Field{Name: k, Value: v})
		}
	}
	return h
}

func rwErr(e *Error) rwResult {
	return rwResult{err: fmt.Sprintf("%d %s: %s", e.Status, e.Side, strings.TrimSuffix(SynthBody(e), "\n"))}
}

type rwField struct{ name, value string }

func rwSortFields(f []rwField) {
	slices.SortStableFunc(f, func(a, b rwField) int { return strings.Compare(a.name, b.name) })
}

func rwRenderTunnel(fields []rwField, pieces [][]byte, trailers []rwField) string {
	var b strings.Builder
	b.WriteString("HEADERS\n")
	for _, f := range fields {
		fmt.Fprintf(&b, "%s: %s\n", f.name, f.value)
	}
	for _, p := range pieces {
		fmt.Fprintf(&b, "DATA %s\n", strconv.Quote(string(p)))
	}
	if len(trailers) > 0 {
		b.WriteString("HEADERS\n")
		for _, f := range trailers {
			fmt.Fprintf(&b, "%s: %s\n", f.name, f.value)
		}
	}
	return b.String()
}

// rwBadTrailer is httpguts.ValidTrailerHeader's list (x/net).
var rwBadTrailer = []string{
	"Authorization", "Cache-Control", "Connection", "Content-Encoding", "Content-Length",
	"Content-Range", "Content-Type", "Expect", "Host", "Keep-Alive", "Max-Forwards", "Pragma",
	"Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection", "Range", "Realm", "Te",
	"Trailer", "Transfer-Encoding", "Www-Authenticate",
}

func rwValidTrailer(name string) bool {
	name = textproto.CanonicalMIMEHeaderKey(name)
	return !strings.HasPrefix(name, "If-") && !slices.Contains(rwBadTrailer, name)
}

// rwEncodeRequest mirrors http3 requestWriter.encodeHeaders (quic-go
// v0.65.0), iterating maps in sorted order.
func rwEncodeRequest(req *http.Request) ([]rwField, error) {
	host := req.Host
	if host == "" {
		host = req.URL.Host
	}
	if host == "" || strings.ContainsAny(host, " \t\r\n/") {
		return nil, errors.New("http3: invalid Host header")
	}
	path := req.URL.RequestURI()
	if !rwValidPseudoPath(path) {
		orig := path
		path = strings.TrimPrefix(path, req.URL.Scheme+"://"+host)
		if !rwValidPseudoPath(path) {
			return nil, fmt.Errorf("invalid request :path %q", orig)
		}
	}
	var trailers string
	if len(req.Trailer) > 0 {
		var keys []string
		for _, k := range sortedKeys(req.Trailer) {
			if rwValidTrailer(k) {
				keys = append(keys, k)
			}
		}
		trailers = strings.Join(keys, ", ")
	}
	f := []rwField{{":authority", host}, {":method", req.Method}, {":path", path}, {":scheme", req.URL.Scheme}}
	if trailers != "" {
		f = append(f, rwField{"trailer", trailers})
	}
	didUA := false
	for _, k := range sortedKeys(req.Header) {
		vv := req.Header[k]
		switch strings.ToLower(k) {
		case "host", "content-length", "connection", "proxy-connection", "transfer-encoding", "upgrade", "keep-alive":
			continue
		case "user-agent":
			didUA = true
			if len(vv) < 1 {
				continue
			}
			vv = vv[:1]
			if vv[0] == "" {
				continue
			}
		}
		for _, v := range vv {
			f = append(f, rwField{strings.ToLower(k), v})
		}
	}
	cl := int64(0)
	if req.Body != nil && req.Body != http.NoBody {
		cl = req.ContentLength
		if cl == 0 {
			cl = -1
		}
	}
	if cl > 0 || cl == 0 && (req.Method == "POST" || req.Method == "PUT" || req.Method == "PATCH") {
		f = append(f, rwField{"content-length", strconv.FormatInt(cl, 10)})
	}
	if !didUA {
		f = append(f, rwField{"user-agent", "quic-go HTTP/3"})
	}
	return f, nil
}

func rwValidPseudoPath(v string) bool { return len(v) > 0 && v[0] == '/' || v == "*" }

// rwServerRequest mirrors http3 requestFromHeaders (quic-go v0.65.0).
func rwServerRequest(fields []rwField) (*http.Request, error) {
	var path, method, authority string
	hdr := http.Header{}
	cl := int64(-1)
	for _, f := range fields {
		switch f.name {
		case ":path":
			path = f.value
		case ":method":
			method = f.value
		case ":authority":
			authority = f.value
		case ":scheme":
		case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
			return nil, fmt.Errorf("invalid header field name: %q", f.name)
		case "te":
			if f.value != "trailers" {
				return nil, fmt.Errorf("invalid TE header field value: %q", f.value)
			}
			hdr.Add(f.name, f.value)
		case "content-length":
			n, err := strconv.ParseUint(f.value, 10, 63)
			if err != nil {
				return nil, err
			}
			cl = int64(n)
			hdr.Set("Content-Length", f.value)
		default:
			hdr.Add(f.name, f.value)
		}
	}
	if hosts := hdr["Host"]; len(hosts) > 0 && hosts[0] != authority {
		return nil, errors.New(":authority and Host header field values do not match")
	}
	if len(hdr["Cookie"]) > 0 {
		hdr.Set("Cookie", strings.Join(hdr["Cookie"], "; "))
	}
	if path == "" || authority == "" {
		return nil, errors.New(":path and :authority must not be empty")
	}
	if !strings.HasPrefix(path, "/") && !(method == http.MethodOptions && path == "*") {
		return nil, fmt.Errorf("invalid :path: %q", path)
	}
	u, err := url.ParseRequestURI(path)
	if err != nil {
		return nil, err
	}
	req := &http.Request{
		Method: method, URL: u, Proto: "HTTP/3.0", ProtoMajor: 3,
		Header: hdr, ContentLength: cl, Host: authority, RequestURI: path,
	}
	req.Trailer = rwExtractTrailers(hdr)
	return req, nil
}

// rwTrailerMap is what quic-go stores in Request.Trailer or
// Response.Trailer once the trailing HEADERS frame has been read: a new map
// of the received fields, declared or not.
func rwTrailerMap(trailers []rwField) http.Header {
	m := http.Header{}
	for _, f := range trailers {
		m.Add(f.name, f.value)
	}
	return m
}

func rwExtractTrailers(h http.Header) http.Header {
	raw, ok := h["Trailer"]
	if !ok {
		return nil
	}
	tr := http.Header{}
	for _, v := range raw {
		for s := range strings.SplitSeq(v, ",") {
			tr[http.CanonicalHeaderKey(textproto.TrimString(s))] = nil
		}
	}
	delete(h, "Trailer")
	return tr
}

// rwRecorder mirrors the http3 server's responseWriter: the head encoding,
// one DATA frame per Write, and trailers from the TrailerPrefix keys.
type rwRecorder struct {
	header http.Header
	fields []rwField
	status int
	data   [][]byte
}

func (r *rwRecorder) Header() http.Header { return r.header }
func (r *rwRecorder) Flush()              {}

func (r *rwRecorder) Write(p []byte) (int, error) {
	if r.status == 0 {
		r.WriteHeader(http.StatusOK)
	}
	if len(p) > 0 {
		r.data = append(r.data, bytes.Clone(p))
	}
	return len(p), nil
}

// trailers are the trailer fields the handler set, as quic-go sends them
// (lowercase names, sorted, only valid trailer names).
func (r *rwRecorder) trailers() []rwField {
	var out []rwField
	for _, k := range sortedKeys(r.header) {
		name, ok := strings.CutPrefix(k, http.TrailerPrefix)
		if !ok || !rwValidTrailer(http.CanonicalHeaderKey(name)) {
			continue
		}
		for _, v := range r.header[k] {
			out = append(out, rwField{strings.ToLower(name), v})
		}
	}
	rwSortFields(out)
	return out
}

func (r *rwRecorder) WriteHeader(status int) {
	r.status = status
	if _, ok := r.header["Date"]; !ok && status >= 200 {
		r.header.Set("Date", rwH3Date)
	}
	declared := map[string]bool{}
	for _, v := range r.header["Trailer"] {
		for s := range strings.SplitSeq(v, ",") {
			k := textproto.CanonicalMIMEHeaderKey(strings.TrimSpace(s))
			if rwValidTrailer(k) {
				declared[k] = true
			}
		}
	}
	r.fields = []rwField{{":status", strconv.Itoa(status)}}
	for _, k := range sortedKeys(r.header) {
		if declared[k] || strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		for _, v := range r.header[k] {
			r.fields = append(r.fields, rwField{strings.ToLower(k), v})
		}
	}
}

// rwClientResponse mirrors http3 updateResponseFromHeaders.
func rwClientResponse(fields []rwField) (*http.Response, error) {
	resp := &http.Response{Proto: "HTTP/3.0", ProtoMajor: 3, Header: http.Header{}, ContentLength: -1}
	for _, f := range fields {
		switch f.name {
		case ":status":
			n, err := strconv.Atoi(f.value)
			if err != nil {
				return nil, err
			}
			resp.StatusCode = n
			resp.Status = f.value + " " + http.StatusText(n)
		case "content-length":
			n, err := strconv.ParseUint(f.value, 10, 63)
			if err != nil {
				return nil, err
			}
			resp.ContentLength = int64(n)
			resp.Header.Set("Content-Length", f.value)
		default:
			resp.Header.Add(f.name, f.value)
		}
	}
	resp.Trailer = rwExtractTrailers(resp.Header)
	return resp, nil
}
