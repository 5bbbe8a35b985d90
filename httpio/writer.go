package httpio

import (
	"bufio"
	"io"
	"strconv"
)

// Writer writes HTTP/1.1 messages. It writes exactly the fields it is given,
// in order: framing fields (Content-Length, Transfer-Encoding) are the
// caller's decision. It refuses, with an *Error and before writing anything
// of the head, any name, value, method, target or reason that would not
// parse back as the same message (CR/LF injection, response splitting).
type Writer struct {
	bw    *bufio.Writer // nil while parked (see Park)
	dst   io.Writer
	names NameCase
}

// NewWriter returns a buffered Writer on dst, taken from a pool. names
// selects how field names are spelt. Call Release when done.
func NewWriter(dst io.Writer, names NameCase) *Writer {
	w := writerPool.Get().(*Writer)
	w.dst = dst
	w.b().Reset(dst)
	w.names = names
	return w
}

// b returns the buffer, taking one from the pool when the writer is parked.
func (w *Writer) b() *bufio.Writer {
	if w.bw == nil {
		w.bw = bufioPool.Get().(*bufio.Writer)
		w.bw.Reset(w.dst)
	}
	return w.bw
}

// Park gives the buffer back to a pool while nothing is buffered, so an
// idle keep-alive connection holds no write buffer (1,000 idle callers
// would otherwise hold 16 MiB); the next write takes one again.
func (w *Writer) Park() {
	if w.bw == nil || w.bw.Buffered() > 0 {
		return
	}
	w.bw.Reset(nil)
	bufioPool.Put(w.bw)
	w.bw = nil
}

// Reset discards unflushed data and writes to dst.
func (w *Writer) Reset(dst io.Writer) {
	w.dst = dst
	w.b().Reset(dst)
}

// Release returns the Writer to the pool, discarding unflushed data. w must
// not be used afterwards.
func (w *Writer) Release() {
	w.dst = nil
	w.b().Reset(nil)
	writerPool.Put(w)
}

// Flush writes buffered data to the destination.
func (w *Writer) Flush() error {
	if w.bw == nil {
		return nil
	}
	return w.bw.Flush()
}

// Buffered returns the number of bytes written but not flushed.
func (w *Writer) Buffered() int {
	if w.bw == nil {
		return 0
	}
	return w.bw.Buffered()
}

// writeErr is an *Error for a message the writer refuses to emit; Status is
// 500 because the fault is in what the caller built.
func writeErr(kind ErrorKind, format string, args ...any) *Error {
	return newErr(kind, 500, format, args...)
}

// WriteRequestHead writes "METHOD target HTTP/1.1" CRLF, the fields and
// the empty line (RFC 9112 3, 5).
func (w *Writer) WriteRequestHead(method, target string, h Header) error {
	if !ValidFieldName(method) {
		return writeErr(ErrBadMethod, "method %q is not a token", excerpt(method))
	}
	if target == "" {
		return writeErr(ErrBadTarget, "empty request-target")
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c >= 0x7f {
			return writeErr(ErrBadTarget, "byte %q in request-target %q", target[i:i+1], excerpt(target))
		}
	}
	if err := checkFields(h); err != nil {
		return err
	}
	w.b().WriteString(method)
	w.b().WriteByte(' ')
	w.b().WriteString(target)
	w.b().WriteString(" HTTP/1.1\r\n")
	return w.writeFields(h)
}

// WriteResponseHead writes "HTTP/1.1 status reason" CRLF, the fields and
// the empty line (RFC 9112 4). The reason may be empty; the SP before it is
// always written, as RFC 9112 4 requires.
func (w *Writer) WriteResponseHead(status int, reason string, h Header) error {
	if status < 100 || status > 999 {
		return writeErr(ErrBadStatus, "status %d is not three digits", status)
	}
	for i := 0; i < len(reason); i++ {
		if !isValueChar(reason[i]) {
			return writeErr(ErrBadStatusLine, "control byte %q in reason-phrase", reason[i:i+1])
		}
	}
	if err := checkFields(h); err != nil {
		return err
	}
	w.b().WriteString("HTTP/1.1 ")
	w.b().Write(strconv.AppendInt(w.b().AvailableBuffer(), int64(status), 10))
	w.b().WriteByte(' ')
	w.b().WriteString(reason)
	w.b().WriteString("\r\n")
	return w.writeFields(h)
}

// checkFields validates every field before anything is written, so a
// refused head leaves no partial output behind.
func checkFields(h Header) *Error {
	for i := range h {
		if !ValidFieldName(h[i].Name) {
			return writeErr(ErrBadFieldName, "field name %q", excerpt(h[i].Name))
		}
		if !ValidFieldValue(h[i].Value) {
			return writeErr(ErrBadFieldValue, "value of %q contains a control byte", excerpt(h[i].Name))
		}
	}
	return nil
}

// writeFields writes the (already checked) fields and the final CRLF.
func (w *Writer) writeFields(h Header) error {
	for i := range h {
		if w.names == TitleCase {
			w.b().Write(appendCanonical(w.b().AvailableBuffer(), h[i].Name))
		} else {
			w.b().WriteString(h[i].Name)
		}
		if h[i].Value == "" {
			w.b().WriteByte(':') // no trailing whitespace for an empty value
		} else {
			w.b().WriteString(": ")
			w.b().WriteString(h[i].Value)
		}
		_, err := w.b().WriteString("\r\n")
		if err != nil {
			return err
		}
	}
	_, err := w.b().WriteString("\r\n")
	return err
}

// appendCanonical appends CanonicalName(name) to b without allocating
// (when b has room).
func appendCanonical(b []byte, name string) []byte {
	upper := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if upper && 'a' <= c && c <= 'z' {
			c -= 'a' - 'A'
		} else if !upper && 'A' <= c && c <= 'Z' {
			c += 'a' - 'A'
		}
		b = append(b, c)
		upper = c == '-'
	}
	return b
}

// Write writes raw body bytes (a Content-Length or close-delimited body).
func (w *Writer) Write(p []byte) (int, error) { return w.b().Write(p) }

// WriteChunk writes p as exactly one chunk: hex size CRLF, p, CRLF
// (RFC 9112 7.1). An empty p writes nothing: a zero-size chunk would be the
// last-chunk and end the body early.
func (w *Writer) WriteChunk(p []byte) error {
	if len(p) == 0 {
		return nil
	}
	w.b().Write(strconv.AppendInt(w.b().AvailableBuffer(), int64(len(p)), 16))
	w.b().WriteString("\r\n")
	w.b().Write(p)
	_, err := w.b().WriteString("\r\n")
	return err
}

// WriteChunkHeader starts a chunk of n bytes (n > 0) whose data the caller
// streams: it writes the chunk-size line (hex size CRLF, RFC 9112 7.1);
// the caller then writes exactly n bytes with Write and ends the chunk
// with WriteChunkEnd. It lets a chunk of any size pass through with
// bounded memory, keeping its boundaries. An n below 1 is refused (a
// zero-size chunk is the last-chunk) and nothing is written.
func (w *Writer) WriteChunkHeader(n int64) error {
	if n <= 0 {
		return writeErr(ErrBadChunk, "chunk size %d", n)
	}
	w.b().Write(strconv.AppendInt(w.b().AvailableBuffer(), n, 16))
	_, err := w.b().WriteString("\r\n")
	return err
}

// WriteChunkEnd ends a chunk begun with WriteChunkHeader (the CRLF after
// its data).
func (w *Writer) WriteChunkEnd() error {
	_, err := w.b().WriteString("\r\n")
	return err
}

// WriteLastChunk writes the last-chunk "0" CRLF, the trailer fields and the
// final CRLF (RFC 9112 7.1.2).
func (w *Writer) WriteLastChunk(trailers Header) error {
	if err := checkFields(trailers); err != nil {
		return err
	}
	w.b().WriteString("0\r\n")
	return w.writeFields(trailers)
}
