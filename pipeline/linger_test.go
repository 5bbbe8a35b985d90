package pipeline

import (
	"fmt"
	"testing"
)

// TestEarlyRefusalToCallerThatSendsFirst: ab, and many HTTP/1.0 clients,
// write the whole request body before they read anything. After an early
// 413 whose rest of body is too large to keep the connection, the lingering
// close must take all of that body: a byte bound on it closes the socket
// with input unread, the reset reaches the caller while it is still
// writing, and it never reads the answer. (Found by TestInterop's early-413
// row: ab through ptproxy failed where ab straight to nginx got its 413.)
func TestEarlyRefusalToCallerThatSendsFirst(t *testing.T) {
	addr := startClient(t, earlyTunnel())
	// Beyond what loopback socket buffers absorb, so the body only gets
	// through if the proxy reads it.
	const size = 16 << 20
	c, br := dialRaw(t, addr, fmt.Sprintf("POST /up HTTP/1.0\r\nHost: x\r\nContent-Length: %d\r\n\r\n", size))
	buf := make([]byte, 64<<10)
	for sent := 0; sent < size; sent += len(buf) {
		if _, err := c.Write(buf); err != nil {
			t.Fatalf("writing the body after %d of %d bytes: %v (the proxy reset the connection before the caller could read its answer)", sent, size, err)
		}
	}
	resp := readResp(t, br, "POST")
	if resp.StatusCode != 413 || !resp.Close {
		t.Fatalf("got %d close=%v, want 413 with the connection closing", resp.StatusCode, resp.Close)
	}
	expectClosed(t, br)
}
