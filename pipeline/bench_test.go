package pipeline

import (
	"bytes"
	"io"
	"net"
	"testing"
	"time"
)

// rawOrigin answers every request head with the same small response,
// allocating nothing per request.
func rawOrigin(b *testing.B) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				buf := make([]byte, 4096)
				var pending []byte
				for {
					n, err := c.Read(buf)
					if err != nil {
						return
					}
					pending = append(pending, buf[:n]...)
					for {
						i := bytes.Index(pending, []byte("\r\n\r\n"))
						if i < 0 {
							break
						}
						pending = pending[:copy(pending, pending[i+4:])]
						if _, err := io.WriteString(c, "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 5\r\n\r\nhello"); err != nil {
							return
						}
					}
				}
			}()
		}
	}()
	return ln.Addr().String()
}

// BenchmarkBodilessExchange runs GETs on one keep-alive caller connection
// through both sides, the tunnel synchronous (syncLink: its buffers count
// in the allocations), to a raw origin. It measures the per-request cost
// of the client, the codec and the server together.
func BenchmarkBodilessExchange(b *testing.B) {
	defer func(h, f time.Duration) { hangupDelay, flushDelay = h, f }(hangupDelay, flushDelay)
	hangupDelay, flushDelay = time.Hour, time.Hour
	pool := NewOriginPool(OriginOptions{Address: rawOrigin(b), NoDelay: true})
	b.Cleanup(func() { pool.Close() })
	h := NewHandler(&ServerOptions{Origin: pool})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go ServeClientConn(b.Context(), c, &ClientOptions{Tunnel: syncLink{h: h}, Now: fixedNow})
		}
	}()
	c, err := net.Dial("tcp", ln.Addr().String())
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	req := []byte("GET /x HTTP/1.1\r\nHost: example.com\r\nUser-Agent: bench\r\nAccept: */*\r\n\r\n")
	resp := make([]byte, 4096)
	roundTrip := func() {
		if _, err := c.Write(req); err != nil {
			b.Fatal(err)
		}
		// The response ends with the 5-byte body.
		got := 0
		for !bytes.HasSuffix(resp[:got], []byte("hello")) {
			n, err := c.Read(resp[got:])
			if err != nil {
				b.Fatal(err)
			}
			got += n
		}
	}
	roundTrip()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		roundTrip()
	}
}
