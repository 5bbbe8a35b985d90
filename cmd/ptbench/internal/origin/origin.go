// Package origin is the benchmark's origin: a small, fast HTTP/1.1 server
// with fixed bodies, so that every pair forwards exactly the same bytes.
package origin

import (
	"context"
	"io"
	"net"
	"net/http"
	"strconv"
	"time"
)

// Sizes of the fixed resources.
const (
	SmallSize   = 100
	LargeSize   = 1 << 20
	ChunkSize   = 4 << 10
	ChunkCount  = 64
	ChunkedSize = ChunkSize * ChunkCount
	// MaxSlowMs bounds the delay of /slow.
	MaxSlowMs = 60_000
)

// wait is the delay of /slow (a test replaces it).
var wait = time.After

var (
	small = fill(SmallSize)
	large = fill(LargeSize)
	chunk = fill(ChunkSize)
)

func fill(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = 'a' + byte(i%26)
	}
	return b
}

// Handler serves:
//
//	GET  /small    100 B, Content-Length
//	GET  /1m       1 MiB, Content-Length
//	GET  /chunked  64 × 4 KiB, chunked, flushed after each chunk
//	POST /echo     the request body back (Content-Length when the request had one)
//	POST /echo?discard  reads the body, answers its length (a short text body)
//	GET  /slow?ms=N     100 B like /small, after waiting N ms (0 ≤ N ≤ MaxSlowMs),
//	                    or earlier if the caller goes away (then no answer)
func Handler() http.Handler {
	mux := http.NewServeMux()
	fixed := func(body []byte) http.HandlerFunc {
		cl := strconv.Itoa(len(body))
		return func(w http.ResponseWriter, r *http.Request) {
			h := w.Header()
			h["Content-Type"] = []string{"application/octet-stream"}
			h["Content-Length"] = []string{cl}
			w.Write(body)
		}
	}
	mux.HandleFunc("/small", fixed(small))
	mux.HandleFunc("/1m", fixed(large))
	mux.HandleFunc("/slow", func(w http.ResponseWriter, r *http.Request) {
		ms, err := strconv.Atoi(r.URL.Query().Get("ms"))
		if err != nil || ms < 0 || ms > MaxSlowMs {
			http.Error(w, "ms must be an integer in [0, "+strconv.Itoa(MaxSlowMs)+"]", http.StatusBadRequest)
			return
		}
		select {
		case <-wait(time.Duration(ms) * time.Millisecond):
		case <-r.Context().Done():
			return
		}
		fixed(small)(w, r)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		w.Header()["Content-Type"] = []string{"application/octet-stream"}
		f, _ := w.(http.Flusher)
		for range ChunkCount {
			if _, err := w.Write(chunk); err != nil {
				return
			}
			if f != nil {
				f.Flush()
			}
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h["Content-Type"] = []string{"application/octet-stream"}
		if _, ok := r.URL.Query()["discard"]; ok {
			n, err := io.Copy(io.Discard, r.Body)
			if err != nil {
				return
			}
			w.Write([]byte(strconv.FormatInt(n, 10) + "\n"))
			return
		}
		if r.ContentLength >= 0 {
			h["Content-Length"] = []string{strconv.FormatInt(r.ContentLength, 10)}
		}
		// Stream the body back as it arrives (net/http's HTTP/1 server
		// closes the request body on the first write unless asked).
		http.NewResponseController(w).EnableFullDuplex()
		buf := make([]byte, 32<<10)
		io.CopyBuffer(w, r.Body, buf)
	})
	return mux
}

// Serve runs the origin on ln until ctx ends.
func Serve(ctx context.Context, ln net.Listener) error {
	srv := &http.Server{
		Handler:           Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       5 * time.Minute,
	}
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	err := srv.Serve(ln)
	if err == http.ErrServerClosed {
		return nil
	}
	return err
}
