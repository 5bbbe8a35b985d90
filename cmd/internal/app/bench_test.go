package app

import (
	"io"
	"log/slog"
	"net/http"
	rtmetrics "runtime/metrics"
	"testing"

	"github.com/ptproxy/ptproxy/config"
	"github.com/ptproxy/ptproxy/session"
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

// BenchmarkPairGETSerial is one caller sending small GETs one after the
// other (the loopback harness's c1) with FEC off and auto: the cost of the
// layer when every request is a group of its own, closed by the idle timer.
//
//	go test ./cmd/internal/app -run '^$' -bench PairGETSerial -benchmem -cpuprofile cpu.out
func BenchmarkPairGETSerial(b *testing.B) {
	for _, mode := range []config.FECMode{config.FECOff, config.FECAuto} {
		b.Run("fec="+string(mode), func(b *testing.B) {
			fec := func(c *config.Config) { c.Transport.FEC = mode }
			tp := startTunnelLog(b, slog.LevelWarn, startOrigin(b, echoOrigin(nil)), fec, fec)
			c := callerClient()
			url := "http://" + tp.addr + "/bytes?n=100"
			b.ReportAllocs()
			created := []rtmetrics.Sample{{Name: "/sched/goroutines-created:goroutines"}}
			rtmetrics.Read(created)
			before := created[0].Value.Uint64()
			b.ResetTimer()
			for b.Loop() {
				resp, err := c.Get(url)
				if err != nil {
					b.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != http.StatusOK {
					b.Fatalf("status %d", resp.StatusCode)
				}
			}
			b.StopTimer()
			rtmetrics.Read(created)
			b.ReportMetric(float64(created[0].Value.Uint64()-before)/float64(b.N), "goroutines/op")
			var sent session.FECStats
			for _, in := range []*Instance{tp.client, tp.server} {
				for _, f := range in.fecByServer() {
					sent.Add(f.Stats)
				}
			}
			b.ReportMetric(float64(sent.DataSent)/float64(b.N), "data-datagrams/op")
			b.ReportMetric(float64(sent.RepairSent)/float64(b.N), "repairs/op")
			b.ReportMetric(float64(sent.ReportsSent)/float64(b.N), "reports/op")
		})
	}
}
