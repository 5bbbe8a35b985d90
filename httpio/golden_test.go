package httpio

import (
	"bytes"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"golang.org/x/tools/txtar"
)

// Golden round trips: testdata/golden/*.txtar, one case per file.
//
// File convention (so that the files diff cleanly):
//   - The comment's first line is "request" or "response"; for responses an
//     optional line "method: HEAD" (default GET) names the request method
//     every response in the file answers.
//   - Section "in" is the raw input, section "out" the exact bytes written
//     back. Both are stored with LF line ends; every LF becomes CRLF on load
//     (HTTP/1.1 heads have no bare LF, and bodies in these files are text
//     whose line breaks are CRLF on the wire, counted as 2 bytes by
//     Content-Length and chunk sizes). The output must not contain a bare
//     LF or CR, so the conversion back for -update is lossless.
//   - Every message in "in" is read (pipelined requests, 1xx then final
//     response) until io.EOF, and re-emitted: head with TitleCase names via
//     WriteRequestHead/WriteResponseHead with the fields as parsed (framing
//     fields included), chunked bodies as one WriteChunk per chunk plus
//     WriteLastChunk(Trailers()), other bodies raw.
//
// Regenerate "out" with: go test ./httpio -run Golden -update
var update = flag.Bool("update", false, "rewrite the out sections of golden files")

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "golden", "*.txtar"))
	if err != nil || len(files) < 12 {
		t.Fatalf("golden files: %v %v", files, err)
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			ar, err := txtar.ParseFile(file)
			if err != nil {
				t.Fatal(err)
			}
			sec := map[string]*txtar.File{}
			for i := range ar.Files {
				sec[ar.Files[i].Name] = &ar.Files[i]
			}
			if sec["in"] == nil || sec["out"] == nil {
				t.Fatal("need sections in and out")
			}
			lines := strings.Split(strings.TrimSpace(string(ar.Comment)), "\n")
			isResp := lines[0] == "response"
			method := "GET"
			for _, l := range lines[1:] {
				if m, ok := strings.CutPrefix(l, "method: "); ok {
					method = m
				}
			}
			got, err := roundTrip(toCRLF(sec["in"].Data), isResp, method)
			if err != nil {
				t.Fatal(err)
			}
			if bytes.Contains(bytes.ReplaceAll(got, []byte("\r\n"), nil), []byte("\n")) ||
				bytes.Contains(bytes.ReplaceAll(got, []byte("\r\n"), nil), []byte("\r")) {
				t.Fatalf("output has a bare CR or LF: %q", got)
			}
			if *update {
				sec["out"].Data = bytes.ReplaceAll(got, []byte("\r\n"), []byte("\n"))
				if err := os.WriteFile(file, txtar.Format(ar), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if want := toCRLF(sec["out"].Data); !bytes.Equal(got, want) {
				t.Errorf("round trip differs\ngot:\n%q\nwant:\n%q", got, want)
			}
		})
	}
}

func toCRLF(b []byte) []byte { return bytes.ReplaceAll(b, []byte("\n"), []byte("\r\n")) }

// roundTrip reads every message in in and writes it back.
func roundTrip(in []byte, isResp bool, method string) ([]byte, error) {
	var out bytes.Buffer
	r := NewReader(bytes.NewReader(in), Limits{})
	defer r.Release()
	w := NewWriter(&out, TitleCase)
	defer w.Release()
	var req Request
	var resp Response
	for {
		var err error
		if isResp {
			if err = r.ReadResponse(&resp, method); err == nil {
				err = w.WriteResponseHead(resp.Status, resp.Reason, resp.Header)
			}
		} else {
			if err = r.ReadRequest(&req); err == nil {
				err = w.WriteRequestHead(req.Method, req.Target, req.Header)
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return out.Bytes(), err
		}
		if err := copyBody(w, r); err != nil {
			return out.Bytes(), err
		}
	}
	err := w.Flush()
	return out.Bytes(), err
}

// copyBody re-emits a body: chunk by chunk for chunked bodies, else raw.
func copyBody(w *Writer, r *Reader) error {
	p := make([]byte, 512)
	var chunk []byte
	for {
		n, end, err := r.ReadBody(p)
		if err == io.EOF {
			if r.body.Kind == ChunkedBody {
				return w.WriteLastChunk(r.Trailers())
			}
			return nil
		}
		if err != nil {
			return err
		}
		if r.body.Kind != ChunkedBody {
			if _, err := w.Write(p[:n]); err != nil {
				return err
			}
			continue
		}
		chunk = append(chunk, p[:n]...)
		if end {
			if err := w.WriteChunk(chunk); err != nil {
				return err
			}
			chunk = chunk[:0]
		}
	}
}
