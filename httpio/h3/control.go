package h3

import (
	"fmt"
	"io"
	"math/rand/v2"
	"slices"
)

// Unidirectional stream types (RFC 9114 section 6.2, RFC 9204 section 4.2).
const (
	StreamTypeControl      = 0x00
	StreamTypePush         = 0x01
	StreamTypeQPACKEncoder = 0x02
	StreamTypeQPACKDecoder = 0x03
)

// Setting identifiers (RFC 9114 section 7.2.4.1, RFC 9204 section 5,
// RFC 9220 section 3, RFC 9297 section 2.1.1).
const (
	settingQPACKMaxTableCapacity = 0x01
	settingMaxFieldSectionSize   = 0x06
	settingQPACKBlockedStreams   = 0x07
	settingEnableConnectProtocol = 0x08
	settingH3Datagram            = 0x33
)

// Settings are the parameters of a SETTINGS frame that ptproxy knows.
type Settings struct {
	MaxFieldSectionSize   uint64 // 0 = not sent (unlimited)
	QPACKMaxTableCapacity uint64 // never sent: we use the static table only
	QPACKBlockedStreams   uint64 // never sent, meaningless with capacity 0
	EnableConnectProtocol bool   // SETTINGS_ENABLE_CONNECT_PROTOCOL (0x08, RFC 8441/9220)
	H3Datagram            bool   // SETTINGS_H3_DATAGRAM (0x33, RFC 9297)
}

// maxSettingsFrame bounds a SETTINGS payload. Real ones are a few dozen
// bytes; the bound caps the work of the duplicate check.
const maxSettingsFrame = 16 << 10

// AppendControlPreface appends the start of our control stream: the stream
// type and the SETTINGS frame (RFC 9114 section 6.2.1). The QPACK settings
// are never sent, so the peer's encoder sees a dynamic table capacity of 0
// (RFC 9204 section 3.2.3) and uses only the static table. One reserved
// setting with a random id and value is added (section 7.2.4.1) so that a
// peer which fails on unknown settings is found at once, not when a real
// extension appears.
func AppendControlPreface(b []byte, s Settings) []byte {
	var pairs [4][2]uint64
	ps := pairs[:0]
	if s.MaxFieldSectionSize > 0 {
		ps = append(ps, [2]uint64{settingMaxFieldSectionSize, s.MaxFieldSectionSize})
	}
	if s.EnableConnectProtocol {
		ps = append(ps, [2]uint64{settingEnableConnectProtocol, 1})
	}
	if s.H3Datagram {
		ps = append(ps, [2]uint64{settingH3Datagram, 1})
	}
	ps = append(ps, [2]uint64{0x1f*rand.Uint64N(1<<20) + 0x21, uint64(rand.Uint32N(1 << 14))})
	n := 0
	for _, p := range ps {
		n += varintLen(p[0]) + varintLen(p[1])
	}
	b = appendVarint(b, StreamTypeControl)
	b = appendFrameHeader(b, frameSettings, uint64(n))
	for _, p := range ps {
		b = appendVarint(appendVarint(b, p[0]), p[1])
	}
	return b
}

// AppendGoAway appends a GOAWAY frame (RFC 9114 section 7.2.6) carrying
// id: a client-initiated bidirectional stream id from a server, a push id
// from a client.
func AppendGoAway(b []byte, id uint64) []byte {
	return appendVarint(appendFrameHeader(b, frameGoAway, uint64(varintLen(id))), id)
}

// ReadStreamType reads the varint at the start of a unidirectional stream
// (RFC 9114 section 6.2), reading no byte past it. It returns io.EOF when
// the stream ends first, which section 6.2 says to tolerate.
func ReadStreamType(r io.Reader) (uint64, error) {
	if br, ok := r.(io.ByteReader); ok {
		return readVarint(br)
	}
	var b [8]byte
	if _, err := io.ReadFull(r, b[:1]); err != nil {
		return 0, err
	}
	n := 1 << (b[0] >> 6)
	if _, err := io.ReadFull(r, b[1:n]); err != nil {
		if err == io.EOF {
			err = io.ErrUnexpectedEOF
		}
		return 0, err
	}
	v, _ := parseVarint(b[:n])
	return v, nil
}

// ControlReader reads the peer's control stream after its stream type.
// Every error it returns is a connection error (an *Error with Conn set):
// the control stream cannot be reset on its own (RFC 9114 section 6.2.1).
type ControlReader struct {
	fr         frameReader
	settings   bool
	goAway     uint64
	gotGoAway  bool
	maxPushID  uint64
	gotMaxPush bool
	idsScratch [16]uint64
}

// controlBufSize: control streams carry a handful of small frames.
const controlBufSize = 512

// NewControlReader returns a reader for the control stream r.
func NewControlReader(r io.Reader) *ControlReader {
	c := &ControlReader{}
	c.fr.buf = make([]byte, controlBufSize)
	c.fr.reset(r)
	return c
}

// closedErr maps the end of the control stream, cleanly or not, to
// H3_CLOSED_CRITICAL_STREAM (section 6.2.1); err is kept as the cause.
func closedErr(err error) *Error {
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		err = nil
	}
	return &Error{Code: ErrCodeClosedCriticalStream, Conn: true, Reason: "control stream closed", Err: err}
}

// frame reads the next frame header, skipping unknown frames.
func (c *ControlReader) frame() (typ, length uint64, err error) {
	for {
		typ, length, err = c.fr.frameHeader()
		if err != nil {
			return 0, 0, closedErr(err)
		}
		switch {
		case typ == frameData, typ == frameHeaders, typ == framePushPromise, typ == frameSettings,
			typ == frameGoAway, typ == frameMaxPushID, typ == frameCancelPush:
			return typ, length, nil
		case isHTTP2Frame(typ):
			return 0, 0, connErr(ErrCodeFrameUnexpected, fmt.Sprintf("HTTP/2 frame type %#x", typ))
		}
		if !c.settings {
			// Section 6.2.1: the first frame must be SETTINGS.
			return 0, 0, connErr(ErrCodeMissingSettings, fmt.Sprintf("control stream starts with frame type %#x", typ))
		}
		if length > maxSkipFrame {
			return 0, 0, connErr(ErrCodeExcessiveLoad, fmt.Sprintf("unknown frame of %d bytes", length))
		}
		if err := c.fr.discard(length); err != nil {
			return 0, 0, closedErr(err)
		}
	}
}

// varintPayload reads a frame payload that is exactly one varint
// (GOAWAY, MAX_PUSH_ID, CANCEL_PUSH); anything else is H3_FRAME_ERROR
// (section 7.1).
func (c *ControlReader) varintPayload(length uint64, name string) (uint64, error) {
	if length == 0 || length > 8 {
		return 0, connErr(ErrCodeFrameError, name+" payload is not one varint")
	}
	v, n, ok, err := c.fr.varintIn(length)
	if err != nil {
		return 0, closedErr(err)
	}
	if !ok || uint64(n) != length {
		return 0, connErr(ErrCodeFrameError, name+" payload is not one varint")
	}
	return v, nil
}

// ReadSettings reads the first frame, which must be SETTINGS (else
// H3_MISSING_SETTINGS). Duplicate identifiers and the HTTP/2 ones HTTP/3
// reserved (0x02-0x05) are H3_SETTINGS_ERROR (section 7.2.4); unknown
// identifiers are ignored.
func (c *ControlReader) ReadSettings() (Settings, error) {
	var s Settings
	if c.settings {
		return s, fmt.Errorf("h3: ReadSettings called twice")
	}
	typ, length, err := c.frame()
	if err != nil {
		return s, err
	}
	if typ != frameSettings {
		return s, connErr(ErrCodeMissingSettings, fmt.Sprintf("control stream starts with frame type %#x", typ))
	}
	c.settings = true
	if length > maxSettingsFrame {
		return s, connErr(ErrCodeExcessiveLoad, fmt.Sprintf("SETTINGS frame of %d bytes", length))
	}
	ids := c.idsScratch[:0]
	for length > 0 {
		id, n, ok, err := c.fr.varintIn(length - 1)
		if err != nil {
			return s, closedErr(err)
		}
		if !ok {
			return s, connErr(ErrCodeFrameError, "SETTINGS payload ends inside a setting")
		}
		length -= uint64(n)
		v, n, ok, err := c.fr.varintIn(length)
		if err != nil {
			return s, closedErr(err)
		}
		if !ok {
			return s, connErr(ErrCodeFrameError, "SETTINGS payload ends inside a setting")
		}
		length -= uint64(n)
		ids = append(ids, id)
		switch id {
		case 0x02, 0x03, 0x04, 0x05:
			return s, connErr(ErrCodeSettingsError, fmt.Sprintf("HTTP/2 setting %#x", id))
		case settingQPACKMaxTableCapacity:
			s.QPACKMaxTableCapacity = v
		case settingMaxFieldSectionSize:
			s.MaxFieldSectionSize = v
		case settingQPACKBlockedStreams:
			s.QPACKBlockedStreams = v
		case settingEnableConnectProtocol, settingH3Datagram:
			// RFC 8441 section 3 and RFC 9297 section 2.1.1: 0 or 1.
			if v > 1 {
				return s, connErr(ErrCodeSettingsError, fmt.Sprintf("setting %#x = %d", id, v))
			}
			if id == settingH3Datagram {
				s.H3Datagram = v == 1
			} else {
				s.EnableConnectProtocol = v == 1
			}
		}
	}
	slices.Sort(ids)
	for i := 1; i < len(ids); i++ {
		if ids[i] == ids[i-1] {
			return s, connErr(ErrCodeSettingsError, fmt.Sprintf("setting %#x repeated", ids[i]))
		}
	}
	return s, nil
}

// NextGoAway returns the id of the next GOAWAY frame (RFC 9114 section
// 5.2), skipping MAX_PUSH_ID and unknown frames. A second SETTINGS, DATA,
// HEADERS or PUSH_PROMISE is H3_FRAME_UNEXPECTED (section 7.2); a GOAWAY
// id larger than an earlier one, a CANCEL_PUSH for a push the peer was not
// allowed, or a MAX_PUSH_ID going down is H3_ID_ERROR (sections 5.2,
// 7.2.3, 7.2.7); the stream ending is H3_CLOSED_CRITICAL_STREAM. The
// GOAWAY id is not checked against the stream kind it must name, because
// that depends on which side reads; the caller knows.
func (c *ControlReader) NextGoAway() (id uint64, err error) {
	if !c.settings {
		return 0, fmt.Errorf("h3: NextGoAway called before ReadSettings")
	}
	for {
		typ, length, err := c.frame()
		if err != nil {
			return 0, err
		}
		switch typ {
		case frameGoAway:
			id, err := c.varintPayload(length, "GOAWAY")
			if err != nil {
				return 0, err
			}
			if c.gotGoAway && id > c.goAway {
				return 0, connErr(ErrCodeIDError, fmt.Sprintf("GOAWAY id %d after %d", id, c.goAway))
			}
			c.goAway, c.gotGoAway = id, true
			return id, nil
		case frameMaxPushID:
			// Only a client sends it, and we never push, so its value
			// matters only to judge CANCEL_PUSH.
			v, err := c.varintPayload(length, "MAX_PUSH_ID")
			if err != nil {
				return 0, err
			}
			if c.gotMaxPush && v < c.maxPushID {
				return 0, connErr(ErrCodeIDError, fmt.Sprintf("MAX_PUSH_ID %d after %d", v, c.maxPushID))
			}
			c.maxPushID, c.gotMaxPush = v, true
		case frameCancelPush:
			v, err := c.varintPayload(length, "CANCEL_PUSH")
			if err != nil {
				return 0, err
			}
			// Section 7.2.3: only push ids the client allowed may be
			// cancelled; a server reading our (a client's) control
			// stream never saw MAX_PUSH_ID from us, nor we from it.
			if !c.gotMaxPush || v > c.maxPushID {
				return 0, connErr(ErrCodeIDError, fmt.Sprintf("CANCEL_PUSH for push id %d never allowed", v))
			}
		default:
			return 0, connErr(ErrCodeFrameUnexpected, fmt.Sprintf("frame type %#x on the control stream", typ))
		}
	}
}
