// Package zdbtest starts real `qsfs zdb` processes as zstor backends for
// tests: one process per backend on 127.0.0.1 with its own port and
// directory, a sequential-mode data namespace and a user-key metadata
// namespace on each, and a config.Config wired to them. It owns nothing
// used outside tests.
package zdbtest

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/qsfs/qsfs/internal/zdbproc"
	"github.com/qsfs/qsfs/zdb/client"
	"github.com/qsfs/qsfs/zstor/config"
)

// Namespaces created on every backend.
const (
	DataNS   = "zstor-data"
	MetaNS   = "zstor-meta"
	Password = "s3cret"
)

// Zdb is one running backend process.
type Zdb struct {
	Port int
	Dir  string
	NS   string // network namespace ("" = host)
	Host string // listen and dial address ("" = 127.0.0.1)
	t    testing.TB
	proc *zdbproc.Proc
}

// Start runs a new backend with fresh namespaces.
func Start(t testing.TB) *Zdb {
	t.Helper()
	z := &Zdb{Dir: t.TempDir(), t: t}
	z.Start()
	z.setup()
	return z
}

// Addr is the backend's address.
func (z *Zdb) Addr() string {
	if z.Host != "" {
		return net.JoinHostPort(z.Host, strconv.Itoa(z.Port))
	}
	return "127.0.0.1:" + strconv.Itoa(z.Port)
}

// Pid is the process id of the running backend.
func (z *Zdb) Pid() int { return z.proc.Pid() }

// Start (re)starts the process on the same port and directory and waits
// until it answers PING. The first start picks a free port when Port is 0;
// the process is stopped by PID when the test ends.
func (z *Zdb) Start() {
	z.t.Helper()
	if z.proc != nil {
		z.proc.Restart()
		return
	}
	z.proc = zdbproc.Start(z.t, zdbproc.Options{Dir: z.Dir, TCP: true, Host: z.Host, Port: z.Port, NS: z.NS,
		Args: []string{"--data", filepath.Join(z.Dir, "data"), "--index", filepath.Join(z.Dir, "index")}})
	z.Port = z.proc.Port()
}

func (z *Zdb) setup() {
	c, err := client.Dial("tcp", z.Addr(), 5*time.Second)
	if err != nil {
		z.t.Fatal(err)
	}
	defer c.Close()
	for _, cmd := range [][]any{
		{"NSNEW", DataNS}, {"NSSET", DataNS, "mode", "seq"}, {"NSSET", DataNS, "password", Password}, {"NSSET", DataNS, "public", "0"},
		{"NSNEW", MetaNS}, {"NSSET", MetaNS, "mode", "user"}, {"NSSET", MetaNS, "password", Password}, {"NSSET", MetaNS, "public", "0"},
	} {
		if _, err := c.Do(cmd...); err != nil {
			z.t.Fatalf("zdb %d: %v: %v", z.Port, cmd, err)
		}
	}
}

// Stop terminates the process (SIGTERM, then SIGKILL) and waits for it.
func (z *Zdb) Stop() {
	if z.proc != nil {
		z.proc.Stop()
	}
}

// Entries returns the number of entries in the data namespace.
func (z *Zdb) Entries() (int, error) {
	c, err := client.Dial("tcp", z.Addr(), 5*time.Second)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	info, err := c.NSInfo(DataNS)
	if err != nil {
		return 0, err
	}
	return strconv.Atoi(info["entries"])
}

// Cluster is a set of backends split into groups, the first four also
// serving metadata.
type Cluster struct {
	Groups [][]*Zdb
	All    []*Zdb
}

// StartCluster starts backends with the given group sizes (at least 4 in
// total).
func StartCluster(t testing.TB, sizes ...int) *Cluster {
	t.Helper()
	cl := &Cluster{}
	for _, n := range sizes {
		g := make([]*Zdb, n)
		cl.Groups = append(cl.Groups, g)
		for i := range g {
			g[i] = Start(t)
		}
	}
	for _, g := range cl.Groups {
		cl.All = append(cl.All, g...)
	}
	if len(cl.All) < 4 {
		t.Fatalf("need at least 4 backends, have %d", len(cl.All))
	}
	return cl
}

// DataBackend is z's data namespace as a config backend.
func DataBackend(z *Zdb) config.Backend {
	return config.Backend{Address: z.Addr(), Namespace: config.String(DataNS), Password: config.String(Password)}
}

// Config returns a zstor config for the cluster.
func (cl *Cluster) Config(minimal, expected, redundantGroups, redundantNodes int) *config.Config {
	key := strings.Repeat("5a", 32)
	c := &config.Config{
		MinimalShards: minimal, ExpectedShards: expected, RedundantGroups: redundantGroups, RedundantNodes: redundantNodes,
		Encryption:  config.Encryption{Algorithm: "AES", Key: key},
		Compression: config.Compression{Algorithm: "snappy"},
		Meta: config.Meta{Type: "zdb", Config: config.MetaConfig{Prefix: fmt.Sprintf("qsfs-test-%d", os.Getpid()),
			Encryption: config.Encryption{Algorithm: "AES", Key: key}}},
	}
	for _, z := range cl.All[:4] {
		c.Meta.Config.Backends = append(c.Meta.Config.Backends, config.Backend{Address: z.Addr(), Namespace: config.String(MetaNS), Password: config.String(Password)})
	}
	for _, g := range cl.Groups {
		var grp config.Group
		for _, z := range g {
			grp.Backends = append(grp.Backends, DataBackend(z))
		}
		c.Groups = append(c.Groups, grp)
	}
	return c
}
