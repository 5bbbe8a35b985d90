package pipeline

import (
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/ptproxy/ptproxy/httpio"
)

// flushDelay is how long written response bytes may wait in the buffer
// for more to join them while the exchange waits on the tunnel: a
// response whose head and body arrive together leaves in one write, and
// the head of a streamed response still reaches the caller at once. Only
// a wait that long starts a goroutine (the timer's) to flush.
var flushDelay = time.Millisecond

// errCallerWrite marks a failure to write to the caller's connection.
var errCallerWrite = errors.New("writing to the caller")

// errLengthMismatch is a response body that did not match its
// Content-Length.
var errLengthMismatch = errors.New("response body length differs from its Content-Length")

// callerSink writes responses to the caller's connection as HTTP/1.1 (the
// client sink). The exchange calls it directly, on the connection's
// goroutine, one method per part of the response; the framing of each
// body is decided once, by CallerFraming, for the head and the body.
//
// Every response ends in exactly one of: complete (end), synthetic (fail,
// before any head), or cut (a body that stops short: the connection then
// closes without the end of the framing, so the caller cannot mistake it
// for complete; a Content-Length body that comes short or long is cut, never
// padded or passed on).
type callerSink struct {
	w      *httpio.Writer
	now    func() time.Time
	logger *slog.Logger
	// buf is the copy buffer between the stream and w, taken from the pool
	// for the first body byte and given back while the caller is idle
	// (park).
	buf *[]byte

	cur       *Head // the response whose head is out, until it ends
	frame     Frame // how cur's body is framed
	remain    int64 // FrameLength: body bytes still due
	closeConn bool  // the connection closes after cur (announced in its head)

	// The timed flush: armed around a read from the tunnel that may block
	// while w holds bytes.
	flushT   *time.Timer
	flushed  chan error // the timer's flush result, when it ran
	armed    bool
	flushGen atomic.Uint64 // publishes w's state to the timer's goroutine
}

func (s *callerSink) init(conn net.Conn, o *ClientOptions) {
	s.w = httpio.NewWriter(conn, o.Names)
	s.now = o.Now
	if s.now == nil {
		s.now = time.Now
	}
	s.logger = o.Logger
}

func (s *callerSink) release() {
	s.afterRead()
	s.w.Release()
	s.putBuf()
}

// park gives the buffers back to their pools while the caller is idle
// and everything written went out: an idle keep-alive connection holds
// neither a write buffer nor a copy buffer (16 KiB each).
func (s *callerSink) park() {
	s.w.Park()
	s.putBuf()
}

func (s *callerSink) putBuf() {
	if s.buf != nil {
		bufPool.Put(s.buf)
		s.buf = nil
	}
}

func callerWrite(err error) error { return fmt.Errorf("%w: %w", errCallerWrite, err) }

// flush writes out what is buffered.
func (s *callerSink) flush() error {
	if err := s.w.Flush(); err != nil {
		return callerWrite(err)
	}
	return nil
}

// beforeRead is called before a read from the tunnel that may block: if
// response bytes are waiting in the buffer, they are flushed unless the
// read returns within flushDelay.
func (s *callerSink) beforeRead() {
	if s.w.Buffered() == 0 {
		return
	}
	s.armed = true
	s.flushGen.Add(1)
	if s.flushT == nil {
		s.flushed = make(chan error, 1)
		s.flushT = time.AfterFunc(flushDelay, s.timedFlush)
		return
	}
	s.flushT.Reset(flushDelay)
}

func (s *callerSink) timedFlush() {
	s.flushGen.Load()
	s.flushed <- s.w.Flush()
}

// afterRead is called when that read returned: it disarms the timed
// flush, or waits for it to finish if it started, and returns its error.
func (s *callerSink) afterRead() error {
	if !s.armed {
		return nil
	}
	s.armed = false
	if s.flushT.Stop() {
		return nil
	}
	if err := <-s.flushed; err != nil {
		return callerWrite(err)
	}
	return nil
}

// interim writes a 1xx response, to an HTTP/1.1 caller only (RFC 9110
// 15.2), and flushes it: the caller may be waiting for it (100 Continue).
// One the writer refuses (a field that is not valid HTTP/1.1) is dropped.
func (s *callerSink) interim(h *Head) error {
	if !callerIs11(h) {
		return nil
	}
	if err := s.w.WriteResponseHead(h.Status, http.StatusText(h.Status), h.Header); err != nil {
		if _, refused := errors.AsType[*httpio.Error](err); refused {
			return nil
		}
		return callerWrite(err)
	}
	return s.flush()
}

// head writes the head of a final response. An error that is not
// errCallerWrite means the writer refused the head (nothing was written).
func (s *callerSink) head(h *Head) error {
	frame := CallerFraming(h)
	closeConn := h.Close || frame == FrameClose
	if err := s.w.WriteResponseHead(h.Status, http.StatusText(h.Status), CallerResponseFields(h, s.now(), closeConn)); err != nil {
		if _, refused := errors.AsType[*httpio.Error](err); refused {
			return err
		}
		return callerWrite(err)
	}
	s.cur, s.frame, s.remain, s.closeConn = h, frame, h.Body.Length, closeConn
	return nil
}

// body copies the response body from the stream to the caller, DATA frame
// by DATA frame, and ends the response. Each DATA frame of a chunked
// response becomes exactly one chunk of the same size (its size is known
// from NextData before its bytes are read, so any size streams through);
// other framings copy the bytes. It returns nil when the response ended
// complete, else why it was cut (errCallerWrite when the caller's side
// failed).
func (s *callerSink) body(ts TunnelStream) error {
	for {
		s.beforeRead()
		n, err := ts.NextData()
		if werr := s.afterRead(); werr != nil {
			return s.cut(werr)
		}
		if err == io.EOF {
			return s.end(ts.Trailers())
		}
		if err != nil {
			return s.cut(err)
		}
		if err := s.frameData(ts, n); err != nil {
			return s.cut(err)
		}
	}
}

// frameData copies one DATA frame of n bytes.
func (s *callerSink) frameData(ts TunnelStream, n int64) error {
	if n == 0 {
		return nil // an empty chunk would be the last-chunk
	}
	keep := n // bytes of the frame that go to the caller
	switch s.frame {
	case FrameChunked:
		if err := s.w.WriteChunkHeader(n); err != nil {
			return callerWrite(err)
		}
	case FrameLength:
		keep = min(n, s.remain)
	case FrameNone:
		// Nothing may follow the head; bytes sent anyway do not reach
		// the connection.
		keep = 0
	}
	if s.buf == nil {
		s.buf = bufPool.Get().(*[]byte)
	}
	buf := *s.buf
	for left := n; left > 0; {
		s.beforeRead()
		m, err := ts.ReadData(buf[:min(left, int64(len(buf)))])
		if werr := s.afterRead(); werr != nil {
			return werr
		}
		if k := min(int64(m), keep); k > 0 {
			if _, werr := s.w.Write(buf[:k]); werr != nil {
				return callerWrite(werr)
			}
			keep -= k
			s.cur.ex.addResponse(int(k))
		}
		left -= int64(m)
		if err != nil && left > 0 {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	switch s.frame {
	case FrameChunked:
		if err := s.w.WriteChunkEnd(); err != nil {
			return callerWrite(err)
		}
	case FrameLength:
		if n > s.remain {
			// More than the head announced: what fits went out; the
			// connection closes (the caller has a complete message; the
			// excess is not framed).
			s.remain = 0
			return errLengthMismatch
		}
		s.remain -= n
	}
	return nil
}

// end completes the response: the last chunk and the trailers for a
// chunked body. A Content-Length body that came short is cut instead.
func (s *callerSink) end(trailers httpio.Header) error {
	if s.frame == FrameLength && s.remain > 0 {
		return s.cut(errLengthMismatch)
	}
	if s.frame == FrameChunked {
		err := s.w.WriteLastChunk(forwardTrailers(trailers))
		if _, refused := errors.AsType[*httpio.Error](err); refused {
			// A trailer that is not valid HTTP/1.1 is dropped.
			err = s.w.WriteLastChunk(nil)
		}
		if err != nil {
			return s.cut(callerWrite(err))
		}
	}
	s.cur.ex.finish(s.cur.Status, Completed, nil)
	s.cur = nil
	return nil
}

// cut ends a response whose head is out without completing it: what was
// written goes out, and the connection must close.
func (s *callerSink) cut(err error) error {
	if s.cur != nil {
		s.cur.ex.finish(s.cur.Status, Cut, nil)
		s.cur = nil
	}
	if s.logger != nil && !errors.Is(err, errCallerWrite) {
		s.logger.Warn("error when proxying response", "error", err)
	}
	s.w.Flush()
	return err
}

// fail answers an exchange with the synthetic response for e, and the
// connection closes after it. When a head is already out, the response is
// cut instead: closing is the only honest signal left.
func (s *callerSink) fail(e *Error, ex *exchange) {
	if s.cur != nil {
		s.cut(e)
		return
	}
	sh, sb := Synthesize(e)
	logFailure(s.logger, e)
	ex.addResponse(len(sb.Data))
	ex.finish(sh.Status, Synthetic, e)
	if s.w.WriteResponseHead(sh.Status, http.StatusText(sh.Status), CallerResponseFields(sh, s.now(), true)) == nil {
		s.w.Write(sb.Data)
	}
	sb.Release()
	s.w.Flush()
	s.closeConn = true
}
