package httpio

import (
	"bytes"
	"errors"
	"io"
	"strings"
	"testing"
)

func newTestWriter(names NameCase) (*Writer, *bytes.Buffer) {
	var buf bytes.Buffer
	return NewWriter(&buf, names), &buf
}

func TestWriteRequestHead(t *testing.T) {
	h := Header{{"host", "a"}, {"x-dup", "1"}, {"X-DUP", "2"}, {"content-length", "3"}}
	for _, tc := range []struct {
		names NameCase
		want  string
	}{
		{TitleCase, "POST /p?q HTTP/1.1\r\nHost: a\r\nX-Dup: 1\r\nX-Dup: 2\r\nContent-Length: 3\r\n\r\n"},
		{AsReceived, "POST /p?q HTTP/1.1\r\nhost: a\r\nx-dup: 1\r\nX-DUP: 2\r\ncontent-length: 3\r\n\r\n"},
	} {
		w, buf := newTestWriter(tc.names)
		if err := w.WriteRequestHead("POST", "/p?q", h); err != nil {
			t.Fatal(err)
		}
		if w.Buffered() == 0 {
			t.Fatal("nothing buffered")
		}
		if err := w.Flush(); err != nil {
			t.Fatal(err)
		}
		if buf.String() != tc.want {
			t.Errorf("names %d:\n%q\nwant\n%q", tc.names, buf.String(), tc.want)
		}
		w.Release()
	}
}

func TestWriteResponseHead(t *testing.T) {
	w, buf := newTestWriter(TitleCase)
	defer w.Release()
	w.WriteResponseHead(200, "OK", Header{{"content-type", "text/plain"}})
	w.WriteResponseHead(599, "", nil)
	w.WriteResponseHead(404, "Not \tFound \xff", nil)
	w.Flush()
	want := "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n\r\nHTTP/1.1 599 \r\n\r\nHTTP/1.1 404 Not \tFound \xff\r\n\r\n"
	if buf.String() != want {
		t.Errorf("%q\nwant %q", buf.String(), want)
	}
}

// TestWriterRefusesInjection: nothing is written for a refused head.
func TestWriterRefusesInjection(t *testing.T) {
	cases := []struct {
		name string
		do   func(w *Writer) error
		kind ErrorKind
	}{
		{"CRLF in value", func(w *Writer) error {
			return w.WriteRequestHead("GET", "/", Header{{"X", "a\r\nHost: evil"}})
		}, ErrBadFieldValue},
		{"LF in value", func(w *Writer) error { return w.WriteResponseHead(200, "OK", Header{{"X", "a\nb"}}) }, ErrBadFieldValue},
		{"NUL in value", func(w *Writer) error { return w.WriteResponseHead(200, "OK", Header{{"X", "a\x00"}}) }, ErrBadFieldValue},
		{"CR in name", func(w *Writer) error { return w.WriteRequestHead("GET", "/", Header{{"X\r", "a"}}) }, ErrBadFieldName},
		{"colon in name", func(w *Writer) error { return w.WriteRequestHead("GET", "/", Header{{"X:Y", "a"}}) }, ErrBadFieldName},
		{"empty name", func(w *Writer) error { return w.WriteRequestHead("GET", "/", Header{{"", "a"}}) }, ErrBadFieldName},
		{"space in method", func(w *Writer) error { return w.WriteRequestHead("GET /x", "/", nil) }, ErrBadMethod},
		{"space in target", func(w *Writer) error { return w.WriteRequestHead("GET", "/ HTTP/1.1\r\nX:", nil) }, ErrBadTarget},
		{"empty target", func(w *Writer) error { return w.WriteRequestHead("GET", "", nil) }, ErrBadTarget},
		{"CRLF in reason", func(w *Writer) error { return w.WriteResponseHead(200, "OK\r\nSet-Cookie: x", nil) }, ErrBadStatusLine},
		{"status 1000", func(w *Writer) error { return w.WriteResponseHead(1000, "X", nil) }, ErrBadStatus},
		{"status 99", func(w *Writer) error { return w.WriteResponseHead(99, "X", nil) }, ErrBadStatus},
		{"CRLF in trailer", func(w *Writer) error { return w.WriteLastChunk(Header{{"T", "\r\n"}}) }, ErrBadFieldValue},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			w, buf := newTestWriter(TitleCase)
			defer w.Release()
			err := tc.do(w)
			var e *Error
			if !errors.As(err, &e) || e.Kind != tc.kind {
				t.Fatalf("err = %v, want %v", err, tc.kind)
			}
			w.Flush()
			if buf.Len() != 0 || w.Buffered() != 0 {
				t.Fatalf("wrote %q", buf.String())
			}
		})
	}
}

func TestWriteChunks(t *testing.T) {
	w, buf := newTestWriter(AsReceived)
	defer w.Release()
	w.WriteChunk([]byte("hello"))
	w.WriteChunk(nil) // no-op, never a premature last-chunk
	w.WriteChunk([]byte(strings.Repeat("x", 26)))
	w.WriteLastChunk(Header{{"x-sum", "1"}, {"X-Other", "2"}})
	w.Flush()
	want := "5\r\nhello\r\n1a\r\n" + strings.Repeat("x", 26) + "\r\n0\r\nx-sum: 1\r\nX-Other: 2\r\n\r\n"
	if buf.String() != want {
		t.Errorf("%q\nwant %q", buf.String(), want)
	}
	buf.Reset()
	w.WriteLastChunk(nil)
	w.Flush()
	if buf.String() != "0\r\n\r\n" {
		t.Errorf("%q", buf.String())
	}
}

// TestWriteChunkLarge: a chunk bigger than the write buffer stays one chunk.
func TestWriteChunkLarge(t *testing.T) {
	w, buf := newTestWriter(TitleCase)
	defer w.Release()
	p := bytes.Repeat([]byte("z"), 3*writeBufSize)
	if err := w.WriteChunk(p); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	r := NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+buf.String()+"0\r\n\r\n"), Limits{})
	defer r.Release()
	var resp Response
	if err := r.ReadResponse(&resp, "GET"); err != nil {
		t.Fatal(err)
	}
	q := make([]byte, 4*writeBufSize)
	n, end, err := r.ReadBody(q)
	if err != nil || n != len(p) || !end {
		t.Fatalf("%d %v %v", n, end, err)
	}
}

// TestWriteChunkStreamed: a chunk whose data is written in pieces after
// WriteChunkHeader is one chunk of the announced size, whatever its size.
func TestWriteChunkStreamed(t *testing.T) {
	w, buf := newTestWriter(TitleCase)
	defer w.Release()
	sizes := []int64{1, 8191, 8192, 8193, 65536, 300000}
	for _, n := range sizes {
		if err := w.WriteChunkHeader(n); err != nil {
			t.Fatal(err)
		}
		for left := n; left > 0; {
			piece := min(left, 7000)
			w.Write(bytes.Repeat([]byte("q"), int(piece)))
			left -= piece
		}
		if err := w.WriteChunkEnd(); err != nil {
			t.Fatal(err)
		}
	}
	w.WriteLastChunk(nil)
	w.Flush()
	r := NewReader(strings.NewReader("HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"+buf.String()), Limits{})
	defer r.Release()
	var resp Response
	if err := r.ReadResponse(&resp, "GET"); err != nil {
		t.Fatal(err)
	}
	q := make([]byte, 1<<20)
	for _, want := range sizes {
		n, end, err := r.ReadBody(q)
		if err != nil || int64(n) != want || !end {
			t.Fatalf("chunk of %d: read %d end %v err %v", want, n, end, err)
		}
	}
	if _, _, err := r.ReadBody(q); err != io.EOF {
		t.Fatalf("after the chunks: %v", err)
	}
	buf.Reset()
	for _, n := range []int64{0, -1} {
		if err := w.WriteChunkHeader(n); err == nil {
			t.Errorf("WriteChunkHeader(%d) accepted", n)
		}
	}
	w.Flush()
	if buf.Len() != 0 {
		t.Fatalf("a refused chunk header wrote %q", buf.String())
	}
}

func TestWriterReset(t *testing.T) {
	w, _ := newTestWriter(TitleCase)
	defer w.Release()
	w.Write([]byte("discarded"))
	var b2 bytes.Buffer
	w.Reset(&b2)
	w.Write([]byte("raw body"))
	w.Flush()
	if b2.String() != "raw body" {
		t.Fatalf("%q", b2.String())
	}
}

func TestWriterAllocs(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf, TitleCase)
	defer w.Release()
	h := Header{{"host", "a"}, {"x-custom-thing", "1"}, {"Content-Length", "3"}}
	body := []byte("abc")
	n := testing.AllocsPerRun(200, func() {
		buf.Reset()
		w.WriteRequestHead("GET", "/", h)
		w.WriteChunk(body)
		w.Flush()
	})
	if n != 0 {
		t.Errorf("writer allocates %v per head", n)
	}
}

// A parked writer holds no buffer and takes one again at the next write;
// Park with unflushed bytes keeps them.
func TestWriterPark(t *testing.T) {
	var out strings.Builder
	w := NewWriter(&out, AsReceived)
	defer w.Release()
	w.Park()
	if w.bw != nil {
		t.Fatal("parked writer still holds its buffer")
	}
	if err := w.WriteResponseHead(204, "No Content", Header{{Name: "a", Value: "1"}}); err != nil {
		t.Fatal(err)
	}
	w.Park() // bytes are buffered: a no-op
	if w.Buffered() == 0 {
		t.Fatal("Park dropped unflushed bytes")
	}
	if err := w.Flush(); err != nil {
		t.Fatal(err)
	}
	w.Park()
	if err := w.WriteResponseHead(204, "No Content", nil); err != nil {
		t.Fatal(err)
	}
	w.Flush()
	if want := "HTTP/1.1 204 No Content\r\na: 1\r\n\r\nHTTP/1.1 204 No Content\r\n\r\n"; out.String() != want {
		t.Fatalf("wrote %q, want %q", out.String(), want)
	}
}
