package h3

import (
	"errors"
	"fmt"
	"sync"

	"github.com/ptproxy/ptproxy/httpio"
	"github.com/quic-go/qpack"
)

// sectionBuf collects what the QPACK encoder writes. The first
// maxFrameHeader bytes are left free for the HEADERS frame header, which
// is written in front once the payload length is known, so a section goes
// out in one Stream.Write.
type sectionBuf struct{ b []byte }

func (s *sectionBuf) Write(p []byte) (int, error) {
	s.b = append(s.b, p...)
	return len(p), nil
}

// smallData is the largest DATA payload copied behind its frame header
// into one Write; larger payloads are written in place after a separate
// header Write, where one more call costs less than the copy.
const smallData = 8 << 10

// Writer writes one HTTP/3 message onto a request stream: a request, or a
// response with any 1xx heads before it. It is not safe for concurrent
// use.
type Writer struct {
	s     Stream
	enc   *qpack.Encoder // writes into sec
	sec   sectionBuf
	data  []byte // frame header scratch, and small DATA frames whole
	final bool   // a request or final response head has been written
	done  bool   // trailers written
	// limit is the peer's SETTINGS_MAX_FIELD_SECTION_SIZE (0: none
	// announced); size is the section being written, counted as RFC 9114
	// 4.2.2 does.
	limit, size uint64
}

var writerPool = sync.Pool{New: func() any {
	w := &Writer{data: make([]byte, 0, maxFrameHeader+smallData)}
	w.sec.b = make([]byte, 0, 1024)
	w.enc = qpack.NewEncoder(&w.sec)
	return w
}}

// NewWriter returns a Writer, possibly a recycled one, writing onto s.
func NewWriter(s Stream) *Writer {
	w := writerPool.Get().(*Writer)
	w.s, w.final, w.done, w.limit = s, false, false, 0
	return w
}

// SetPeerLimit sets the largest field section the peer accepts, from its
// SETTINGS_MAX_FIELD_SECTION_SIZE (0: no limit). RFC 9114 4.2.2: a larger
// section should not be sent; the peer would reject the message anyway,
// and a local error lets the caller answer with a clear status instead of
// a reset stream.
func (w *Writer) SetPeerLimit(n uint64) { w.limit = n }

// Release returns w to a pool; w must not be used afterwards.
func (w *Writer) Release() {
	w.s = nil
	if cap(w.sec.b) > DefaultMaxFieldSectionSize {
		w.sec.b = make([]byte, 0, 1024)
	}
	writerPool.Put(w)
}

var (
	errWriteOrder = errors.New("h3: write out of order (DATA or trailers need a final head; nothing follows trailers)")
	errHeadAgain  = errors.New("h3: a final head was already written")
)

// WriteHead writes h as one HEADERS frame: request pseudo-fields when
// h.Method is set, else :status. Names go on the wire in lower case; the
// fields keep their order and duplicates. h.ContentLength is ignored (a
// content-length field in h.Fields is what the peer sees).
//
// Pseudo-field values are written as given: they come from an HTTP/1.1
// head httpio has already validated, and checking them again here would
// cost every request for nothing.
//
// Fields that HTTP/3 forbids (connection-specific ones, te other than
// "trailers", invalid names or values) are refused with an error and
// nothing is written, since the peer would reject the message as
// malformed anyway.
func (w *Writer) WriteHead(h *Head) error {
	if w.final {
		return errHeadAgain
	}
	w.sec.b, w.size = w.sec.b[:maxFrameHeader], 0
	var err error
	if h.Method != "" {
		err = w.field(":method", h.Method)
		if err == nil && h.Scheme != "" {
			err = w.field(":scheme", h.Scheme)
		}
		if err == nil && h.Authority != "" {
			err = w.field(":authority", h.Authority)
		}
		if err == nil && h.Path != "" {
			err = w.field(":path", h.Path)
		}
		if err == nil && h.Protocol != "" {
			err = w.field(":protocol", h.Protocol)
		}
	} else {
		if h.Status < 100 || h.Status > 599 || h.Status == 101 {
			return fmt.Errorf("h3: cannot send status %d", h.Status)
		}
		err = w.field(":status", statusText(h.Status))
	}
	if err == nil {
		err = w.fields(h.Fields, false)
	}
	w.enc.Close()
	if err != nil {
		return err
	}
	if h.Method != "" || h.Status >= 200 {
		w.final = true
	}
	return w.writeSection()
}

// WriteTrailers writes f as a HEADERS frame after the body. An empty f
// writes nothing: an empty trailer section means no trailers.
func (w *Writer) WriteTrailers(f httpio.Header) error {
	if !w.final || w.done {
		return errWriteOrder
	}
	if len(f) == 0 {
		return nil
	}
	w.sec.b, w.size = w.sec.b[:maxFrameHeader], 0
	err := w.fields(f, true)
	w.enc.Close()
	if err != nil {
		return err
	}
	w.done = true
	return w.writeSection()
}

func (w *Writer) field(name, value string) error {
	w.size += uint64(len(name)+len(value)) + 32
	if w.limit > 0 && w.size > w.limit {
		return fmt.Errorf("h3: %w: over %d bytes, the peer's limit", ErrFieldSectionTooLarge, w.limit)
	}
	// The encoder writes into sec, which never fails.
	return w.enc.WriteField(qpack.HeaderField{Name: name, Value: value})
}

func (w *Writer) fields(h httpio.Header, trailer bool) error {
	for i := range h {
		name, ok := lowerName(h[i].Name)
		if !ok {
			return fmt.Errorf("h3: invalid field name %q", h[i].Name)
		}
		if reason := checkRegular(name, h[i].Value, trailer); reason != "" {
			return fmt.Errorf("h3: cannot send field: %s", reason)
		}
		if err := w.field(name, h[i].Value); err != nil {
			return err
		}
	}
	return nil
}

// writeSection frames the encoded section in sec.b[maxFrameHeader:] and
// writes it.
func (w *Writer) writeSection() error {
	n := uint64(len(w.sec.b) - maxFrameHeader)
	ln := varintLen(n)
	start := maxFrameHeader - 1 - ln
	w.sec.b[start] = frameHeaders
	putVarint(w.sec.b[start+1:], n, ln)
	_, err := w.s.Write(w.sec.b[start:])
	return err
}

// WriteData writes p as exactly one DATA frame, whatever its size, so the
// reader sees the same frame boundaries (and ptproxy the same HTTP/1.1
// chunks). An empty p writes nothing.
func (w *Writer) WriteData(p []byte) error {
	if !w.final || w.done {
		return errWriteOrder
	}
	if len(p) == 0 {
		return nil
	}
	b := appendFrameHeader(w.data[:0], frameData, uint64(len(p)))
	if len(p) <= smallData {
		b = append(b, p...)
		_, err := w.s.Write(b)
		return err
	}
	if _, err := w.s.Write(b); err != nil {
		return err
	}
	_, err := w.s.Write(p)
	return err
}

// Close ends the message: it closes the send side of the stream (FIN).
func (w *Writer) Close() error { return w.s.Close() }
