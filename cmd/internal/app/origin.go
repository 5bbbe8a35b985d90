package app

import (
	"fmt"
	"io"
	"net/http"
	"strconv"
)

// demoOrigin is the small origin the demo puts behind the server side:
// enough to see GET, POST, chunked streaming and trailers cross the tunnel.
func demoOrigin() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintf(w, "hello from the origin behind ptproxy\n%s %s %s\nHost: %s\n", r.Method, r.RequestURI, r.Proto, r.Host)
		for _, k := range []string{"Forwarded", "User-Agent"} {
			for _, v := range r.Header.Values(k) {
				fmt.Fprintf(w, "%s: %s\n", k, v)
			}
		}
	})
	mux.HandleFunc("/echo", func(w http.ResponseWriter, r *http.Request) {
		if ct := r.Header.Get("Content-Type"); ct != "" {
			w.Header().Set("Content-Type", ct)
		}
		io.Copy(w, r.Body)
	})
	mux.HandleFunc("/chunked", func(w http.ResponseWriter, r *http.Request) {
		n, _ := strconv.Atoi(r.URL.Query().Get("n"))
		if n <= 0 || n > 1000 {
			n = 5
		}
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		w.Header().Set("Trailer", "X-Chunks")
		f, _ := w.(http.Flusher)
		for i := range n {
			fmt.Fprintf(w, "chunk %d\n", i)
			if f != nil {
				f.Flush()
			}
		}
		w.Header().Set("X-Chunks", strconv.Itoa(n))
	})
	return mux
}
