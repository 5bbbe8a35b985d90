// Package loadgen is the benchmark's load generator: a minimal HTTP/1.1
// client over persistent keep-alive connections (far cheaper per request
// than net/http's, so that on a 2-core machine the generator takes as little
// CPU from the pair under test as possible), run at a fixed concurrency and
// bounded both in request count and in time.
package loadgen

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
)

// Request is one prepared request: its head is built once.
type Request struct {
	Method string
	Path   string
	Host   string
	Body   []byte // sent with Content-Length when non-nil
	head   []byte
}

// Prepare builds the request head.
func (r *Request) Prepare() {
	host := r.Host
	if host == "" {
		host = "bench"
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "%s %s HTTP/1.1\r\nHost: %s\r\n", r.Method, r.Path, host)
	if r.Body != nil {
		fmt.Fprintf(&b, "Content-Type: application/octet-stream\r\nContent-Length: %d\r\n", len(r.Body))
	}
	b.WriteString("\r\n")
	if len(r.Body) > 0 && len(r.Body) <= 16<<10 {
		b.Write(r.Body) // one write for small bodies
	}
	r.head = b.Bytes()
}

// Conn is one client connection.
type Conn struct {
	c  net.Conn
	br *bufio.Reader
	// closed is set when the server announced Connection: close or the
	// body was delimited by the end of the connection.
	closed bool
}

// NewConn wraps an established connection.
func NewConn(c net.Conn) *Conn {
	return &Conn{c: c, br: bufio.NewReaderSize(c, 64<<10)}
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// NetConn is the underlying connection.
func (c *Conn) NetConn() net.Conn { return c.c }

// Reusable reports whether another request may be sent on c.
func (c *Conn) Reusable() bool { return !c.closed }

// ErrProtocol marks a response the client could not parse.
var ErrProtocol = errors.New("loadgen: malformed response")

// Do sends req and reads the whole response, discarding the body. It
// returns the status code and the number of body bytes.
func (c *Conn) Do(req *Request) (status int, n int64, err error) {
	if req.head == nil {
		req.Prepare()
	}
	if _, err = c.c.Write(req.head); err != nil {
		return 0, 0, err
	}
	if len(req.Body) > 16<<10 {
		if _, err = c.c.Write(req.Body); err != nil {
			return 0, 0, err
		}
	}
	return c.readResponse()
}

func (c *Conn) readLine() ([]byte, error) {
	line, err := c.br.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, fmt.Errorf("%w: line too long", ErrProtocol)
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			err = io.ErrUnexpectedEOF
		}
		return nil, err
	}
	return bytes.TrimRight(line, "\r\n"), nil
}

func (c *Conn) readResponse() (int, int64, error) {
	for {
		line, err := c.readLine()
		if err != nil {
			return 0, 0, err
		}
		// "HTTP/1.1 200 OK"
		if len(line) < 12 || !bytes.HasPrefix(line, []byte("HTTP/1.")) || line[8] != ' ' {
			return 0, 0, fmt.Errorf("%w: status line %q", ErrProtocol, line)
		}
		status, err := strconv.Atoi(string(line[9:12]))
		if err != nil {
			return 0, 0, fmt.Errorf("%w: status line %q", ErrProtocol, line)
		}
		cl := int64(-1)
		chunked := false
		for {
			h, err := c.readLine()
			if err != nil {
				return 0, 0, err
			}
			if len(h) == 0 {
				break
			}
			i := bytes.IndexByte(h, ':')
			if i <= 0 {
				return 0, 0, fmt.Errorf("%w: header %q", ErrProtocol, h)
			}
			name, val := h[:i], bytes.TrimSpace(h[i+1:])
			switch {
			case bytes.EqualFold(name, []byte("Content-Length")):
				cl, err = strconv.ParseInt(string(val), 10, 64)
				if err != nil || cl < 0 {
					return 0, 0, fmt.Errorf("%w: Content-Length %q", ErrProtocol, val)
				}
			case bytes.EqualFold(name, []byte("Transfer-Encoding")):
				chunked = bytes.EqualFold(val, []byte("chunked"))
			case bytes.EqualFold(name, []byte("Connection")):
				if bytes.Contains(bytes.ToLower(val), []byte("close")) {
					c.closed = true
				}
			}
		}
		if status >= 100 && status < 200 {
			continue // interim response
		}
		if status == 204 || status == 304 {
			return status, 0, nil
		}
		switch {
		case chunked:
			n, err := c.readChunked()
			return status, n, err
		case cl >= 0:
			n, err := c.br.Discard(int(cl))
			return status, int64(n), err
		default:
			c.closed = true
			n, err := io.Copy(io.Discard, c.br)
			return status, n, err
		}
	}
}

func (c *Conn) readChunked() (int64, error) {
	var total int64
	for {
		line, err := c.readLine()
		if err != nil {
			return total, err
		}
		if i := bytes.IndexByte(line, ';'); i >= 0 {
			line = line[:i]
		}
		size, err := strconv.ParseInt(string(bytes.TrimSpace(line)), 16, 64)
		if err != nil || size < 0 {
			return total, fmt.Errorf("%w: chunk size %q", ErrProtocol, line)
		}
		if size == 0 {
			for { // trailer section
				t, err := c.readLine()
				if err != nil {
					return total, err
				}
				if len(t) == 0 {
					return total, nil
				}
			}
		}
		n, err := c.br.Discard(int(size))
		total += int64(n)
		if err != nil {
			return total, err
		}
		if crlf, err := c.readLine(); err != nil || len(crlf) != 0 {
			if err == nil {
				err = fmt.Errorf("%w: missing CRLF after chunk", ErrProtocol)
			}
			return total, err
		}
	}
}
