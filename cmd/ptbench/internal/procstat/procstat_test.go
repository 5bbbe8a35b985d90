package procstat

import (
	"os"
	"testing"
)

func TestParseStat(t *testing.T) {
	line := []byte("1234 (my (odd) name) S 77 1234 1234 0 -1 4194560 100 0 0 0 250 31 0 0 20 0 9 0 5 1000 200 0\n")
	ppid, ticks, err := ParseStat(line)
	if err != nil || ppid != 77 || ticks != 281 {
		t.Fatalf("ppid %d ticks %d err %v", ppid, ticks, err)
	}
	if _, _, err := ParseStat([]byte("garbage")); err == nil {
		t.Fatal("garbage must fail")
	}
}

func TestParseHWM(t *testing.T) {
	s := []byte("Name:\tx\nVmPeak:\t  9000 kB\nVmHWM:\t    1536 kB\nVmRSS:\t 1000 kB\n")
	if got := ParseHWM(s); got != 1536*1024 {
		t.Fatalf("hwm %d", got)
	}
	if got := ParseRSS(s); got != 1000*1024 {
		t.Fatalf("rss %d", got)
	}
	if got := ParseRSS([]byte("Name:\tkthread\n")); got != 0 {
		t.Fatalf("rss of a process without VmRSS: %d", got)
	}
}

func TestSelf(t *testing.T) {
	if _, err := os.Stat("/proc/self/stat"); err != nil {
		t.Skip("no /proc")
	}
	pid := os.Getpid()
	tree := Tree(pid)
	if len(tree) < 1 || tree[0] != pid {
		t.Fatalf("tree %v", tree)
	}
	if PeakRSS([]int{pid}) <= 0 {
		t.Fatal("own peak RSS must be positive")
	}
	if cur := RSS([]int{pid}); cur <= 0 || cur > PeakRSS([]int{pid}) {
		t.Fatalf("own RSS %d, peak %d", cur, PeakRSS([]int{pid}))
	}
	x := 0
	for i := 0; i < 50_000_000; i++ {
		x += i
	}
	_ = x
	if CPU([]int{pid}) < 0 {
		t.Fatal("negative CPU")
	}
}

func TestParseCtxSwitches(t *testing.T) {
	s := []byte("Name:\tx\nvoluntary_ctxt_switches:\t120\nnonvoluntary_ctxt_switches:\t7\n")
	if got := ParseCtxSwitches(s); got != 127 {
		t.Fatalf("got %d", got)
	}
	if CtxSwitches(os.Getpid()) <= 0 {
		t.Skip("no per-thread status")
	}
}
