package httpio

import (
	"bufio"
	"bytes"
	"io"
	"net/http"
	"strings"
	"testing"
)

// A typical browser-like request head with 10 fields.
const benchHead = "GET /api/v1/items?id=12345&sort=desc HTTP/1.1\r\n" +
	"Host: app.example.com\r\n" +
	"User-Agent: Mozilla/5.0 (X11; Linux x86_64; rv:128.0) Gecko/20100101 Firefox/128.0\r\n" +
	"Accept: text/html,application/xhtml+xml,application/xml;q=0.9,*/*;q=0.8\r\n" +
	"Accept-Language: en-US,en;q=0.5\r\n" +
	"Accept-Encoding: gzip, deflate, br\r\n" +
	"Connection: keep-alive\r\n" +
	"Cookie: session=0123456789abcdef; theme=dark\r\n" +
	"Upgrade-Insecure-Requests: 1\r\n" +
	"Cache-Control: max-age=0\r\n" +
	"X-Request-Id: 7f3c2a1e-9b4d-4c8e-a1f2-3d4e5f6a7b8c\r\n" +
	"\r\n"

// chunkedRequest is a 64 KiB body as 16 chunks of 4 KiB.
var chunkedRequest = func() string {
	var sb strings.Builder
	sb.WriteString("POST /upload HTTP/1.1\r\nHost: app.example.com\r\nTransfer-Encoding: chunked\r\n\r\n")
	chunk := strings.Repeat("x", 4096)
	for range 16 {
		sb.WriteString("1000\r\n" + chunk + "\r\n")
	}
	sb.WriteString("0\r\n\r\n")
	return sb.String()
}()

func BenchmarkHead(b *testing.B) {
	src := strings.NewReader(benchHead)
	b.Run("httpio", func(b *testing.B) {
		r := NewReader(src, Limits{})
		var req Request
		b.ReportAllocs()
		b.SetBytes(int64(len(benchHead)))
		for b.Loop() {
			src.Reset(benchHead)
			r.Reset(src)
			if err := r.ReadRequest(&req); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("nethttp", func(b *testing.B) {
		br := bufio.NewReader(src)
		b.ReportAllocs()
		b.SetBytes(int64(len(benchHead)))
		for b.Loop() {
			src.Reset(benchHead)
			br.Reset(src)
			if _, err := http.ReadRequest(br); err != nil {
				b.Fatal(err)
			}
		}
	})
}

func BenchmarkChunked64K(b *testing.B) {
	src := strings.NewReader(chunkedRequest)
	b.Run("httpio", func(b *testing.B) {
		r := NewReader(src, Limits{})
		var req Request
		p := make([]byte, 32<<10)
		b.ReportAllocs()
		b.SetBytes(64 << 10)
		for b.Loop() {
			src.Reset(chunkedRequest)
			r.Reset(src)
			if err := r.ReadRequest(&req); err != nil {
				b.Fatal(err)
			}
			for {
				_, _, err := r.ReadBody(p)
				if err == io.EOF {
					break
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		}
	})
	b.Run("nethttp", func(b *testing.B) {
		br := bufio.NewReader(src)
		b.ReportAllocs()
		b.SetBytes(64 << 10)
		for b.Loop() {
			src.Reset(chunkedRequest)
			br.Reset(src)
			req, err := http.ReadRequest(br)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := io.Copy(io.Discard, req.Body); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// TestHeadAllocs pins the allocations of parsing a request head: one
// string for the whole head (the Header backing array is reused). The
// chunked body adds none.
func TestHeadAllocs(t *testing.T) {
	src := strings.NewReader(benchHead)
	r := NewReader(src, Limits{})
	defer r.Release()
	var req Request
	n := testing.AllocsPerRun(100, func() {
		src.Reset(benchHead)
		r.Reset(src)
		if err := r.ReadRequest(&req); err != nil {
			t.Fatal(err)
		}
	})
	if n != 1 {
		t.Errorf("ReadRequest allocates %v times per head, want 1", n)
	}
	raw := []byte(chunkedRequest)
	body := bytes.NewReader(raw)
	p := make([]byte, 32<<10)
	n = testing.AllocsPerRun(20, func() {
		body.Reset(raw)
		r.Reset(body)
		if err := r.ReadRequest(&req); err != nil {
			t.Fatal(err)
		}
		for {
			_, _, err := r.ReadBody(p)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatal(err)
			}
		}
	})
	if n != 1 {
		t.Errorf("chunked request allocates %v times, want 1 (the head)", n)
	}
}
