package pipeline

import "sync"

// ChunkSize is the size of pooled body buffers. A chunk larger than this is
// handed on in pieces.
const ChunkSize = 16 << 10

var bufPool = sync.Pool{New: func() any { b := make([]byte, ChunkSize); return &b }}

// NewChunk returns a Chunk backed by a pooled buffer of ChunkSize bytes;
// the caller fills Data = buf[:n] via Buf.
func NewChunk() *Chunk {
	b := bufPool.Get().(*[]byte)
	return &Chunk{buf: b, Data: (*b)[:0]}
}

// Buf is the whole pooled backing array, to read into.
func (c *Chunk) Buf() []byte {
	if c.buf == nil {
		return nil
	}
	return (*c.buf)[:cap(*c.buf)]
}

// Release returns the backing array to the pool. The Chunk must not be used
// afterwards.
func (c *Chunk) Release() {
	if c.buf != nil {
		bufPool.Put(c.buf)
		c.buf = nil
		c.Data = nil
	}
}
