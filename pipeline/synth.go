package pipeline

import (
	"errors"
	"strconv"

	"github.com/ptproxy/ptproxy/httpio"
)

// Messages of the synthetic responses. Where the original ptproxy answers
// the same situation, the text is the original's (REFERENCE 1.12).
const (
	MsgConnectNotImplemented = "CONNECT requests not implemented yet"                                    // 405, client
	MsgBadTransferEncoding   = "invalid Transfer-Encoding value: only chunked transfer coding supported" // 400, client
	MsgHostRequired          = "Host header required"                                                    // 400, both (original: 502)
	MsgBadRequest            = "bad request"                                                             // 4xx from the HTTP/1.1 parser
	MsgTunnelDown            = "tunnel not established"                                                  // 503, client
	MsgDraining              = "shutting down"                                                           // 503, both
	MsgSendingRequest        = "error sending request"                                                   // 502, client
	MsgStreamingBody         = "error when streaming request body"                                       // 502, client
	MsgReceivingResponse     = "error when receiving response"                                           // 502, client
	MsgCouldNotProxy         = "could not proxy request"                                                 // 502/504, server
	MsgUnknownEndpoint       = "unknown endpoint"                                                        // 404, server
	MsgForbidden             = "request refused"                                                         // 403, server
)

// Server field values of synthetic responses, by the side that made them.
const (
	serverNameClient = "ptproxy client"
	serverNameServer = "ptproxy server"
)

// maxSynthBody bounds the body text so it fits one pooled chunk.
const maxSynthBody = ChunkSize

// Synthesize builds the complete response that answers e: a head with
// Content-Type text/plain;charset=UTF-8, Server "ptproxy client" or
// "ptproxy server" and a Content-Length body, and one Chunk holding the
// body: the text of SynthBody. Close is set when the request could not be
// parsed or is refused outright (KindBadRequest, KindMethodNotAllowed): the
// connection is out of step with the caller. Major/Minor are 1.1; the sink
// frames the head with CallerResponseFields or WriteHTTP3ResponseHead.
// The caller owns the Chunk and releases it.
func Synthesize(e *Error) (*Head, *Chunk) {
	server := serverNameClient
	if e.Side == ServerSide {
		server = serverNameServer
	}
	c := NewChunk()
	c.Data = append(c.Data, SynthBody(e)...)
	h := &Head{
		Status: e.Status,
		Header: httpio.Header{
			{Name: "Content-Type", Value: "text/plain;charset=UTF-8"},
			{Name: "Server", Value: server},
		},
		Body:  httpio.Framing{Kind: httpio.LengthBody, Length: int64(len(c.Data))},
		Major: 1, Minor: 1,
		Close: e.Kind == KindBadRequest || e.Kind == KindMethodNotAllowed,
	}
	return h, c
}

// SynthBody is the body text of the synthetic response for e: what the
// caller may know, never the detail the log gets (addresses of the origin
// or the peer, errors of the tunnel). It is Msg, then ": " and the class
// (e.Public) when there is one; for a request refused by the HTTP/1.1
// parser the class is the parser's description of the caller's own input
// (httpio errors never hold addresses). A request refused for its
// Transfer-Encoding gets the original's fixed text. It ends in a newline and
// is cut to ChunkSize bytes (on a UTF-8 boundary) so it fits one chunk.
func SynthBody(e *Error) string {
	text := e.Msg
	class := e.Public
	if herr, ok := errors.AsType[*httpio.Error](e.Err); ok && e.Kind == KindBadRequest {
		if herr.Kind == httpio.ErrUnsupportedTransferCoding {
			text, class = MsgBadTransferEncoding, ""
		} else if class == "" {
			class = herr.Error()
		}
	}
	switch {
	case text == "":
		text = class
	case class != "":
		text += ": " + class
	}
	if text == "" {
		text = "error " + strconv.Itoa(e.Status)
	}
	if len(text)+1 > maxSynthBody {
		cut := maxSynthBody - 1
		for cut > 0 && text[cut]&0xC0 == 0x80 { // do not split a UTF-8 sequence
			cut--
		}
		text = text[:cut]
	}
	return text + "\n"
}
