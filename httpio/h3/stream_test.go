package h3

import (
	"bytes"
	"errors"
	"io"
	"sync"
	"testing"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/quic-go/qpack"
)

// pipeStream is one end of an in-memory bidirectional stream built from
// two io.Pipes. Cancels record their codes and break the pipe as a reset
// would.
type pipeStream struct {
	r *io.PipeReader
	w *io.PipeWriter

	mu                    sync.Mutex
	readCode, writeCode   ErrCode
	readCancel, wrCancels int
}

func newPipe() (client, server *pipeStream) {
	r1, w1 := io.Pipe()
	r2, w2 := io.Pipe()
	return &pipeStream{r: r2, w: w1}, &pipeStream{r: r1, w: w2}
}

func (p *pipeStream) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p *pipeStream) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p *pipeStream) Close() error                { return p.w.Close() }

type resetError ErrCode

func (e resetError) Error() string { return "stream reset: " + ErrCode(e).String() }

func (p *pipeStream) CancelRead(code ErrCode) {
	p.mu.Lock()
	p.readCode, p.readCancel = code, p.readCancel+1
	p.mu.Unlock()
	p.r.CloseWithError(resetError(code))
}

func (p *pipeStream) CancelWrite(code ErrCode) {
	p.mu.Lock()
	p.writeCode, p.wrCancels = code, p.wrCancels+1
	p.mu.Unlock()
	p.w.CloseWithError(resetError(code))
}

// memStream is a Stream over byte slices: reads come from in (chunk bytes
// at most per Read, 0 = unlimited), writes append to out. It needs no
// goroutine, so tests and benchmarks can play both sides in turn.
type memStream struct {
	in     []byte
	off    int
	chunk  int
	out    []byte
	closed bool
}

func (m *memStream) Read(p []byte) (int, error) {
	if m.off == len(m.in) {
		return 0, io.EOF
	}
	if m.chunk > 0 && len(p) > m.chunk {
		p = p[:m.chunk]
	}
	n := copy(p, m.in[m.off:])
	m.off += n
	return n, nil
}

func (m *memStream) Write(p []byte) (int, error) {
	if m.closed {
		return 0, errors.New("write after close")
	}
	m.out = append(m.out, p...)
	return len(p), nil
}

func (m *memStream) Close() error             { m.closed = true; return nil }
func (m *memStream) CancelRead(code ErrCode)  {}
func (m *memStream) CancelWrite(code ErrCode) {}

// Raw wire helpers: the tests build frames by hand so they can say things
// our Writer never would.

func frame(typ uint64, payload []byte) []byte {
	return append(appendFrameHeader(nil, typ, uint64(len(payload))), payload...)
}

// section QPACK-encodes name/value pairs with qpack's own encoder, which
// takes any name, upper case and pseudo-fields included.
func section(kv ...string) []byte {
	var buf bytes.Buffer
	enc := qpack.NewEncoder(&buf)
	for i := 0; i < len(kv); i += 2 {
		if err := enc.WriteField(qpack.HeaderField{Name: kv[i], Value: kv[i+1]}); err != nil {
			panic(err)
		}
	}
	if len(kv) == 0 {
		buf.Write([]byte{0, 0})
	}
	return buf.Bytes()
}

func headers(kv ...string) []byte { return frame(frameHeaders, section(kv...)) }
func data(s string) []byte        { return frame(frameData, []byte(s)) }
func cat(parts ...[]byte) []byte  { return bytes.Join(parts, nil) }

// grease is a reserved frame type (RFC 9114 section 7.2.8, 0x1f*N+0x21);
// unknown is an ordinary unassigned one. Both must be skipped anywhere.
var (
	grease  = frame(0x1f*7+0x21, []byte("grease"))
	unknown = frame(0x2f, nil)
)

var getReq = []string{":method", "GET", ":scheme", "https", ":authority", "example.com", ":path", "/x?y=1"}

func kv(base []string, more ...string) []string {
	return append(append([]string(nil), base...), more...)
}

// message is everything a Reader returned for one message.
type message struct {
	heads    []Head
	frames   [][]byte
	trailers httpio.Header
}

// readMessage reads a whole message the way ptproxy does: heads, then
// NextData/ReadData frame by frame with a buffer of bufSize.
func readMessage(r *Reader, noBody bool, bufSize int) (message, error) {
	var m message
	for {
		h, err := r.ReadHead()
		if err != nil {
			return m, err
		}
		c := *h
		c.Fields = nil // nil or empty depends on the pooled Reader's history
		if len(h.Fields) > 0 {
			c.Fields = h.Fields.Clone()
		}
		m.heads = append(m.heads, c)
		if h.Status == 0 || h.Status >= 200 {
			break
		}
	}
	if noBody {
		r.SetNoBody()
	}
	buf := make([]byte, bufSize)
	for {
		n, err := r.NextData()
		if err == io.EOF {
			break
		}
		if err != nil {
			return m, err
		}
		if r.FrameLeft() != n {
			return m, errors.New("FrameLeft differs from NextData")
		}
		f := make([]byte, 0, min(n, 1<<16)) // n is the peer's claim, not data
		for r.FrameLeft() > 0 {
			k, err := r.ReadData(buf)
			if err != nil {
				return m, err
			}
			f = append(f, buf[:k]...)
		}
		if int64(len(f)) != n {
			return m, errors.New("frame length mismatch")
		}
		m.frames = append(m.frames, f)
	}
	m.trailers = r.Trailers().Clone()
	return m, nil
}

func readBytes(b []byte, role Role, noBody bool, chunk int) (message, error) {
	s := &memStream{in: b, chunk: chunk}
	r := NewReader(s, role, Limits{MaxFieldSectionSize: 4096})
	defer r.Release()
	return readMessage(r, noBody, 1000)
}

func TestMemStreamSanity(t *testing.T) {
	m, err := readBytes(cat(headers(getReq...), data("abc")), ReadsRequest, false, 0)
	if err != nil || len(m.frames) != 1 || string(m.frames[0]) != "abc" {
		t.Fatalf("got %+v, %v", m, err)
	}
}
