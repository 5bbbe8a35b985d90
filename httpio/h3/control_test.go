package h3

import (
	"bufio"
	"bytes"
	"io"
	"math"
	"testing"
	"testing/iotest"
)

func settingsFrame(pairs ...uint64) []byte {
	var p []byte
	for _, v := range pairs {
		p = appendVarint(p, v)
	}
	return frame(frameSettings, p)
}

func TestControlPrefaceRoundTrip(t *testing.T) {
	for _, s := range []Settings{
		{},
		{MaxFieldSectionSize: 65536, EnableConnectProtocol: true, H3Datagram: true},
		{MaxFieldSectionSize: 1 << 40},
		{QPACKMaxTableCapacity: 4096, QPACKBlockedStreams: 100}, // never sent
	} {
		b := AppendControlPreface(nil, s)
		r := bytes.NewReader(b)
		typ, err := ReadStreamType(r)
		if err != nil || typ != StreamTypeControl {
			t.Fatalf("stream type %d, %v", typ, err)
		}
		got, err := NewControlReader(r).ReadSettings()
		if err != nil {
			t.Fatal(err)
		}
		s.QPACKMaxTableCapacity, s.QPACKBlockedStreams = 0, 0
		if got != s {
			t.Errorf("got %+v, want %+v", got, s)
		}
	}
}

// TestControlPrefaceGrease: the preface carries one reserved setting.
func TestControlPrefaceGrease(t *testing.T) {
	b := AppendControlPreface(nil, Settings{})
	p := b[1:]
	_, n := parseVarint(p) // frame type
	l, m := parseVarint(p[n:])
	p = p[n+m:]
	if uint64(len(p)) != l {
		t.Fatalf("payload %d, length %d", len(p), l)
	}
	id, n := parseVarint(p)
	if id < 0x21 || (id-0x21)%0x1f != 0 {
		t.Fatalf("setting %#x is not reserved", id)
	}
	if _, m := parseVarint(p[n:]); n+m != len(p) {
		t.Fatal("trailing bytes")
	}
}

func TestReadStreamType(t *testing.T) {
	for _, v := range []uint64{0, 1, 2, 3, 63, 64, 0x21, 16383, 16384, 1<<30 - 1, 1 << 30, maxVarint} {
		b := appendVarint(nil, v)
		b = append(b, 0xaa)
		// Plain io.Reader: exactly the varint's bytes are consumed.
		r := iotest.OneByteReader(bytes.NewReader(b))
		got, err := ReadStreamType(r)
		if err != nil || got != v {
			t.Fatalf("%d: got %d, %v", v, got, err)
		}
		rest, _ := io.ReadAll(r)
		if !bytes.Equal(rest, []byte{0xaa}) {
			t.Fatalf("%d: rest %x", v, rest)
		}
		got, err = ReadStreamType(bufio.NewReader(bytes.NewReader(b)))
		if err != nil || got != v {
			t.Fatalf("%d via ByteReader: got %d, %v", v, got, err)
		}
	}
	if _, err := ReadStreamType(bytes.NewReader(nil)); err != io.EOF {
		t.Errorf("empty: %v", err)
	}
	if _, err := ReadStreamType(iotest.OneByteReader(bytes.NewReader([]byte{0x40}))); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated: %v", err)
	}
	if _, err := ReadStreamType(bytes.NewReader([]byte{0x80, 1})); err != io.ErrUnexpectedEOF {
		t.Errorf("truncated ByteReader: %v", err)
	}
}

func TestReadSettings(t *testing.T) {
	settingsErr := want{code: ErrCodeSettingsError, conn: true}
	closed := want{code: ErrCodeClosedCriticalStream, conn: true}
	missing := want{code: ErrCodeMissingSettings, conn: true}
	for _, c := range []struct {
		name string
		in   []byte
		want want
		s    Settings
	}{
		{"empty", settingsFrame(), ok, Settings{}},
		{"all", settingsFrame(0x01, 10, 0x06, 1000, 0x07, 5, 0x08, 1, 0x33, 1, 0x21, 7, 0x1234, 9), ok,
			Settings{QPACKMaxTableCapacity: 10, MaxFieldSectionSize: 1000, QPACKBlockedStreams: 5, EnableConnectProtocol: true, H3Datagram: true}},
		{"zero flags", settingsFrame(0x08, 0, 0x33, 0), ok, Settings{}},
		{"duplicate known", settingsFrame(0x06, 1, 0x06, 1), settingsErr, Settings{}},
		{"duplicate unknown", settingsFrame(0x21, 1, 0x40, 2, 0x21, 1), settingsErr, Settings{}},
		{"many distinct", settingsFrame(manyIDs(40)...), ok, Settings{}},
		{"many with duplicate", settingsFrame(append(manyIDs(40), 0x1000+5*0x1f, 0)...), settingsErr, Settings{}},
		{"HTTP/2 ENABLE_PUSH", settingsFrame(0x02, 0), settingsErr, Settings{}},
		{"HTTP/2 MAX_CONCURRENT_STREAMS", settingsFrame(0x03, 100), settingsErr, Settings{}},
		{"HTTP/2 INITIAL_WINDOW_SIZE", settingsFrame(0x04, 100), settingsErr, Settings{}},
		{"HTTP/2 MAX_FRAME_SIZE", settingsFrame(0x05, 16384), settingsErr, Settings{}},
		{"connect protocol 2", settingsFrame(0x08, 2), settingsErr, Settings{}},
		{"datagram 2", settingsFrame(0x33, 2), settingsErr, Settings{}},
		{"odd payload", frame(frameSettings, []byte{0x06}), want{code: ErrCodeFrameError, conn: true}, Settings{}},
		{"value past payload", frame(frameSettings, []byte{0x06, 0x40, 0x10})[:4], closed, Settings{}},
		{"value crosses frame", cat(frame(frameSettings, []byte{0x06, 0x40}), []byte{0x10}), want{code: ErrCodeFrameError, conn: true}, Settings{}},
		{"too large", appendFrameHeader(nil, frameSettings, maxSettingsFrame+1), want{code: ErrCodeExcessiveLoad, conn: true}, Settings{}},
		{"first frame GOAWAY", frame(frameGoAway, []byte{0}), missing, Settings{}},
		{"first frame unknown", cat(grease, settingsFrame()), missing, Settings{}},
		{"first frame HTTP/2", cat(frame(0x06, nil), settingsFrame()), unexpected, Settings{}},
		{"stream ends", nil, closed, Settings{}},
		{"stream ends in header", []byte{frameSettings}, closed, Settings{}},
		{"stream ends in payload", settingsFrame(0x06, 1000)[:3], closed, Settings{}},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, chunk := range []int{0, 1} {
				s, err := NewControlReader(&memStream{in: c.in, chunk: chunk}).ReadSettings()
				c.want.check(t, err)
				if err == nil && s != c.s {
					t.Fatalf("got %+v, want %+v", s, c.s)
				}
			}
		})
	}
}

func manyIDs(n int) []uint64 {
	var p []uint64
	for i := range n {
		p = append(p, 0x1000+uint64(i)*0x1f, uint64(i))
	}
	return p
}

func TestNextGoAway(t *testing.T) {
	idErr := want{code: ErrCodeIDError, conn: true}
	closed := want{code: ErrCodeClosedCriticalStream, conn: true}
	fErr := want{code: ErrCodeFrameError, conn: true}
	goaway := func(id uint64) []byte { return AppendGoAway(nil, id) }
	maxPush := func(id uint64) []byte { return frame(frameMaxPushID, appendVarint(nil, id)) }
	cancelPush := func(id uint64) []byte { return frame(frameCancelPush, appendVarint(nil, id)) }
	for _, c := range []struct {
		name string
		in   []byte
		ids  []uint64
		want want // after the ids
	}{
		{"none", nil, nil, closed},
		{"decreasing", cat(goaway(8), goaway(8), goaway(4), goaway(0)), []uint64{8, 8, 4, 0}, closed},
		{"large id", goaway(maxVarint), []uint64{maxVarint}, closed},
		{"increasing", cat(goaway(4), goaway(8)), []uint64{4}, idErr},
		{"skips", cat(grease, maxPush(3), unknown, goaway(4), grease), []uint64{4}, closed},
		{"max push id down", cat(maxPush(3), maxPush(2)), nil, idErr},
		{"cancel allowed push", cat(maxPush(3), cancelPush(3), goaway(0)), []uint64{0}, closed},
		{"cancel push never allowed", cancelPush(0), nil, idErr},
		{"cancel push over max", cat(maxPush(3), cancelPush(4)), nil, idErr},
		{"second SETTINGS", settingsFrame(), nil, unexpected},
		{"DATA", data("x"), nil, unexpected},
		{"HEADERS", headers(":status", "200"), nil, unexpected},
		{"PUSH_PROMISE", frame(framePushPromise, []byte{0}), nil, unexpected},
		{"HTTP/2 frame", frame(0x08, nil), nil, unexpected},
		{"GOAWAY empty", frame(frameGoAway, nil), nil, fErr},
		{"GOAWAY trailing byte", frame(frameGoAway, []byte{1, 2}), nil, fErr},
		{"GOAWAY short varint", frame(frameGoAway, []byte{0x40}), nil, fErr},
		{"GOAWAY long payload", appendFrameHeader(nil, frameGoAway, 1<<40), nil, fErr},
		{"MAX_PUSH_ID trailing", frame(frameMaxPushID, []byte{1, 2}), nil, fErr},
		{"huge unknown", appendFrameHeader(nil, 0x21, maxSkipFrame+1), nil, want{code: ErrCodeExcessiveLoad, conn: true}},
		{"ends in frame", goaway(100)[:2], nil, closed},
	} {
		t.Run(c.name, func(t *testing.T) {
			for _, chunk := range []int{0, 1} {
				cr := NewControlReader(&memStream{in: cat(settingsFrame(), c.in), chunk: chunk})
				if _, err := cr.ReadSettings(); err != nil {
					t.Fatal(err)
				}
				for _, want := range c.ids {
					id, err := cr.NextGoAway()
					if err != nil || id != want {
						t.Fatalf("got %d, %v, want %d", id, err, want)
					}
				}
				_, err := cr.NextGoAway()
				c.want.check(t, err)
			}
		})
	}
}

// TestControlReadError: a reset control stream is still
// H3_CLOSED_CRITICAL_STREAM, with the cause kept.
func TestControlReadError(t *testing.T) {
	boom := resetError(ErrCodeInternalError)
	cr := NewControlReader(io.MultiReader(bytes.NewReader(settingsFrame()), iotest.ErrReader(boom)))
	if _, err := cr.ReadSettings(); err != nil {
		t.Fatal(err)
	}
	_, err := cr.NextGoAway()
	want{code: ErrCodeClosedCriticalStream, conn: true, is: boom}.check(t, err)
}

func TestVarint(t *testing.T) {
	for _, c := range []struct {
		v uint64
		n int
	}{{0, 1}, {63, 1}, {64, 2}, {16383, 2}, {16384, 4}, {1<<30 - 1, 4}, {1 << 30, 8}, {maxVarint, 8}} {
		b := appendVarint(nil, c.v)
		if len(b) != c.n || varintLen(c.v) != c.n {
			t.Errorf("%d: %d bytes, want %d", c.v, len(b), c.n)
		}
		got, n := parseVarint(b)
		if got != c.v || n != c.n {
			t.Errorf("%d: parsed %d (%d bytes)", c.v, got, n)
		}
		pb := make([]byte, c.n)
		putVarint(pb, c.v, c.n)
		if !bytes.Equal(pb, b) {
			t.Errorf("%d: put %x, append %x", c.v, pb, b)
		}
		if _, n := parseVarint(b[:len(b)-1]); n != 0 {
			t.Errorf("%d: truncated parsed", c.v)
		}
	}
	// RFC 9000 appendix A.1 examples, including a non-minimal encoding.
	for _, c := range []struct {
		b []byte
		v uint64
	}{
		{[]byte{0xc2, 0x19, 0x7c, 0x5e, 0xff, 0x14, 0xe8, 0x8c}, 151288809941952652},
		{[]byte{0x9d, 0x7f, 0x3e, 0x7d}, 494878333},
		{[]byte{0x7b, 0xbd}, 15293},
		{[]byte{0x25}, 37},
		{[]byte{0x40, 0x25}, 37},
	} {
		if v, n := parseVarint(c.b); v != c.v || n != len(c.b) {
			t.Errorf("%x: %d", c.b, v)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("no panic for 2^62")
		}
	}()
	appendVarint(nil, math.MaxUint64>>2+1)
}

func TestErrCodeString(t *testing.T) {
	for c, s := range map[ErrCode]string{
		ErrCodeNoError: "H3_NO_ERROR", ErrCodeMessageError: "H3_MESSAGE_ERROR",
		ErrCodeRequestIncomplete: "H3_REQUEST_INCOMPLETE", ErrCodeQPACKDecompressionFailed: "QPACK_DECOMPRESSION_FAILED",
		ErrCodeVersionFallback: "H3_VERSION_FALLBACK", 0x1234: "0x1234",
	} {
		if c.String() != s {
			t.Errorf("%#x: %q", uint64(c), c.String())
		}
	}
	e := &Error{Code: ErrCodeFrameError, Conn: true, Reason: "x"}
	if e.Error() != "h3: connection error H3_FRAME_ERROR: x" {
		t.Error(e.Error())
	}
}
