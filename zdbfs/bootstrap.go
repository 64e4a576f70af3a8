package zdbfs

import (
	"fmt"
	"strconv"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
	"github.com/qsfs/qsfs/zdbfs/layout"
	"github.com/sirupsen/logrus"
)

// rootIno is the meta id of the root directory.
const rootIno = 1

// backends holds the three namespaces.
type backends struct {
	meta, data, temp *namespace
}

// checkServer verifies the server speaks 0-db v2 with 64-bit sequential keys.
func checkServer(b Backend) error {
	network, addr := b.Network()
	c, err := client.Dial(network, addr, ioTimeout)
	if err != nil {
		return err
	}
	defer c.Close()
	info, err := c.Info()
	if err != nil {
		return err
	}
	if info["sequential_key_size"] != "8" {
		return fmt.Errorf("zdb at %s: incompatible version of 0-db: v2 with 64 bits keys required", addr)
	}
	return nil
}

// autoNamespaces does what 0-db-fs HEAD does for -o autons: NSINFO each
// namespace, NSNEW it when missing, NSSET mode seq when it is not sequential,
// then make the temp namespace private with its password.
func autoNamespaces(o *Options, log *logrus.Entry) error {
	for _, b := range []Backend{o.Meta, o.Data, o.Temp} {
		network, addr := b.Network()
		c, err := client.Dial(network, addr, ioTimeout)
		if err != nil {
			return err
		}
		err = func() error {
			info, err := c.NSInfo(b.Namespace)
			if client.IsServerError(err, "Namespace not found") {
				log.WithField("ns", b.Namespace).Info("creating namespace")
				if _, err := c.Do("NSNEW", b.Namespace); err != nil {
					return fmt.Errorf("nsnew %q: %w", b.Namespace, err)
				}
				if info, err = c.NSInfo(b.Namespace); err != nil {
					return err
				}
			} else if err != nil {
				return err
			}
			if info["mode"] != "sequential" {
				if _, err := c.Do("NSSET", b.Namespace, "mode", "seq"); err != nil {
					return fmt.Errorf("nsset %q mode seq: %w", b.Namespace, err)
				}
			}
			if b.Namespace == o.Temp.Namespace {
				if _, err := c.Do("NSSET", b.Namespace, "public", "0"); err != nil {
					return fmt.Errorf("nsset %q public 0: %w", b.Namespace, err)
				}
				if _, err := c.Do("NSSET", b.Namespace, "password", b.Password); err != nil {
					return fmt.Errorf("nsset %q password: %w", b.Namespace, err)
				}
			}
			return nil
		}()
		c.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

// openBackends connects, checks the namespaces are sequential and makes sure
// the headers and the root directory exist. It returns the backends and the
// filesystem size to report.
func openBackends(o *Options, log *logrus.Entry) (*backends, uint64, error) {
	if err := checkServer(o.Meta); err != nil {
		return nil, 0, err
	}
	if o.AutoNS {
		if err := autoNamespaces(o, log); err != nil {
			return nil, 0, fmt.Errorf("autons: %w", err)
		}
	}
	b := &backends{
		meta: newNamespace(o.Meta, 4),
		data: newNamespace(o.Data, 16),
		temp: newNamespace(o.Temp, 1),
	}
	b.data.alloc = blockAlloc
	size := o.Size
	for _, x := range []struct {
		ns    *namespace
		magic string
	}{{b.meta, layout.MagicMeta}, {b.data, layout.MagicData}, {b.temp, layout.MagicTemp}} {
		s, err := ensureHeader(x.ns, x.magic, o.Size, o.ReadOnly)
		if err != nil {
			return nil, 0, err
		}
		if x.ns == b.meta && size == 0 {
			size = s
		}
	}
	if size == 0 {
		size = defaultSize
	}
	if err := ensureRoot(b.meta, o.ReadOnly); err != nil {
		return nil, 0, err
	}
	return b, size, nil
}

func ensureHeader(ns *namespace, magic string, size uint64, ro bool) (uint64, error) {
	r, err := ns.do("NSINFO", ns.b.Namespace)
	if err != nil {
		return 0, fmt.Errorf("nsinfo %q: %w", ns.b.Namespace, err)
	}
	info := client.ParseInfo(r.Str)
	if info["mode"] != "sequential" {
		return 0, fmt.Errorf("namespace %q is in %q mode, sequential required (use -o autons)", ns.b.Namespace, info["mode"])
	}
	cur, err := ns.getOne(0)
	if err != nil {
		return 0, err
	}
	if cur == nil {
		if ro {
			return 0, fmt.Errorf("namespace %q has no header and the mount is read-only", ns.b.Namespace)
		}
		if size == 0 {
			size = defaultSize
		}
		ids, err := ns.insertMany([][]byte{layout.EncodeHeader(layout.Header{Magic: magic, Version: layout.Version, Size: size})})
		if err != nil {
			return 0, err
		}
		if ids[0] != 0 {
			return 0, fmt.Errorf("namespace %q is not empty but has no header (got id %d)", ns.b.Namespace, ids[0])
		}
		return size, nil
	}
	h, err := layout.DecodeHeader(cur, magic)
	if err != nil {
		return 0, fmt.Errorf("namespace %q: %w", ns.b.Namespace, err)
	}
	if h.Version != layout.Version {
		return 0, fmt.Errorf("namespace %q: header version %d, want %d", ns.b.Namespace, h.Version, layout.Version)
	}
	if size != 0 && size != h.Size && !ro {
		h.Size = size
		if err := ns.setMany([]uint64{0}, [][]byte{layout.EncodeHeader(h)}); err != nil {
			return 0, err
		}
	}
	return h.Size, nil
}

func ensureRoot(meta *namespace, ro bool) error {
	cur, err := meta.getOne(rootIno)
	if err != nil {
		return err
	}
	if cur != nil {
		if _, err := layout.DecodeRecord(cur); err != nil {
			return fmt.Errorf("root inode: %w", err)
		}
		return nil
	}
	if ro {
		return fmt.Errorf("no root directory and the mount is read-only")
	}
	ids, err := meta.insertMany([][]byte{[]byte("X")})
	if err != nil {
		return err
	}
	if ids[0] != rootIno {
		return fmt.Errorf("root directory reserved id %d, want %d", ids[0], rootIno)
	}
	now := uint32(time.Now().Unix())
	in := layout.Inode{Mode: layout.ModeDir | 0o755, Links: 2, Atime: now, Mtime: now, Ctime: now}
	var slots [layout.DirlistSize]uint64
	for _, name := range []string{".", ".."} {
		// the dirlist header holds the dirlist's own id, known only after the
		// insert: write it, then rewrite it with the id
		ids, err := meta.insertMany([][]byte{[]byte("L")})
		if err != nil {
			return err
		}
		if err := meta.setMany(ids, [][]byte{layout.EncodeDirlist(ids[0], []layout.DirEntry{{Name: name, Ino: rootIno}})}); err != nil {
			return err
		}
		slots[layout.Bucket(name)] = ids[0]
	}
	return meta.setMany([]uint64{rootIno}, [][]byte{layout.EncodeDir(&in, &slots)})
}

func parseUint(s string) uint64 {
	n, _ := strconv.ParseUint(s, 10, 64)
	return n
}
