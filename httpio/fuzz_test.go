package httpio

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// Differential fuzzing against net/http. The invariant: httpio never
// accepts (head and whole body) a message that net/http rejects; when both
// accept, they agree on what the message is.
//
// Seeds: the table-test inputs are added with f.Add, and
// testdata/fuzz/Fuzz{Request,Response} hold them as corpus files too
// (regenerate with `go test ./httpio -run TestWriteFuzzSeeds -seeds`) plus
// every crasher the fuzzer found.
//
// Known, deliberate differences handled below:
//   - httpio skips up to 4 leading CRLFs before a request-line (RFC 9112
//     2.2); net/http's ReadRequest does not (its server does after a POST),
//     so they are stripped before net/http sees the input.
//   - net/http moves Host into req.Host and Transfer-Encoding into
//     req.TransferEncoding, dedups identical Content-Length fields, deletes
//     Trailer when chunked and adds Cache-Control for "Pragma: no-cache";
//     the comparison normalises httpio's header the same way.
//   - net/http limits a trailer section to its bufio buffer; the harness
//     gives it a buffer larger than httpio's limits so only grammar is
//     compared.

var writeSeeds = flag.Bool("seeds", false, "write table-test inputs as fuzz seed corpus files")

const fuzzBuf = 256 << 10

type parsedReq struct {
	method, target, host string
	major, minor         int
	header, trailer      map[string][]string
	body                 []byte
}

func httpioRequest(data []byte) (*parsedReq, error) {
	r := NewReader(bytes.NewReader(data), Limits{})
	defer r.Release()
	var req Request
	if err := r.ReadRequest(&req); err != nil {
		return nil, err
	}
	body, err := readBody(r)
	if err != nil {
		return nil, err
	}
	return &parsedReq{req.Method, req.Target, req.Host, req.Major, req.Minor,
		normHeader(req.Header, req.Body.Kind == ChunkedBody), toMap(r.Trailers()), body}, nil
}

func nethttpRequest(data []byte) (*parsedReq, error) {
	for i := 0; i < maxEmptyLines && bytes.HasPrefix(data, []byte("\r\n")); i++ {
		data = data[2:]
	}
	req, err := http.ReadRequest(bufio.NewReaderSize(bytes.NewReader(data), fuzzBuf))
	if err != nil {
		return nil, err
	}
	body, err := io.ReadAll(req.Body)
	if err != nil {
		return nil, err
	}
	h := map[string][]string(req.Header)
	delete(h, "Host")
	return &parsedReq{req.Method, req.RequestURI, req.Host, req.ProtoMajor, min(req.ProtoMinor, 1),
		h, nonEmpty(req.Trailer), body}, nil
}

// normHeader turns an httpio header into what net/http's map would hold.
func normHeader(h Header, chunked bool) map[string][]string {
	m := map[string][]string{}
	for _, f := range h {
		k := CanonicalName(f.Name)
		switch {
		case k == "Host", k == "Transfer-Encoding", k == "Trailer" && chunked:
			continue
		case k == "Content-Length" && len(m[k]) > 0:
			continue // net/http keeps one of several identical values
		}
		m[k] = append(m[k], f.Value)
	}
	if p, ok := m["Pragma"]; ok && p[0] == "no-cache" {
		if _, ok := m["Cache-Control"]; !ok {
			m["Cache-Control"] = []string{"no-cache"}
		}
	}
	return m
}

func toMap(h Header) map[string][]string {
	m := map[string][]string{}
	for _, f := range h {
		k := CanonicalName(f.Name)
		m[k] = append(m[k], f.Value)
	}
	return m
}

// nonEmpty drops the nil entries net/http pre-declares from Trailer.
func nonEmpty(h http.Header) map[string][]string {
	m := map[string][]string{}
	for k, v := range h {
		if v != nil {
			m[k] = v
		}
	}
	return m
}

func equalMaps(a, b map[string][]string) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !slices.Equal(v, b[k]) {
			return false
		}
	}
	return true
}

func FuzzRequest(f *testing.F) {
	for _, s := range requestSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		ours, oerr := httpioRequest(data)
		theirs, terr := nethttpRequest(data)
		if oerr != nil {
			if _, ok := oerr.(*Error); !ok && oerr != io.EOF {
				t.Fatalf("httpio returned a non-*Error: %T %v", oerr, oerr)
			}
			return // rejecting is always allowed
		}
		if terr != nil {
			t.Fatalf("httpio accepted what net/http rejects (%v):\n%q\nhttpio: %+v", terr, data, ours)
		}
		if ours.method != theirs.method || ours.target != theirs.target || ours.host != theirs.host ||
			ours.major != theirs.major || ours.minor != theirs.minor {
			t.Fatalf("request line/host differ:\nhttpio  %+v\nnet/http %+v", ours, theirs)
		}
		if !equalMaps(ours.header, theirs.header) {
			t.Fatalf("headers differ:\nhttpio  %q\nnet/http %q", ours.header, theirs.header)
		}
		if !equalMaps(ours.trailer, theirs.trailer) {
			t.Fatalf("trailers differ:\nhttpio  %q\nnet/http %q", ours.trailer, theirs.trailer)
		}
		if !bytes.Equal(ours.body, theirs.body) {
			t.Fatalf("bodies differ:\nhttpio  %q\nnet/http %q", ours.body, theirs.body)
		}
	})
}

type parsedResp struct {
	status       int
	reason       string
	major, minor int
	header       map[string][]string
	trailer      map[string][]string
	body         []byte
}

// fuzzMethods: the first input byte picks the request method.
var fuzzMethods = []string{"GET", "HEAD", "POST", "CONNECT"}

func FuzzResponse(f *testing.F) {
	for _, s := range responseSeeds() {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) == 0 {
			return
		}
		method := fuzzMethods[int(data[0])%len(fuzzMethods)]
		msg := data[1:]

		var ours *parsedResp
		r := NewReader(bytes.NewReader(msg), Limits{})
		var resp Response
		oerr := r.ReadResponse(&resp, method)
		if oerr == nil {
			var body []byte
			body, oerr = readBody(r)
			ours = &parsedResp{resp.Status, resp.Reason, resp.Major, resp.Minor,
				normHeader(resp.Header, resp.Body.Kind == ChunkedBody || resp.Header.Has("Transfer-Encoding")), toMap(r.Trailers()), body}
		}
		r.Release()
		if oerr != nil {
			if _, ok := oerr.(*Error); !ok && oerr != io.EOF {
				t.Fatalf("httpio returned a non-*Error: %T %v", oerr, oerr)
			}
			return
		}

		hr, terr := http.ReadResponse(bufio.NewReaderSize(bytes.NewReader(msg), fuzzBuf), &http.Request{Method: method})
		var body []byte
		if terr == nil {
			body, terr = io.ReadAll(hr.Body)
		}
		if terr != nil {
			t.Fatalf("httpio accepted what net/http rejects (%v):\nmethod %s\n%q\nhttpio: %+v", terr, method, msg, ours)
		}
		reason := ""
		if len(hr.Status) > 4 {
			reason = hr.Status[4:]
		}
		if ours.status != hr.StatusCode || ours.reason != reason || ours.major != hr.ProtoMajor || ours.minor != min(hr.ProtoMinor, 1) {
			t.Fatalf("status line differs: httpio %d %q %d.%d, net/http %d %q %d.%d",
				ours.status, ours.reason, ours.major, ours.minor, hr.StatusCode, reason, hr.ProtoMajor, hr.ProtoMinor)
		}
		if !equalMaps(ours.header, hr.Header) {
			t.Fatalf("headers differ:\nhttpio  %q\nnet/http %q", ours.header, hr.Header)
		}
		if !equalMaps(ours.trailer, nonEmpty(hr.Trailer)) {
			t.Fatalf("trailers differ:\nhttpio  %q\nnet/http %q", ours.trailer, hr.Trailer)
		}
		if !bytes.Equal(ours.body, body) {
			t.Fatalf("bodies differ:\nhttpio  %q\nnet/http %q", ours.body, body)
		}
	})
}

func requestSeeds() []string {
	var s []string
	for _, c := range badRequests {
		if len(c.in) < 4096 {
			s = append(s, c.in)
		}
	}
	for _, c := range goodRequests {
		s = append(s, c.in)
	}
	return s
}

func responseSeeds() []string {
	var s []string
	for _, c := range badResponses {
		if len(c.in) < 4096 {
			s = append(s, string(rune(slices.Index(fuzzMethods, c.method)))+c.in)
		}
	}
	for _, c := range goodResponses {
		s = append(s, string(rune(slices.Index(fuzzMethods, c.method)))+c.in)
	}
	return s
}

// TestWriteFuzzSeeds writes the seeds as corpus files when -seeds is given.
func TestWriteFuzzSeeds(t *testing.T) {
	if !*writeSeeds {
		t.Skip("use -seeds to regenerate")
	}
	for dir, seeds := range map[string][]string{"FuzzRequest": requestSeeds(), "FuzzResponse": responseSeeds()} {
		d := filepath.Join("testdata", "fuzz", dir)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		for _, s := range seeds {
			name := fmt.Sprintf("seed-%x", sha256.Sum256([]byte(s)))[:21]
			content := "go test fuzz v1\n[]byte(" + fmt.Sprintf("%q", s) + ")\n"
			if err := os.WriteFile(filepath.Join(d, name), []byte(content), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
}

var _ = strings.NewReader
