// Package procstat reads CPU time and memory (peak and current resident
// set) of processes from /proc.
package procstat

import (
	"bytes"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// ClockTick is USER_HZ, 100 on every Linux architecture Go supports.
const ClockTick = 100

// ParseStat returns the parent pid and utime+stime (in clock ticks) from
// the contents of /proc/<pid>/stat. The command name may contain spaces and
// parentheses, so fields are counted from the last ')'.
func ParseStat(b []byte) (ppid int, ticks uint64, err error) {
	i := bytes.LastIndexByte(b, ')')
	if i < 0 {
		return 0, 0, fmt.Errorf("procstat: malformed stat")
	}
	f := strings.Fields(string(b[i+1:]))
	// f[0] is field 3 (state); ppid is field 4, utime 14, stime 15.
	if len(f) < 13 {
		return 0, 0, fmt.Errorf("procstat: short stat")
	}
	ppid, err = strconv.Atoi(f[1])
	if err != nil {
		return 0, 0, err
	}
	ut, err1 := strconv.ParseUint(f[11], 10, 64)
	st, err2 := strconv.ParseUint(f[12], 10, 64)
	if err1 != nil || err2 != nil {
		return 0, 0, fmt.Errorf("procstat: bad utime/stime")
	}
	return ppid, ut + st, nil
}

// Tree returns root and every live descendant of it.
func Tree(root int) []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return []int{root}
	}
	children := map[int][]int{}
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		ppid, _, err := ParseStat(b)
		if err != nil {
			continue
		}
		children[ppid] = append(children[ppid], pid)
	}
	out := []int{root}
	for i := 0; i < len(out); i++ {
		out = append(out, children[out[i]]...)
	}
	return out
}

// CPU returns the summed user+system CPU time of pids (threads included;
// processes that are gone count as zero).
func CPU(pids []int) time.Duration {
	var ticks uint64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue
		}
		if _, t, err := ParseStat(b); err == nil {
			ticks += t
		}
	}
	return time.Duration(ticks) * time.Second / ClockTick
}

// ParseHWM returns VmHWM (the peak resident set) in bytes from the
// contents of /proc/<pid>/status.
func ParseHWM(b []byte) int64 { return parseKB(b, "VmHWM:") }

// ParseRSS returns VmRSS (the current resident set) in bytes from the
// contents of /proc/<pid>/status.
func ParseRSS(b []byte) int64 { return parseKB(b, "VmRSS:") }

func parseKB(b []byte, field string) int64 {
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field); ok {
			f := strings.Fields(rest)
			if len(f) >= 1 {
				kb, _ := strconv.ParseInt(f[0], 10, 64)
				return kb * 1024
			}
		}
	}
	return 0
}

// PeakRSS returns the summed VmHWM (peak resident set) of pids.
func PeakRSS(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err == nil {
			total += ParseHWM(b)
		}
	}
	return total
}

// RSS returns the summed VmRSS (current resident set) of pids; processes
// that are gone count as zero.
func RSS(pids []int) int64 {
	var total int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/status")
		if err == nil {
			total += ParseRSS(b)
		}
	}
	return total
}

// ParseCtxSwitches returns voluntary+nonvoluntary context switches from
// the contents of a /proc status file.
func ParseCtxSwitches(b []byte) int64 {
	var n int64
	for _, line := range strings.Split(string(b), "\n") {
		for _, k := range []string{"voluntary_ctxt_switches:", "nonvoluntary_ctxt_switches:"} {
			if rest, ok := strings.CutPrefix(line, k); ok {
				v, _ := strconv.ParseInt(strings.TrimSpace(rest), 10, 64)
				n += v
			}
		}
	}
	return n
}

// CtxSwitches returns the context switches of every live thread of pid.
func CtxSwitches(pid int) int64 {
	dir := "/proc/" + strconv.Itoa(pid) + "/task"
	ents, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	var n int64
	for _, e := range ents {
		if b, err := os.ReadFile(dir + "/" + e.Name() + "/status"); err == nil {
			n += ParseCtxSwitches(b)
		}
	}
	return n
}
