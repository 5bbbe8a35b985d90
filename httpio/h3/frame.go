package h3

import "io"

// Frame types (RFC 9114 section 7.2).
const (
	frameData        = 0x00
	frameHeaders     = 0x01
	frameCancelPush  = 0x03
	frameSettings    = 0x04
	framePushPromise = 0x05
	frameGoAway      = 0x07
	frameMaxPushID   = 0x0d
)

// isHTTP2Frame reports the frame types HTTP/2 defined and HTTP/3 reserved
// (RFC 9114 section 7.2.8): receiving one is H3_FRAME_UNEXPECTED, because
// it means the peer confused the two protocols.
func isHTTP2Frame(t uint64) bool {
	return t == 0x02 || t == 0x06 || t == 0x08 || t == 0x09
}

// maxSkipFrame bounds the payload of a frame that is skipped (unknown or
// reserved types, RFC 9114 section 9). Skipping never buffers, but an
// endless frame would pin the stream while carrying nothing we use.
const maxSkipFrame = 1 << 20

// maxFrameHeader is the largest frame header: two 8-byte varints.
const maxFrameHeader = 16

// maxEmptyReads bounds consecutive (0, nil) reads, as bufio does, so a
// broken Stream cannot spin the reader forever.
const maxEmptyReads = 100

// frameReader is a small bufio.Reader specialised for HTTP/3 frames: it
// reads varints and payloads out of one reused buffer and hands large
// payload reads straight to the caller's slice.
type frameReader struct {
	src  io.Reader
	buf  []byte
	r, w int
	err  error // sticky error from src; io.EOF once the peer's FIN is read
}

func (f *frameReader) reset(src io.Reader) {
	f.src, f.r, f.w, f.err = src, 0, 0, nil
}

func (f *frameReader) buffered() int { return f.w - f.r }

// fill reads at least one more byte into the buffer, or returns the error
// that stopped it.
func (f *frameReader) fill() error {
	if f.r == f.w {
		f.r, f.w = 0, 0
	} else if f.w == len(f.buf) {
		n := copy(f.buf, f.buf[f.r:f.w])
		f.r, f.w = 0, n
	}
	if f.err != nil {
		return f.err
	}
	for range maxEmptyReads {
		n, err := f.src.Read(f.buf[f.w:])
		f.w += n
		if err != nil {
			f.err = err
			if n > 0 {
				return nil
			}
			return err
		}
		if n > 0 {
			return nil
		}
	}
	f.err = io.ErrNoProgress
	return f.err
}

// ensure buffers at least n bytes (n <= len(f.buf)). A stream ending first
// gives io.ErrUnexpectedEOF.
func (f *frameReader) ensure(n int) error {
	for f.w-f.r < n {
		if len(f.buf)-f.r < n {
			m := copy(f.buf, f.buf[f.r:f.w])
			f.r, f.w = 0, m
		}
		if err := f.fill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// varint reads one varint and returns it with its encoded length. It
// returns io.EOF only when the stream ends before the first byte.
func (f *frameReader) varint() (uint64, int, error) {
	if f.r == f.w {
		if err := f.fill(); err != nil {
			return 0, 0, err
		}
	}
	n := 1 << (f.buf[f.r] >> 6)
	if err := f.ensure(n); err != nil {
		return 0, 0, err
	}
	v, _ := parseVarint(f.buf[f.r:f.w])
	f.r += n
	return v, n, nil
}

// varintIn reads a varint that must lie within the next left bytes of a
// payload; ok is false when its encoding is longer, and nothing is
// consumed then.
func (f *frameReader) varintIn(left uint64) (v uint64, n int, ok bool, err error) {
	if f.r == f.w {
		if err := f.fill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, 0, false, err
		}
	}
	if uint64(1)<<(f.buf[f.r]>>6) > left {
		return 0, 0, false, nil
	}
	v, n, err = f.varint()
	return v, n, err == nil, err
}

// frameHeader reads a frame's type and length. io.EOF means the stream
// ended cleanly between frames; io.ErrUnexpectedEOF that it ended inside
// the header.
func (f *frameReader) frameHeader() (typ, length uint64, err error) {
	typ, _, err = f.varint()
	if err != nil {
		return 0, 0, err
	}
	length, _, err = f.varint()
	if err == io.EOF {
		err = io.ErrUnexpectedEOF
	}
	return typ, length, err
}

// discard skips n payload bytes without keeping them.
func (f *frameReader) discard(n uint64) error {
	for n > 0 {
		if f.r == f.w {
			if err := f.fill(); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		k := uint64(f.w - f.r)
		if k > n {
			k = n
		}
		f.r += int(k)
		n -= k
	}
	return nil
}

// directRead is the smallest read that bypasses the buffer when it is
// empty: a copy through the buffer costs more than the extra Read call.
const directRead = 4 << 10

// read reads up to len(p) payload bytes, like bufio.Reader.Read: it
// returns n > 0 with a nil error, or 0 with the error (io.ErrUnexpectedEOF
// when the stream has ended, since the caller asks only for bytes a frame
// has announced).
func (f *frameReader) read(p []byte) (int, error) {
	if f.r == f.w {
		if len(p) >= directRead && f.err == nil {
			for range maxEmptyReads {
				n, err := f.src.Read(p)
				if err != nil {
					f.err = err
				}
				if n > 0 {
					return n, nil
				}
				if err != nil {
					if err == io.EOF {
						err = io.ErrUnexpectedEOF
					}
					return 0, err
				}
			}
			f.err = io.ErrNoProgress
			return 0, f.err
		}
		if err := f.fill(); err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
	}
	n := copy(p, f.buf[f.r:f.w])
	f.r += n
	return n, nil
}

// appendFrameHeader appends a frame's type and length.
func appendFrameHeader(b []byte, typ, length uint64) []byte {
	return appendVarint(appendVarint(b, typ), length)
}
