// Package h3 reads and writes HTTP/3 messages (RFC 9114) on an abstract
// QUIC stream, so that ptproxy owns its request/response path instead of
// going through quic-go's http3 package. It knows nothing of QUIC: the
// session package adapts a *quic.Stream to [Stream].
//
// A [Writer] puts a request, or 1xx heads and a response, on a request
// stream as HEADERS and DATA frames; each WriteData is exactly one DATA
// frame, and a [Reader] hands frames back one at a time ([Reader.NextData],
// [Reader.FrameLeft]), so the chunk boundaries of an HTTP/1.1 body survive
// the tunnel. [AppendControlPreface], [ControlReader] and friends cover the
// control stream (SETTINGS, GOAWAY).
//
// The Reader is the security boundary for messages from the peer, so it is
// strict; every violation is an [*Error] whose Conn field says whether the
// whole connection (RFC 9114 section 8) or only the stream (section 4.1.2)
// must be failed:
//
//   - frames: unknown and reserved types are skipped (section 9) but
//     bounded; HTTP/2 types, control frames on a request stream, DATA
//     before HEADERS, anything after trailers and a stream ending inside a
//     frame are connection errors (sections 4.1, 7.1, 7.2.8);
//   - field sections (sections 4.2, 4.3): lower-case token names, valid
//     values, pseudo-fields first, known, once, matching the message kind;
//     no connection-specific fields, te only "trailers"; the request
//     pseudo-field sets of section 4.3.1, CONNECT (4.4) and extended
//     CONNECT (RFC 9220); a three-digit :status other than 101 (4.5);
//     :path and :authority strict enough to become an HTTP/1.1
//     request-target and Host unchanged;
//   - content-length: digits, repeated values agree, and the DATA frames
//     add up to it exactly (section 4.1.2);
//   - the section size limit of section 4.2.2;
//   - SETTINGS: first on the control stream, no duplicate or HTTP/2
//     identifiers (section 7.2.4); GOAWAY ids never grow (section 5.2).
//
// QPACK (RFC 9204) is used with the static table only: the encoder never
// inserts into a dynamic table, and we never send
// SETTINGS_QPACK_MAX_TABLE_CAPACITY, so the peer's encoder must assume a
// capacity of 0 (RFC 9204 section 3.2.3) and may not reference a dynamic
// table either. That is a complete, interoperable HTTP/3 implementation:
// no encoder or decoder stream instructions are ever needed, no stream can
// be blocked, and any dynamic reference from the peer is a
// QPACK_DECOMPRESSION_FAILED connection error. The cost is compression
// ratio on repeated non-static fields, which matters little on one
// long-lived tunnel compared with the head-of-line blocking a dynamic
// table brings.
//
// Readers and Writers are pooled; Release returns them. Heads and
// trailers a Reader returns share its reused storage (see
// [Reader.ReadHead]). The package starts no goroutines.
package h3
