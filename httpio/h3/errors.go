package h3

import (
	"errors"
	"strconv"
)

// ErrCode is an HTTP/3 (RFC 9114 section 8.1) or QPACK (RFC 9204 section
// 6) application error code, as carried by RESET_STREAM, STOP_SENDING and
// CONNECTION_CLOSE.
type ErrCode uint64

const (
	ErrCodeNoError                  ErrCode = 0x100
	ErrCodeGeneralProtocolError     ErrCode = 0x101
	ErrCodeInternalError            ErrCode = 0x102
	ErrCodeStreamCreationError      ErrCode = 0x103
	ErrCodeClosedCriticalStream     ErrCode = 0x104
	ErrCodeFrameUnexpected          ErrCode = 0x105
	ErrCodeFrameError               ErrCode = 0x106
	ErrCodeExcessiveLoad            ErrCode = 0x107
	ErrCodeIDError                  ErrCode = 0x108
	ErrCodeSettingsError            ErrCode = 0x109
	ErrCodeMissingSettings          ErrCode = 0x10a
	ErrCodeRequestRejected          ErrCode = 0x10b
	ErrCodeRequestCanceled          ErrCode = 0x10c
	ErrCodeRequestIncomplete        ErrCode = 0x10d
	ErrCodeMessageError             ErrCode = 0x10e
	ErrCodeConnectError             ErrCode = 0x10f
	ErrCodeVersionFallback          ErrCode = 0x110
	ErrCodeQPACKDecompressionFailed ErrCode = 0x200
	ErrCodeQPACKEncoderStreamError  ErrCode = 0x201
	ErrCodeQPACKDecoderStreamError  ErrCode = 0x202
	ErrCodeDatagramError            ErrCode = 0x33 // RFC 9297 section 5.2
)

// String returns the RFC name of c, or c in hex when it is not one we know.
func (c ErrCode) String() string {
	switch c {
	case ErrCodeNoError:
		return "H3_NO_ERROR"
	case ErrCodeGeneralProtocolError:
		return "H3_GENERAL_PROTOCOL_ERROR"
	case ErrCodeInternalError:
		return "H3_INTERNAL_ERROR"
	case ErrCodeStreamCreationError:
		return "H3_STREAM_CREATION_ERROR"
	case ErrCodeClosedCriticalStream:
		return "H3_CLOSED_CRITICAL_STREAM"
	case ErrCodeFrameUnexpected:
		return "H3_FRAME_UNEXPECTED"
	case ErrCodeFrameError:
		return "H3_FRAME_ERROR"
	case ErrCodeExcessiveLoad:
		return "H3_EXCESSIVE_LOAD"
	case ErrCodeIDError:
		return "H3_ID_ERROR"
	case ErrCodeSettingsError:
		return "H3_SETTINGS_ERROR"
	case ErrCodeMissingSettings:
		return "H3_MISSING_SETTINGS"
	case ErrCodeRequestRejected:
		return "H3_REQUEST_REJECTED"
	case ErrCodeRequestCanceled:
		return "H3_REQUEST_CANCELLED"
	case ErrCodeRequestIncomplete:
		return "H3_REQUEST_INCOMPLETE"
	case ErrCodeMessageError:
		return "H3_MESSAGE_ERROR"
	case ErrCodeConnectError:
		return "H3_CONNECT_ERROR"
	case ErrCodeVersionFallback:
		return "H3_VERSION_FALLBACK"
	case ErrCodeQPACKDecompressionFailed:
		return "QPACK_DECOMPRESSION_FAILED"
	case ErrCodeQPACKEncoderStreamError:
		return "QPACK_ENCODER_STREAM_ERROR"
	case ErrCodeQPACKDecoderStreamError:
		return "QPACK_DECODER_STREAM_ERROR"
	case ErrCodeDatagramError:
		return "H3_DATAGRAM_ERROR"
	}
	return "0x" + strconv.FormatUint(uint64(c), 16)
}

// Error is a protocol violation the codec detected. Conn says the peer must
// be closed with Code as a connection error (RFC 9114 section 8: frame
// errors, unexpected frames, QPACK failures); otherwise it is a stream error
// (a malformed message, section 4.1.2: reset the stream with Code, usually
// H3_MESSAGE_ERROR).
type Error struct {
	Code   ErrCode
	Conn   bool
	Reason string
	// Err is the underlying cause when there is one (a QPACK decoder
	// error, a control stream's read error, ErrFieldSectionTooLarge), so
	// callers can match it with errors.Is without parsing Reason.
	Err error
}

func (e *Error) Error() string {
	s := "h3: "
	if e.Conn {
		s += "connection error "
	} else {
		s += "stream error "
	}
	s += e.Code.String() + ": " + e.Reason
	if e.Err != nil {
		s += ": " + e.Err.Error()
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// ErrFieldSectionTooLarge is the cause (Error.Err) when a header or
// trailer section exceeds Limits.MaxFieldSectionSize, and what
// Writer.WriteHead and WriteTrailers return (wrapped, nothing written) for
// a section over the peer's limit (Writer.SetPeerLimit). It is a stream error
// with H3_MESSAGE_ERROR on the wire, but a server may prefer to answer 431
// (RFC 6585) first, so it is told apart from other malformed messages.
var ErrFieldSectionTooLarge = errors.New("field section too large")

func streamErr(reason string) *Error {
	return &Error{Code: ErrCodeMessageError, Reason: reason}
}

func connErr(code ErrCode, reason string) *Error {
	return &Error{Code: code, Conn: true, Reason: reason}
}
