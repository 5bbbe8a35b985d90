package pipeline

import (
	"bufio"
	"bytes"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
)

// TestCallerFramingGolden runs a response through both real sinks (the
// server's writeHTTP3Response and the client's writeResponses, see
// rwResponseCase) for every combination of caller version, caller close,
// origin framing and bodiless status or method, and
//   - compares the bytes the caller gets with
//     testdata/rewrite/framing/<case>.http, byte for byte (regenerate with
//     go test ./pipeline -run CallerFramingGolden -update, review the diff);
//   - independently parses them with net/http's response reader, which
//     must find exactly the origin's body, complete, and a connection that
//     closes whenever the body is close-delimited.
func TestCallerFramingGolden(t *testing.T) {
	const body = "hello, world"
	origins := map[string]string{
		"length":       "HTTP/1.1 200 OK\nContent-Length: 12\n\n" + body,
		"chunked":      "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\nTrailer: X-Sum\n\n5\nhello\n7\n, world\n0\nX-Sum: 1\n\n",
		"close":        "HTTP/1.0 200 OK\n\n" + body,
		"empty":        "HTTP/1.1 200 OK\nContent-Length: 0\n\n",
		"head":         "HTTP/1.1 200 OK\nContent-Length: 12\n\n",
		"head-chunked": "HTTP/1.1 200 OK\nTransfer-Encoding: chunked\n\n",
		"204":          "HTTP/1.1 204 No Content\nX-A: 1\n\n",
		"304":          "HTTP/1.1 304 Not Modified\nETag: \"x\"\nContent-Length: 12\n\n",
	}
	type origin struct{ name, method, want string }
	list := []origin{
		{"length", "GET", body}, {"chunked", "GET", body}, {"close", "GET", body}, {"empty", "GET", ""},
		{"head", "HEAD", ""}, {"head-chunked", "HEAD", ""}, {"204", "GET", ""}, {"304", "GET", ""},
	}
	for _, o := range list {
		for _, caller := range [][2]int{{1, 0}, {1, 1}} {
			for _, closing := range []bool{false, true} {
				name := fmt.Sprintf("%s-%s-http1%d", o.name, o.method, caller[1])
				if closing {
					name += "-close"
				}
				t.Run(name, func(t *testing.T) {
					in := rwToCRLF([]byte(origins[o.name]))
					if o.name == "close" || o.name == "chunked" {
						// Bodies carry no line ends of their own.
						in = bytes.Replace(in, []byte(body+"\r\n"), []byte(body), 1)
					}
					pol := rwPolicy{method: o.method, callerMajorMinor: caller, close: closing}
					res := rwResponseCase(t, pol, in)
					if res.err != "" {
						t.Fatalf("refused: %s", res.err)
					}
					checkCallerFraming(t, res.out, o.method, o.want, closing)
					golden := filepath.Join("..", "testdata", "rewrite", "framing", name+".http")
					if *rwUpdate {
						if err := os.MkdirAll(filepath.Dir(golden), 0o755); err != nil {
							t.Fatal(err)
						}
						if err := os.WriteFile(golden, res.out, 0o644); err != nil {
							t.Fatal(err)
						}
						return
					}
					want, err := os.ReadFile(golden)
					if err != nil {
						t.Fatalf("%v (run with -update)", err)
					}
					if got := res.out; !bytes.Equal(got, want) {
						t.Errorf("caller bytes differ from %s\n--- file:\n%s--- got:\n%s", golden, want, got)
					}
				})
			}
		}
	}
}

// checkCallerFraming parses out as the caller would (net/http) and checks
// the body arrives whole and framed, nothing follows it, and the head says
// Connection: close exactly when the connection will close.
func checkCallerFraming(t *testing.T, out []byte, method, want string, closing bool) {
	t.Helper()
	br := bufio.NewReader(bytes.NewReader(out))
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("net/http cannot read the response: %v\n%s", err, out)
	}
	got, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("net/http cannot read the body: %v\n%s", err, out)
	}
	if string(got) != want {
		t.Fatalf("body %q, want %q\n%s", got, want, out)
	}
	if rest, _ := io.ReadAll(br); len(rest) > 0 {
		t.Fatalf("%d bytes after the message: %q", len(rest), rest)
	}
	// Only a close-delimited body (for an HTTP/1.0 caller) or the caller's
	// own request closes the connection.
	delimited := resp.ContentLength < 0 && len(resp.TransferEncoding) == 0 && method != http.MethodHead &&
		resp.StatusCode != 204 && resp.StatusCode != 304
	if resp.Close != (closing || delimited) {
		t.Fatalf("Connection: close is %v, want %v (caller closes %v, close-delimited %v):\n%s", resp.Close, closing || delimited, closing, delimited, out)
	}
}
