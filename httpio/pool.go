package httpio

import (
	"bufio"
	"sync"
)

// Buffer sizes. 16 KiB reads cover a typical head (well under 1 KiB) plus
// pipelined requests and large body reads in one syscall; a head larger
// than the buffer makes the buffer grow (up to what Limits allow) for that
// connection only, and the grown buffer is not returned to the pool.
const (
	readBufSize  = 16 << 10
	writeBufSize = 16 << 10
)

var readerPool = sync.Pool{New: func() any {
	return &Reader{buf: make([]byte, readBufSize)}
}}

var writerPool = sync.Pool{New: func() any {
	return &Writer{bw: bufio.NewWriterSize(nil, writeBufSize)}
}}

// bufioPool holds the buffers of parked writers (Writer.Park).
var bufioPool = sync.Pool{New: func() any {
	return bufio.NewWriterSize(nil, writeBufSize)
}}
