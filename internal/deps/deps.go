//go:build tools

// Package deps pins the project's third-party modules in go.mod while the
// packages that use them are being written. It is never built.
package deps

import (
	_ "github.com/BurntSushi/toml"
	_ "github.com/coreos/go-iptables/iptables"
	_ "github.com/docker/go-plugins-helpers/volume"
	_ "github.com/golang/snappy"
	_ "github.com/hanwen/go-fuse/v2/fs"
	_ "github.com/hanwen/go-fuse/v2/posixtest"
	_ "github.com/klauspost/reedsolomon"
	_ "github.com/prometheus/client_golang/prometheus"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/sirupsen/logrus"
	_ "github.com/vishvananda/netlink"
	_ "github.com/vishvananda/netns"
	_ "golang.org/x/crypto/blake2b"
	_ "golang.org/x/sys/unix"
)
