package origin

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"
)

func TestResources(t *testing.T) {
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	get := func(path string) (*http.Response, []byte) {
		t.Helper()
		resp, err := http.Get(srv.URL + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		if err != nil {
			t.Fatal(err)
		}
		return resp, b
	}
	if resp, b := get("/small"); len(b) != SmallSize || resp.ContentLength != SmallSize {
		t.Errorf("/small: %d bytes, CL %d", len(b), resp.ContentLength)
	}
	if resp, b := get("/1m"); len(b) != LargeSize || resp.ContentLength != LargeSize {
		t.Errorf("/1m: %d bytes", len(b))
	}
	if resp, b := get("/chunked"); len(b) != ChunkedSize || resp.ContentLength != -1 ||
		len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("/chunked: %d bytes, CL %d, TE %v", len(b), resp.ContentLength, resp.TransferEncoding)
	}
	body := bytes.Repeat([]byte("x"), 70000)
	resp, err := http.Post(srv.URL+"/echo", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if !bytes.Equal(got, body) || resp.ContentLength != int64(len(body)) {
		t.Errorf("/echo: %d bytes back, CL %d", len(got), resp.ContentLength)
	}
	resp, err = http.Post(srv.URL+"/echo?discard", "application/octet-stream", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	got, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(got)) != "70000" {
		t.Errorf("/echo?discard: %q", got)
	}
}

func TestSlow(t *testing.T) {
	var asked []time.Duration
	var mu sync.Mutex
	orig := wait
	wait = func(d time.Duration) <-chan time.Time {
		mu.Lock()
		asked = append(asked, d)
		mu.Unlock()
		c := make(chan time.Time, 1)
		c <- time.Time{}
		return c
	}
	defer func() { wait = orig }()
	srv := httptest.NewServer(Handler())
	defer srv.Close()
	for _, c := range []struct {
		q      string
		status int
	}{{"ms=200", 200}, {"ms=0", 200}, {"ms=-1", 400}, {"ms=x", 400}, {"", 400}, {"ms=60001", 400}} {
		resp, err := http.Get(srv.URL + "/slow?" + c.q)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("/slow?%s: status %d, want %d", c.q, resp.StatusCode, c.status)
		}
		if c.status == 200 && len(b) != SmallSize {
			t.Errorf("/slow?%s: %d bytes, want %d", c.q, len(b), SmallSize)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if len(asked) != 2 || asked[0] != 200*time.Millisecond || asked[1] != 0 {
		t.Fatalf("delays asked for: %v, want [200ms 0s]", asked)
	}
}

// A caller that goes away ends the wait: the handler returns without
// waiting for the delay.
func TestSlowCallerGone(t *testing.T) {
	started, returned := make(chan struct{}), make(chan struct{})
	h := Handler()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		h.ServeHTTP(w, r)
		close(returned)
	}))
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", srv.URL+"/slow?ms=60000", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-started
	cancel()
	if err := <-errc; err == nil {
		t.Fatal("a cancelled request succeeded")
	}
	select {
	case <-returned:
	case <-time.After(30 * time.Second): // safety net for a hang only
		t.Fatal("the handler kept waiting after the caller left")
	}
}
