package app

import (
	"io"
	"net/http"
	"testing"
)

// BenchmarkPairGET measures a small GET through an in-process client and
// server (both ends in this process, so a CPU profile shows both), with
// keep-alive callers in parallel.
//
//	go test ./cmd/internal/app -run '^$' -bench PairGET -benchmem -cpuprofile cpu.out
func BenchmarkPairGET(b *testing.B) {
	p := startPair(b, echoOrigin(nil))
	c := callerClient()
	url := p.url + "/bytes?n=100"
	b.SetParallelism(32)
	b.ReportAllocs()
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			resp, err := c.Get(url)
			if err != nil {
				b.Error(err)
				return
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				b.Errorf("status %d", resp.StatusCode)
				return
			}
		}
	})
}
