// Command etcdmain is etcd's own server binary, built from the etcd version
// this module pins, so that tests can run etcd members as separate processes
// (and kill one with SIGKILL) without a separately installed etcd.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }
