package origin

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
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
