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

// readerPool holds Readers without their buffers: a Reader takes a buffer
// from readBufPool when it first reads, and gives it back when parked
// (Reader.Park) or released.
var readerPool = sync.Pool{New: func() any { return new(Reader) }}

var readBufPool = sync.Pool{New: func() any {
	b := make([]byte, readBufSize)
	return &b
}}

var writerPool = sync.Pool{New: func() any {
	return &Writer{bw: bufio.NewWriterSize(nil, writeBufSize)}
}}

// bufioPool holds the buffers of parked writers (Writer.Park).
var bufioPool = sync.Pool{New: func() any {
	return bufio.NewWriterSize(nil, writeBufSize)
}}
