package main

import (
	"errors"
	"os"
	"syscall"
)

// childAttr puts a child in a process group of its own and has the kernel
// kill it when devstack's starting thread ends.
func childAttr() *syscall.SysProcAttr {
	return &syscall.SysProcAttr{Setpgid: true, Pdeathsig: syscall.SIGKILL}
}

// dieWithParent has the kernel send devstack SIGTERM when its parent (make,
// or the shell running it) dies, however it dies: a kill -9 of make's pid
// alone would otherwise leave devstack running, reparented, with both
// servers. SIGTERM, not SIGKILL, so that devstack stops its children in
// order.
//
// A parent that died before the prctl call sends nothing: devstack would
// already have been reparented, which a changed parent pid shows.
func dieWithParent() error {
	ppid := os.Getppid()
	if _, _, errno := syscall.RawSyscall(syscall.SYS_PRCTL, syscall.PR_SET_PDEATHSIG, uintptr(syscall.SIGTERM), 0); errno != 0 {
		return os.NewSyscallError("prctl PR_SET_PDEATHSIG", errno)
	}
	if os.Getppid() != ppid {
		return errors.New("parent exited while starting")
	}
	return nil
}
