package h3

import (
	"io"
	"testing"

	"github.com/ptproxy/ptproxy/httpio"
)

var (
	benchReq = Head{
		Method: "GET", Scheme: "https", Authority: "api.example.com", Path: "/v1/items?page=2",
		Fields: httpio.Header{
			{Name: "User-Agent", Value: "Mozilla/5.0 (X11; Linux x86_64)"},
			{Name: "Accept", Value: "*/*"},
			{Name: "Accept-Encoding", Value: "gzip, deflate, br"},
			{Name: "Accept-Language", Value: "en-US,en;q=0.9"},
			{Name: "Cookie", Value: "session=abcdef0123456789"},
			{Name: "Cookie", Value: "theme=dark"},
			{Name: "X-Request-Id", Value: "6f1c2b3a-9d8e-4f70-a1b2-c3d4e5f60718"},
			{Name: "Cache-Control", Value: "no-cache"},
		},
	}
	benchResp = Head{
		Status: 200,
		Fields: httpio.Header{
			{Name: "Content-Type", Value: "application/json"},
			{Name: "Content-Length", Value: "100"},
			{Name: "Date", Value: "Mon, 02 Jan 2006 15:04:05 GMT"},
		},
	}
	benchBody = make([]byte, 100)
)

// roundTrip plays one request and response through the codec: the client
// writes the request, the server reads it and answers with a head and a
// 100-byte body, the client reads the answer.
func roundTrip(tb testing.TB, c, s Stream, flipC, flipS func(), buf []byte) {
	w := NewWriter(c)
	if err := w.WriteHead(&benchReq); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	w.Release()
	flipS()
	r := NewReader(s, ReadsRequest, Limits{})
	if _, err := r.ReadHead(); err != nil {
		tb.Fatal(err)
	}
	if _, err := r.ReadData(buf); err != io.EOF {
		tb.Fatal(err)
	}
	r.Release()
	w = NewWriter(s)
	if err := w.WriteHead(&benchResp); err != nil {
		tb.Fatal(err)
	}
	if err := w.WriteData(benchBody); err != nil {
		tb.Fatal(err)
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	w.Release()
	flipC()
	r = NewReader(c, ReadsResponse, Limits{})
	if _, err := r.ReadHead(); err != nil {
		tb.Fatal(err)
	}
	n := 0
	for {
		k, err := r.ReadData(buf)
		n += k
		if err == io.EOF {
			break
		}
		if err != nil {
			tb.Fatal(err)
		}
	}
	if n != len(benchBody) {
		tb.Fatalf("body %d", n)
	}
	r.Release()
}

// BenchmarkRoundTripSmall measures the codec alone: memStreams hand the
// bytes over without goroutines, so allocations are the codec's.
func BenchmarkRoundTripSmall(b *testing.B) {
	c, s := &memStream{}, &memStream{}
	flipS := func() { s.in, s.off = c.out, 0; s.out, s.closed = s.out[:0], false }
	flipC := func() { c.in, c.off = s.out, 0; c.out, c.closed = c.out[:0], false }
	buf := make([]byte, 512)
	b.ReportAllocs()
	for b.Loop() {
		roundTrip(b, c, s, flipC, flipS, buf)
	}
}

// BenchmarkRoundTripSmallPipe runs the same exchange over pipeStreams
// with the server in its own goroutine, as the streams of a QUIC
// connection are used. Pipes are created per exchange (a stream is not
// reusable after FIN), so their allocations are included.
func BenchmarkRoundTripSmallPipe(b *testing.B) {
	b.ReportAllocs()
	for b.Loop() {
		c, s := newPipe()
		done := make(chan struct{})
		go func() {
			defer close(done)
			buf := make([]byte, 512)
			r := NewReader(s, ReadsRequest, Limits{})
			if _, err := r.ReadHead(); err != nil {
				panic(err)
			}
			if _, err := r.ReadData(buf); err != io.EOF {
				panic(err)
			}
			r.Release()
			w := NewWriter(s)
			w.WriteHead(&benchResp)
			w.WriteData(benchBody)
			w.Close()
			w.Release()
		}()
		w := NewWriter(c)
		w.WriteHead(&benchReq)
		w.Close()
		w.Release()
		r := NewReader(c, ReadsResponse, Limits{})
		if _, err := r.ReadHead(); err != nil {
			b.Fatal(err)
		}
		buf := make([]byte, 512)
		for {
			if _, err := r.ReadData(buf); err == io.EOF {
				break
			} else if err != nil {
				b.Fatal(err)
			}
		}
		r.Release()
		<-done
	}
}

// TestRoundTripAllocs pins the allocation count of the codec so a
// regression on the hot path fails a test, not only a benchmark. The only
// allocations left are the strings qpack's decoder makes for field names
// and values that are not static table entries: 8 in the request
// (:authority, :path, user-agent, accept-language, two cookies, the
// x-request-id name and value), 2 in the response (content-length, date).
func TestRoundTripAllocs(t *testing.T) {
	if raceEnabled {
		t.Skip("allocation counts are meaningless under the race detector")
	}
	c, s := &memStream{}, &memStream{}
	flipS := func() { s.in, s.off = c.out, 0; s.out, s.closed = s.out[:0], false }
	flipC := func() { c.in, c.off = s.out, 0; c.out, c.closed = c.out[:0], false }
	buf := make([]byte, 512)
	roundTrip(t, c, s, flipC, flipS, buf)
	if a := testing.AllocsPerRun(200, func() { roundTrip(t, c, s, flipC, flipS, buf) }); a > 10 {
		t.Errorf("%v allocs per round trip, want at most 10", a)
	}
}
