package h3

import "io"

// QUIC variable-length integers (RFC 9000 section 16): the two high bits of
// the first byte give the length (1, 2, 4 or 8 bytes), the rest is the value
// in network byte order. HTTP/3 uses them for stream types, frame types,
// frame lengths and setting values. quicvarint is not imported so that the
// codec stays independent of quic-go.

// maxVarint is the largest value a varint can carry (2^62-1).
const maxVarint = 1<<62 - 1

// varintLen returns the number of bytes appendVarint uses for v.
func varintLen(v uint64) int {
	switch {
	case v <= 63:
		return 1
	case v <= 16383:
		return 2
	case v <= 1073741823:
		return 4
	case v <= maxVarint:
		return 8
	}
	panic("h3: varint value too large")
}

// appendVarint appends the shortest encoding of v. Values above 2^62-1
// cannot be encoded; passing one is a programming error and panics rather
// than putting a wrong number on the wire.
func appendVarint(b []byte, v uint64) []byte {
	switch {
	case v <= 63:
		return append(b, byte(v))
	case v <= 16383:
		return append(b, 0x40|byte(v>>8), byte(v))
	case v <= 1073741823:
		return append(b, 0x80|byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	case v <= maxVarint:
		return append(b, 0xc0|byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32),
			byte(v>>24), byte(v>>16), byte(v>>8), byte(v))
	}
	panic("h3: varint value too large")
}

// putVarint writes the encoding of v in exactly n bytes (n as varintLen
// gives it) at b[0:n].
func putVarint(b []byte, v uint64, n int) {
	switch n {
	case 1:
		b[0] = byte(v)
	case 2:
		b[0], b[1] = 0x40|byte(v>>8), byte(v)
	case 4:
		b[0], b[1], b[2], b[3] = 0x80|byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	default:
		b[0], b[1], b[2], b[3] = 0xc0|byte(v>>56), byte(v>>48), byte(v>>40), byte(v>>32)
		b[4], b[5], b[6], b[7] = byte(v>>24), byte(v>>16), byte(v>>8), byte(v)
	}
}

// parseVarint decodes the varint at the start of b and returns it with the
// number of bytes used, or n == 0 when b is too short. Non-minimal
// encodings are accepted, as RFC 9000 section 16 requires.
func parseVarint(b []byte) (v uint64, n int) {
	if len(b) == 0 {
		return 0, 0
	}
	n = 1 << (b[0] >> 6)
	if len(b) < n {
		return 0, 0
	}
	v = uint64(b[0] & 0x3f)
	for i := 1; i < n; i++ {
		v = v<<8 | uint64(b[i])
	}
	return v, n
}

// readVarint reads one varint byte by byte. It returns io.EOF when r ends
// before the first byte and io.ErrUnexpectedEOF when it ends inside.
func readVarint(r io.ByteReader) (uint64, error) {
	b, err := r.ReadByte()
	if err != nil {
		return 0, err
	}
	n := 1 << (b >> 6)
	v := uint64(b & 0x3f)
	for i := 1; i < n; i++ {
		b, err = r.ReadByte()
		if err != nil {
			if err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return 0, err
		}
		v = v<<8 | uint64(b)
	}
	return v, nil
}
