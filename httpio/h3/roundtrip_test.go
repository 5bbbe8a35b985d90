package h3

import (
	"bytes"
	"errors"
	"io"
	"reflect"
	"testing"

	"github.com/ptproxy/ptproxy/httpio"
)

// over runs write on one end of a pipeStream in a goroutine and read on
// the other, and returns both errors.
func over(t *testing.T, write func(s Stream) error, read func(s Stream) error) {
	t.Helper()
	c, s := newPipe()
	done := make(chan error, 1)
	go func() {
		err := write(c)
		if err != nil {
			c.CancelWrite(ErrCodeInternalError)
		}
		done <- err
	}()
	rerr := read(s)
	if rerr != nil {
		s.CancelRead(ErrCodeMessageError)
	}
	if err := <-done; err != nil {
		t.Fatalf("write: %v", err)
	}
	if rerr != nil {
		t.Fatalf("read: %v", rerr)
	}
}

func TestRoundTripRequest(t *testing.T) {
	req := &Head{
		Method: "POST", Scheme: "https", Authority: "example.com", Path: "/upload?x=1",
		Fields: httpio.Header{
			{Name: "Content-Type", Value: "text/plain"},
			{Name: "cookie", Value: "a=1"},
			{Name: "X-Mixed-Case-Name", Value: "v"},
			{Name: "cookie", Value: "b=2"},
			{Name: "Accept", Value: "*/*"},
			{Name: "x-dup", Value: "1"},
			{Name: "X-Dup", Value: "2"},
			{Name: "Content-Length", Value: "11"},
			{Name: "TE", Value: "trailers"},
		},
	}
	trailers := httpio.Header{{Name: "X-Checksum", Value: "abc"}, {Name: "x-checksum", Value: "def"}}
	over(t, func(s Stream) error {
		w := NewWriter(s)
		defer w.Release()
		if err := w.WriteHead(req); err != nil {
			return err
		}
		if err := w.WriteData([]byte("hello ")); err != nil {
			return err
		}
		if err := w.WriteData([]byte("world")); err != nil {
			return err
		}
		if err := w.WriteTrailers(trailers); err != nil {
			return err
		}
		return w.Close()
	}, func(s Stream) error {
		r := NewReader(s, ReadsRequest, Limits{})
		defer r.Release()
		m, err := readMessage(r, false, 100)
		if err != nil {
			return err
		}
		h := m.heads[0]
		if h.Method != req.Method || h.Scheme != req.Scheme || h.Authority != req.Authority || h.Path != req.Path || h.ContentLength != 11 {
			t.Errorf("pseudo-fields %+v", h)
		}
		want := httpio.Header{
			{Name: "content-type", Value: "text/plain"},
			{Name: "cookie", Value: "a=1"},
			{Name: "x-mixed-case-name", Value: "v"},
			{Name: "cookie", Value: "b=2"},
			{Name: "accept", Value: "*/*"},
			{Name: "x-dup", Value: "1"},
			{Name: "x-dup", Value: "2"},
			{Name: "content-length", Value: "11"},
			{Name: "te", Value: "trailers"},
		}
		if !reflect.DeepEqual(h.Fields, want) {
			t.Errorf("fields\n got %v\nwant %v", h.Fields, want)
		}
		if len(m.frames) != 2 || string(m.frames[0]) != "hello " || string(m.frames[1]) != "world" {
			t.Errorf("frames %q", m.frames)
		}
		wantT := httpio.Header{{Name: "x-checksum", Value: "abc"}, {Name: "x-checksum", Value: "def"}}
		if !reflect.DeepEqual(m.trailers, wantT) {
			t.Errorf("trailers %v", m.trailers)
		}
		return nil
	})
}

func TestRoundTripResponseInterim(t *testing.T) {
	over(t, func(s Stream) error {
		w := NewWriter(s)
		defer w.Release()
		for _, h := range []*Head{
			{Status: 100},
			{Status: 103, Fields: httpio.Header{{Name: "Link", Value: "</s.css>; rel=preload"}}},
			{Status: 404, Fields: httpio.Header{{Name: "Content-Type", Value: "text/html"}}},
		} {
			if err := w.WriteHead(h); err != nil {
				return err
			}
		}
		if err := w.WriteData([]byte("not found")); err != nil {
			return err
		}
		return w.Close()
	}, func(s Stream) error {
		r := NewReader(s, ReadsResponse, Limits{})
		defer r.Release()
		m, err := readMessage(r, false, 4)
		if err != nil {
			return err
		}
		if len(m.heads) != 3 || m.heads[0].Status != 100 || m.heads[1].Status != 103 || m.heads[2].Status != 404 {
			t.Errorf("heads %+v", m.heads)
		}
		if m.heads[1].Fields.Get("link") != "</s.css>; rel=preload" {
			t.Errorf("103 fields %v", m.heads[1].Fields)
		}
		if !bytes.Equal(bytes.Join(m.frames, nil), []byte("not found")) || m.trailers != nil {
			t.Errorf("body %q trailers %v", m.frames, m.trailers)
		}
		return nil
	})
}

var frameSizes = []int{0, 1, 8191, 8192, 8193, 65536, 1 << 20}

func payload(n int) []byte {
	p := make([]byte, n)
	for i := range p {
		p[i] = byte(i*7 + n)
	}
	return p
}

func writeFrames(s Stream) error {
	w := NewWriter(s)
	defer w.Release()
	if err := w.WriteHead(&Head{Status: 200}); err != nil {
		return err
	}
	for _, n := range frameSizes {
		if err := w.WriteData(payload(n)); err != nil {
			return err
		}
	}
	return w.Close()
}

// TestFrameBoundariesNextData: every WriteData comes back as exactly one
// frame of its size, whatever the read buffer.
func TestFrameBoundariesNextData(t *testing.T) {
	for _, buf := range []int{1000, 8192, 1 << 21} {
		over(t, writeFrames, func(s Stream) error {
			r := NewReader(s, ReadsResponse, Limits{})
			defer r.Release()
			m, err := readMessage(r, false, buf)
			if err != nil {
				return err
			}
			var want [][]byte
			for _, n := range frameSizes[1:] {
				want = append(want, payload(n))
			}
			if len(m.frames) != len(want) {
				t.Fatalf("buffer %d: %d frames, want %d", buf, len(m.frames), len(want))
			}
			for i := range want {
				if !bytes.Equal(m.frames[i], want[i]) {
					t.Errorf("buffer %d: frame %d differs (len %d, want %d)", buf, i, len(m.frames[i]), len(want[i]))
				}
			}
			return nil
		})
	}
}

// TestFrameBoundariesReadData: ReadData alone, with a buffer larger than
// any frame, never returns bytes of two frames at once, and FrameLeft
// reaches 0 exactly at each frame's end.
func TestFrameBoundariesReadData(t *testing.T) {
	for _, bufSize := range []int{1 << 21, 5000} {
		over(t, writeFrames, func(s Stream) error {
			r := NewReader(s, ReadsResponse, Limits{})
			defer r.Release()
			if _, err := r.ReadHead(); err != nil {
				return err
			}
			buf := make([]byte, bufSize)
			var frames [][]byte
			var cur []byte
			for {
				n, err := r.ReadData(buf)
				if err == io.EOF {
					break
				}
				if err != nil {
					return err
				}
				if n == 0 {
					return errors.New("ReadData returned 0 bytes")
				}
				cur = append(cur, buf[:n]...)
				if r.FrameLeft() == 0 {
					frames = append(frames, cur)
					cur = nil
				}
			}
			if cur != nil {
				return errors.New("EOF inside a frame")
			}
			if len(frames) != len(frameSizes)-1 {
				t.Fatalf("%d frames", len(frames))
			}
			for i, n := range frameSizes[1:] {
				if !bytes.Equal(frames[i], payload(n)) {
					t.Errorf("frame %d differs", i)
				}
			}
			return nil
		})
	}
}

// TestSmallDataOneWrite: a small DATA frame is one Stream.Write (header and
// payload together), a large one two, and a HEADERS frame one.
func TestSmallDataOneWrite(t *testing.T) {
	s := &countingStream{}
	w := NewWriter(s)
	defer w.Release()
	if err := w.WriteHead(&Head{Status: 200, Fields: httpio.Header{{Name: "A", Value: "b"}}}); err != nil {
		t.Fatal(err)
	}
	if s.writes != 1 {
		t.Fatalf("HEADERS took %d writes", s.writes)
	}
	for _, c := range []struct{ size, writes int }{{100, 1}, {smallData, 1}, {smallData + 1, 2}, {1 << 20, 2}} {
		s.writes = 0
		if err := w.WriteData(make([]byte, c.size)); err != nil {
			t.Fatal(err)
		}
		if s.writes != c.writes {
			t.Errorf("DATA of %d bytes took %d writes, want %d", c.size, s.writes, c.writes)
		}
	}
}

type countingStream struct {
	memStream
	writes int
}

func (c *countingStream) Write(p []byte) (int, error) { c.writes++; return c.memStream.Write(p) }

func TestWriterRefuses(t *testing.T) {
	for _, c := range []struct {
		name string
		h    Head
	}{
		{"connection", Head{Status: 200, Fields: httpio.Header{{Name: "Connection", Value: "close"}}}},
		{"transfer-encoding", Head{Method: "GET", Scheme: "https", Authority: "a", Path: "/", Fields: httpio.Header{{Name: "Transfer-Encoding", Value: "chunked"}}}},
		{"bad name", Head{Status: 200, Fields: httpio.Header{{Name: "a b", Value: "c"}}}},
		{"pseudo name", Head{Status: 200, Fields: httpio.Header{{Name: ":path", Value: "/"}}}},
		{"bad value", Head{Status: 200, Fields: httpio.Header{{Name: "a", Value: "b\r\nc: d"}}}},
		{"te gzip", Head{Method: "GET", Scheme: "https", Authority: "a", Path: "/", Fields: httpio.Header{{Name: "TE", Value: "gzip"}}}},
		{"status 101", Head{Status: 101}},
		{"status 0", Head{}},
		{"status 600", Head{Status: 600}},
	} {
		s := &memStream{}
		w := NewWriter(s)
		if err := w.WriteHead(&c.h); err == nil {
			t.Errorf("%s: written", c.name)
		}
		if len(s.out) != 0 {
			t.Errorf("%s: %d bytes written", c.name, len(s.out))
		}
		// The encoder must be usable again after a refusal.
		if err := w.WriteHead(&Head{Status: 204}); err != nil {
			t.Fatal(err)
		}
		r := NewReader(&memStream{in: s.out}, ReadsResponse, Limits{})
		if h, err := r.ReadHead(); err != nil || h.Status != 204 {
			t.Errorf("%s: after refusal: %v %v", c.name, h, err)
		}
		r.Release()
		w.Release()
	}
}

func TestWriterOrder(t *testing.T) {
	w := NewWriter(&memStream{})
	defer w.Release()
	if err := w.WriteData([]byte("x")); err == nil {
		t.Error("DATA before head")
	}
	if err := w.WriteHead(&Head{Status: 100}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTrailers(httpio.Header{{Name: "a", Value: "b"}}); err == nil {
		t.Error("trailers after 1xx only")
	}
	if err := w.WriteHead(&Head{Status: 200}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteHead(&Head{Status: 200}); err == nil {
		t.Error("second final head")
	}
	if err := w.WriteTrailers(httpio.Header{{Name: "a", Value: "b"}}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteData([]byte("x")); err == nil {
		t.Error("DATA after trailers")
	}
}

// TestLowerNameNoAlloc: a lower-case name, and a common name in any case,
// are written without allocating.
func TestLowerNameNoAlloc(t *testing.T) {
	for _, n := range []string{"x-custom-thing", "Content-Type", "USER-AGENT", "Accept-Encoding"} {
		if a := testing.AllocsPerRun(100, func() { lowerName(n) }); a != 0 {
			t.Errorf("lowerName(%q): %v allocs", n, a)
		}
	}
	if got, _ := lowerName("X-Odd-Name"); got != "x-odd-name" {
		t.Errorf("got %q", got)
	}
}

// TestDataNoAlloc: steady-state writing and reading of DATA frames does
// not allocate.
func TestDataNoAlloc(t *testing.T) {
	s := &memStream{}
	w := NewWriter(s)
	defer w.Release()
	if err := w.WriteHead(&Head{Status: 200}); err != nil {
		t.Fatal(err)
	}
	small, large := make([]byte, 100), make([]byte, 20000)
	s.out = make([]byte, 0, 1<<20)
	if a := testing.AllocsPerRun(100, func() {
		s.out = s.out[:0]
		w.WriteData(small)
		w.WriteData(large)
	}); a != 0 {
		t.Errorf("WriteData: %v allocs", a)
	}
	in := s.out
	rs := &memStream{}
	r := NewReader(rs, ReadsResponse, Limits{})
	defer r.Release()
	rs.in = headers(":status", "200")
	if _, err := r.ReadHead(); err != nil {
		t.Fatal(err)
	}
	buf := make([]byte, 32<<10)
	if a := testing.AllocsPerRun(100, func() {
		rs.in, rs.off = in, 0
		for range 2 {
			if _, err := r.NextData(); err != nil {
				t.Fatal(err)
			}
			for r.FrameLeft() > 0 {
				if _, err := r.ReadData(buf); err != nil {
					t.Fatal(err)
				}
			}
		}
	}); a != 0 {
		t.Errorf("ReadData: %v allocs", a)
	}
}

// TestLargeHead: a section larger than the read buffer goes through the
// separate growing buffer, at the limit and just over it.
func TestLargeHead(t *testing.T) {
	big := bytes.Repeat([]byte("\x80v"), 20000) // Huffman makes this longer on the wire
	for _, c := range []struct {
		limit uint64
		want  want
	}{{1 << 20, ok}, {40000, tooBig}} {
		in := headers(kv(getReq, "x-big", string(big))...)
		if len(in) <= readBufSize {
			t.Fatalf("test section is only %d bytes", len(in))
		}
		for _, chunk := range []int{0, 1, 5000} {
			r := NewReader(&memStream{in: in, chunk: chunk}, ReadsRequest, Limits{MaxFieldSectionSize: c.limit})
			h, err := r.ReadHead()
			c.want.check(t, err)
			if err == nil && h.Fields.Get("x-big") != string(big) {
				t.Fatal("value differs")
			}
			r.Release()
		}
	}
}

// TestWriterPeerLimit: the writer counts a section as RFC 9114 4.2.2 does
// (name + value + 32 per field, pseudo-fields included), so a section the
// peer's reader with the same limit accepts is written, and one byte more
// is refused with nothing written; the same writer then works again.
func TestWriterPeerLimit(t *testing.T) {
	h := &Head{Method: "GET", Scheme: "https", Authority: "a.test", Path: "/p",
		Fields: httpio.Header{{Name: "X-Big", Value: string(bytes.Repeat([]byte("v"), 1000))}}}
	size := uint64(len(":method")+len("GET")+len(":scheme")+len("https")+len(":authority")+len("a.test")+
		len(":path")+len("/p")+len("x-big")+1000) + 5*32
	for _, c := range []struct {
		limit   uint64
		written bool
	}{{0, true}, {size, true}, {size - 1, false}} {
		s := &memStream{}
		w := NewWriter(s)
		w.SetPeerLimit(c.limit)
		err := w.WriteHead(h)
		if c.written {
			if err != nil {
				t.Fatalf("limit %d: %v", c.limit, err)
			}
			r := NewReader(&memStream{in: s.out}, ReadsRequest, Limits{MaxFieldSectionSize: max(c.limit, size)})
			if got, err := r.ReadHead(); err != nil || got.Fields.Get("x-big") != h.Fields.Get("X-Big") {
				t.Fatalf("limit %d: read back: %v", c.limit, err)
			}
			r.Release()
		} else {
			if !errors.Is(err, ErrFieldSectionTooLarge) || len(s.out) != 0 {
				t.Fatalf("limit %d: err %v, %d bytes written; want ErrFieldSectionTooLarge and nothing", c.limit, err, len(s.out))
			}
			if err := w.WriteHead(&Head{Method: "GET", Scheme: "https", Authority: "a.test", Path: "/"}); err != nil {
				t.Fatalf("after the refusal: %v", err)
			}
		}
		w.Release()
	}
	// Trailers count on their own.
	w := NewWriter(&memStream{})
	defer w.Release()
	w.SetPeerLimit(50) // the head: 7 + 3 + 32 = 42
	if err := w.WriteHead(&Head{Status: 200}); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTrailers(httpio.Header{{Name: "x", Value: "12345678901234567890"}}); !errors.Is(err, ErrFieldSectionTooLarge) {
		t.Fatalf("trailer section of 53 bytes under a limit of 50: %v", err)
	}
}
