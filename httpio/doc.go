// Package httpio reads and writes HTTP/1.1 messages as RFC 9112 defines them.
//
// It is ptproxy's security boundary: the client side reads requests from
// local applications with it, the server side reads responses from the
// origin. The reader is strict (every deviation is a typed *Error carrying
// the status code to answer with), keeps header fields in arrival order with
// their original spelling, and hands chunked bodies on one chunk at a time so
// chunk boundaries can survive the tunnel.
//
// httpio imports only the standard library and starts no goroutines.
package httpio
