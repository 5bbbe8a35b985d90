//go:build linux

package wan

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"syscall"
	"unsafe"
)

// InNS runs fn on a fresh OS thread switched into network namespace ns
// (a name under /var/run/netns). Sockets and TUN devices created by fn
// belong to that namespace and stay usable from any thread afterwards. The
// thread is never returned to the scheduler (the goroutine exits while
// locked, so the runtime discards it), so no other goroutine ever runs in
// the namespace by accident.
func InNS(ns string, fn func() error) error {
	nsf, err := os.Open("/var/run/netns/" + ns)
	if err != nil {
		return err
	}
	defer nsf.Close()
	done := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// No UnlockOSThread: the thread dies with this goroutine.
		if _, _, e := syscall.RawSyscall(sysSetns, nsf.Fd(), syscall.CLONE_NEWNET, 0); e != 0 {
			done <- fmt.Errorf("setns %s: %w", ns, e)
			return
		}
		done <- fn()
	}()
	return <-done
}

// Dialer returns a TCP dial function whose sockets live in namespace ns.
func Dialer(ns, addr string) func(ctx context.Context) (net.Conn, error) {
	return func(ctx context.Context) (net.Conn, error) {
		var c net.Conn
		err := InNS(ns, func() error {
			var d net.Dialer
			var err error
			c, err = d.DialContext(ctx, "tcp", addr)
			return err
		})
		return c, err
	}
}

// TUN is a TUN device (IFF_TUN|IFF_NO_PI: reads and writes are bare IP
// packets), read through Go's poller.
type TUN struct {
	*os.File
	Name string
}

// OpenTUN creates TUN device name in namespace ns (root namespace when ns
// is empty). The device disappears when the file is closed.
func OpenTUN(ns, name string) (*TUN, error) {
	var t *TUN
	open := func() error {
		fd, err := syscall.Open("/dev/net/tun", syscall.O_RDWR|syscall.O_NONBLOCK|syscall.O_CLOEXEC, 0)
		if err != nil {
			return err
		}
		var ifr [40]byte
		copy(ifr[:15], name)
		*(*uint16)(unsafe.Pointer(&ifr[16])) = syscall.IFF_TUN | syscall.IFF_NO_PI
		if _, _, e := syscall.Syscall(syscall.SYS_IOCTL, uintptr(fd), syscall.TUNSETIFF, uintptr(unsafe.Pointer(&ifr[0]))); e != 0 {
			syscall.Close(fd)
			return fmt.Errorf("TUNSETIFF %s: %w", name, e)
		}
		t = &TUN{File: os.NewFile(uintptr(fd), "tun:"+name), Name: name}
		return nil
	}
	if ns == "" {
		return t, open()
	}
	return t, InNS(ns, open)
}

// IP runs the ip(8) command, returning its output in the error.
func IP(args ...string) error {
	out, err := exec.Command("ip", args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ip %s: %v: %s", strings.Join(args, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}
