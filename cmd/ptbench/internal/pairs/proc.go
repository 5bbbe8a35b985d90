// Package pairs starts and stops the systems under test: the origin, and
// each proxy pair (a client side the load generator talks HTTP/1.1 to, a
// server side in front of the origin) with its configuration files.
package pairs

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/ptproxy/ptproxy/cmd/ptbench/internal/procstat"
)

// Proc is one process the harness started.
type Proc struct {
	Name string
	Argv []string // without the namespace prefix
	Env  []string // added to the harness's environment
	NS   string   // network namespace, "" for the current one
	Log  string   // file receiving stdout and stderr

	cmd    *exec.Cmd
	exited chan struct{}
	err    error
}

// FullArgv is the command line actually executed.
func (p *Proc) FullArgv() []string {
	if p.NS == "" {
		return p.Argv
	}
	return append([]string{"ip", "netns", "exec", p.NS}, p.Argv...)
}

// CommandLine is FullArgv quoted for a shell, with the extra environment.
func (p *Proc) CommandLine() string {
	var parts []string
	for _, e := range p.Env {
		parts = append(parts, shellQuote(e))
	}
	for _, a := range p.FullArgv() {
		parts = append(parts, shellQuote(a))
	}
	return strings.Join(parts, " ")
}

func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:=,@+%", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// Start starts the process; its output is appended to Log.
func (p *Proc) Start() error {
	argv := p.FullArgv()
	cmd := exec.Command(argv[0], argv[1:]...)
	cmd.Env = append(os.Environ(), p.Env...)
	if p.Log != "" {
		f, err := os.OpenFile(p.Log, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
		if err != nil {
			return err
		}
		fmt.Fprintf(f, "\n=== %s start: %s\n", time.Now().Format(time.RFC3339Nano), p.CommandLine())
		cmd.Stdout, cmd.Stderr = f, f
		defer f.Close() // the child has its own copy
	}
	// Own process group, so a terminal's Ctrl-C reaches only the harness,
	// which then stops everything in order. (No Pdeathsig: it fires when
	// the forking OS thread exits, and the harness retires threads that
	// entered a network namespace.)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("%s: %w", p.Name, err)
	}
	p.cmd = cmd
	p.exited = make(chan struct{})
	go func() {
		p.err = cmd.Wait()
		close(p.exited)
	}()
	return nil
}

// Pid is the process id (ip netns exec execs in place, so it is the
// program's own pid in namespace mode too); 0 when not running.
func (p *Proc) Pid() int {
	if p.cmd == nil || p.cmd.Process == nil {
		return 0
	}
	return p.cmd.Process.Pid
}

// Running reports whether the process was started and has not exited.
func (p *Proc) Running() bool {
	if p.exited == nil {
		return false
	}
	select {
	case <-p.exited:
		return false
	default:
		return true
	}
}

// Exited is closed when the process ends.
func (p *Proc) Exited() <-chan struct{} { return p.exited }

// Signal sends sig to the process (by its pid only).
func (p *Proc) Signal(sig syscall.Signal) error {
	if !p.Running() {
		return nil
	}
	return syscall.Kill(p.Pid(), sig)
}

// Stop sends sig, waits up to timeout, then SIGKILLs the process and
// whatever children it left (by pid).
func (p *Proc) Stop(sig syscall.Signal, timeout time.Duration) {
	if !p.Running() {
		return
	}
	tree := procstat.Tree(p.Pid())
	p.Signal(sig)
	select {
	case <-p.exited:
	case <-time.After(timeout):
		for _, pid := range tree {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		<-p.exited
	}
	// Children that outlived their parent (nginx workers): by pid.
	for _, pid := range tree[1:] {
		if syscall.Kill(pid, 0) == nil {
			syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// Tail returns the last n bytes of the log, for error messages.
func (p *Proc) Tail(n int) string {
	b, err := os.ReadFile(p.Log)
	if err != nil {
		return ""
	}
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func writeFile(dir, name, content string) (string, error) {
	path := filepath.Join(dir, name)
	return path, os.WriteFile(path, []byte(content), 0o644)
}
