// Command etcd is the etcd server built from the Go module proxy at the version pinned in go.mod,
// for the local control plane that tests and `run` use.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}
