//go:build !linux

package main

import "syscall"

// childAttr puts a child in a process group of its own; without Linux's
// parent-death signal, only devstack's ordered stop ends it.
func childAttr() *syscall.SysProcAttr { return &syscall.SysProcAttr{Setpgid: true} }

// dieWithParent does nothing: without Linux's parent-death signal, devstack
// outlives a parent killed alone (a kill of the parent's process group
// reaches it).
func dieWithParent() error { return nil }
