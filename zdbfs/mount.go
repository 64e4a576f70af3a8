package zdbfs

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"unsafe"

	"github.com/hanwen/go-fuse/v2/fuse"
	"golang.org/x/sys/unix"
)

// The direct (root) mount and the hand-off of FUSE_INIT.
//
// The 0-db-fs layout stores times in whole seconds, so zdbfs tells the
// kernel in its FUSE_INIT reply that times have a granularity of one second
// (time_gran). The kernel then truncates the times it sets itself to
// seconds: a file written in the second it was created keeps its times, so
// closing it sends no SETATTR (four requests per small file instead of
// five), and stat(2) never shows nanoseconds that would read back as zero
// once the attribute cache expires. go-fuse 2.12.1 always answers
// time_gran = 0 (one nanosecond) and has no setting for it.
//
// So zdbfs mounts itself when it runs as root: it opens /dev/fuse and calls
// mount(2) as go-fuse's direct mount does, and gives go-fuse one end of a
// SOCK_SEQPACKET socket pair as the magic mountpoint /dev/fd/N. A hand-off
// goroutine relays the kernel's INIT request over the pair, sets time_gran
// in go-fuse's reply and writes it to /dev/fuse. go-fuse calls the file
// system's Init after its INIT reply and before it reads the next request;
// there (initHook) the real /dev/fuse descriptor is duplicated onto go-fuse's
// descriptor number, and go-fuse serves the kernel directly from then on.
// Without root, fusermount3 mounts and time_gran stays 0.

// timeGran is the time granularity zdbfs announces: one second.
const timeGran = 1_000_000_000

const (
	opInit        = 26 // FUSE_INIT
	inHeaderSize  = int(unsafe.Sizeof(fuse.InHeader{}))
	outHeaderSize = int(unsafe.Sizeof(fuse.OutHeader{}))
	// timeGranEnd is the length of an INIT reply that holds time_gran.
	timeGranEnd = outHeaderSize + int(unsafe.Offsetof(fuse.InitOut{}.TimeGran)) + 4
)

// selfMount is a FUSE mount zdbfs made itself, until go-fuse owns it.
type selfMount struct {
	mnt    string
	dev    int // the /dev/fuse connection of the mount
	ours   int // the hand-off goroutine's end of the socket pair
	theirs int // go-fuse's end; becomes the /dev/fuse connection in Init

	done chan struct{} // closed when the hand-off goroutine returns
	err  error         // of the hand-off (set before done closes), then of finish
	fin  bool          // finish or abort ran

	// FUSE over io_uring (uring.go): the servers's threads, ready before
	// INIT; whether the INIT reply enabled it; their /dev/fuse descriptor
	uring     *uringServer
	uringMode string
	uringUsed bool
	uringDev  int // valid once began
	began     bool
}

// mountSelf mounts the filesystem at mnt with the options of mo and starts
// the hand-off of FUSE_INIT. go-fuse must then be given m.fdPath() as its
// mountpoint, and the file system wrapped in initHook.
func mountSelf(mnt string, mo *fuse.MountOptions, us *uringServer, uringMode string) (*selfMount, error) {
	var st unix.Stat_t
	if err := unix.Stat(mnt, &st); err != nil {
		return nil, fmt.Errorf("stat mountpoint %q: %w", mnt, err)
	}
	dev, err := unix.Open("/dev/fuse", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return nil, fmt.Errorf("open /dev/fuse: %w", err)
	}
	source, flags, data := mountParams(mo, dev, st.Mode, os.Geteuid(), os.Getegid())
	if err := unix.Mount(source, mnt, "fuse."+mo.Name, flags, data); err != nil {
		unix.Close(dev)
		return nil, fmt.Errorf("mount(2) %q with %q: %w", mnt, data, err)
	}
	pair, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_SEQPACKET|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		detach(mnt)
		unix.Close(dev)
		return nil, fmt.Errorf("socketpair for the FUSE_INIT hand-off: %w", err)
	}
	m := &selfMount{mnt: mnt, dev: dev, ours: pair[0], theirs: pair[1], done: make(chan struct{}),
		uring: us, uringMode: uringMode}
	go m.handoff(8<<10 + maxRead(mo) + 4<<10)
	return m, nil
}

// fdPath is the magic mountpoint that hands go-fuse its end of the pair.
func (m *selfMount) fdPath() string { return "/dev/fd/" + strconv.Itoa(m.theirs) }

// mountParams returns the source, flags and data of mount(2) for mo, as
// go-fuse's direct mount and fusermount3 build them: options that are
// mount flags become flags, fsname= the source, and the rest is data.
func mountParams(mo *fuse.MountOptions, fd int, mode uint32, uid, gid int) (source string, flags uintptr, data string) {
	source = mo.FsName
	if source == "" {
		source = mo.Name
	}
	flags = unix.MS_NOSUID | unix.MS_NODEV
	d := []string{
		"fd=" + strconv.Itoa(fd),
		"rootmode=" + strconv.FormatUint(uint64(mode&unix.S_IFMT), 8),
		"user_id=" + strconv.Itoa(uid),
		"group_id=" + strconv.Itoa(gid),
		"max_read=" + strconv.Itoa(maxRead(mo)),
	}
	set := map[string]uintptr{"nodev": unix.MS_NODEV, "nosuid": unix.MS_NOSUID, "noexec": unix.MS_NOEXEC,
		"ro": unix.MS_RDONLY, "noatime": unix.MS_NOATIME, "nodiratime": unix.MS_NODIRATIME,
		"relatime": unix.MS_RELATIME, "strictatime": unix.MS_STRICTATIME}
	unset := map[string]uintptr{"dev": unix.MS_NODEV, "suid": unix.MS_NOSUID, "exec": unix.MS_NOEXEC,
		"rw": unix.MS_RDONLY, "atime": unix.MS_NOATIME}
	for _, opt := range mo.Options {
		k, v, _ := strings.Cut(opt, "=")
		switch {
		case set[k] != 0:
			flags |= set[k]
		case unset[k] != 0:
			flags &^= unset[k]
		case k == "fsname":
			source = v
		case k == "allow_root", k == "auto_unmount":
			// allow_root: a mount made by root admits only root
			// without allow_other already; auto_unmount is the
			// watchdog's job (startWatchdog)
		default:
			d = append(d, opt)
		}
	}
	if mo.AllowOther {
		d = append(d, "allow_other")
	}
	return source, flags, strings.Join(d, ",")
}

// maxRead is go-fuse's maximum request size: MaxWrite capped to the
// kernel's page limit.
func maxRead(mo *fuse.MountOptions) int {
	limit := maxPagesLimit() * os.Getpagesize()
	if mo.MaxWrite <= 0 || mo.MaxWrite > limit {
		return limit
	}
	return mo.MaxWrite
}

// handoff relays FUSE_INIT between the kernel and go-fuse.
func (m *selfMount) handoff(bufSize int) {
	defer close(m.done)
	m.err = m.relayInit(make([]byte, bufSize))
	if m.err != nil {
		// go-fuse may wait for the request: end its read with EOF
		unix.Shutdown(m.ours, unix.SHUT_RDWR)
	}
}

func (m *selfMount) relayInit(buf []byte) error {
	n, err := readFD(m.dev, buf)
	if err != nil {
		return fmt.Errorf("read FUSE_INIT from /dev/fuse: %w", err)
	}
	if n < inHeaderSize {
		return fmt.Errorf("first FUSE request is %d bytes, shorter than its header", n)
	}
	if op := binary.NativeEndian.Uint32(buf[4:]); op != opInit {
		return fmt.Errorf("first FUSE request has opcode %d, not FUSE_INIT", op)
	}
	unique := binary.NativeEndian.Uint64(buf[8:])
	offered := uringOffered(buf[:n])
	if !offered && m.uringMode == URingOn {
		return errors.New("uring=on: the kernel does not offer FUSE over io_uring " +
			"(needs Linux 6.14+ and Y in /sys/module/fuse/parameters/enable_uring)")
	}
	if _, err := writeFD(m.ours, buf[:n]); err != nil {
		return fmt.Errorf("pass FUSE_INIT to go-fuse: %w", err)
	}
	n, err = readFD(m.ours, buf)
	if err != nil {
		return fmt.Errorf("read go-fuse's FUSE_INIT reply: %w", err)
	}
	reply := buf[:n]
	if err := setTimeGran(reply, unique); err != nil {
		return err
	}
	if offered && m.uring != nil {
		enableURing(reply)
		m.uringUsed = true
	}
	if _, err := writeFD(m.dev, reply); err != nil {
		return fmt.Errorf("write FUSE_INIT reply to /dev/fuse: %w", err)
	}
	return nil
}

// uringOffered reports whether the kernel's INIT request offers FUSE over
// io_uring.
func uringOffered(req []byte) bool {
	flagsAt := inHeaderSize + int(unsafe.Offsetof(fuse.InitIn{}.Flags)-unsafe.Offsetof(fuse.InitIn{}.Major))
	flags2At := inHeaderSize + int(unsafe.Offsetof(fuse.InitIn{}.Flags2)-unsafe.Offsetof(fuse.InitIn{}.Major))
	if len(req) < flags2At+4 {
		return false
	}
	return binary.NativeEndian.Uint32(req[flagsAt:])&initExt != 0 &&
		binary.NativeEndian.Uint32(req[flags2At:])&initOverIOURing != 0
}

// enableURing sets FUSE_OVER_IO_URING in an INIT reply that setTimeGran
// accepted (so it is long enough).
func enableURing(reply []byte) {
	flagsAt := outHeaderSize + int(unsafe.Offsetof(fuse.InitOut{}.Flags))
	flags2At := outHeaderSize + int(unsafe.Offsetof(fuse.InitOut{}.Flags2))
	binary.NativeEndian.PutUint32(reply[flagsAt:], binary.NativeEndian.Uint32(reply[flagsAt:])|initExt)
	binary.NativeEndian.PutUint32(reply[flags2At:], binary.NativeEndian.Uint32(reply[flags2At:])|initOverIOURing)
}

// setTimeGran sets time_gran in a successful INIT reply to request unique.
func setTimeGran(reply []byte, unique uint64) error {
	if len(reply) < outHeaderSize {
		return fmt.Errorf("go-fuse's FUSE_INIT reply is %d bytes, shorter than its header", len(reply))
	}
	if st := int32(binary.NativeEndian.Uint32(reply[4:])); st != 0 {
		return fmt.Errorf("go-fuse refused FUSE_INIT: %w", unix.Errno(-st))
	}
	if u := binary.NativeEndian.Uint64(reply[8:]); u != unique {
		return fmt.Errorf("go-fuse's FUSE_INIT reply answers request %d, not %d", u, unique)
	}
	if len(reply) < timeGranEnd {
		return fmt.Errorf("go-fuse's FUSE_INIT reply is %d bytes, too short for time_gran", len(reply))
	}
	binary.NativeEndian.PutUint32(reply[timeGranEnd-4:], timeGran)
	return nil
}

func readFD(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Read(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err == nil && n == 0 {
			return 0, errors.New("connection closed")
		}
		return n, err
	}
}

func writeFD(fd int, b []byte) (int, error) {
	for {
		n, err := unix.Write(fd, b)
		if err == unix.EINTR {
			continue
		}
		if err == nil && n != len(b) {
			return n, fmt.Errorf("short write of %d of %d bytes", n, len(b))
		}
		return n, err
	}
}

// finish ends the hand-off once go-fuse has answered INIT: it waits for
// the reply to reach the kernel and puts /dev/fuse under go-fuse's
// descriptor number. It returns the hand-off's error, also kept in m.err.
func (m *selfMount) finish() error {
	<-m.done
	m.fin = true
	if m.err == nil {
		if err := unix.Dup3(m.dev, m.theirs, unix.O_CLOEXEC); err != nil {
			m.err = fmt.Errorf("hand /dev/fuse to go-fuse: %w", err)
		}
	}
	if m.err == nil {
		m.startURing()
	}
	if m.err != nil {
		return m.err
	}
	unix.Close(m.dev)
	unix.Close(m.ours)
	return nil
}

// startURing lets the io_uring threads register with the kernel, or stops
// them if the INIT reply did not enable io_uring. The kernel holds requests
// until every queue has an entry; if a registration fails, it falls back
// to /dev/fuse by itself.
func (m *selfMount) startURing() {
	if m.uring == nil {
		return
	}
	if !m.uringUsed {
		m.uring.cancel()
		m.uring = nil
		return
	}
	d, err := unix.FcntlInt(uintptr(m.dev), unix.F_DUPFD_CLOEXEC, 0)
	if err != nil {
		// the threads never register: the kernel would wait for them
		// forever, so end the connection rather than hang every caller
		m.err = fmt.Errorf("duplicate /dev/fuse for io_uring: %w", err)
		m.uring.cancel()
		m.uring = nil
		return
	}
	m.uringDev, m.began = d, true
	m.uring.begin(d)
}

// waitURing returns when the io_uring threads have ended (after the
// connection is gone) and releases their descriptor.
func (m *selfMount) waitURing() {
	if m.uring == nil {
		return
	}
	m.uring.wait()
	unix.Close(m.uringDev)
	m.uring = nil
}

// abort removes a mount whose hand-off failed or that go-fuse could not
// serve, and releases the descriptors zdbfs still owns.
func (m *selfMount) abort() {
	if !m.fin {
		unix.Shutdown(m.ours, unix.SHUT_RDWR) // wakes a wait for go-fuse's reply
	}
	detach(m.mnt) // aborts the connection: wakes a read of /dev/fuse
	<-m.done
	if m.uring != nil && !m.began {
		m.uring.cancel() // never began
		m.uring = nil
	}
	m.waitURing()
	if m.err == nil && m.fin {
		return // finish handed the descriptors to go-fuse
	}
	unix.Close(m.dev)
	unix.Close(m.ours)
	m.fin = true
}

// detach unmounts mnt, lazily if it is busy.
func detach(mnt string) {
	if err := unix.Unmount(mnt, 0); err != nil {
		unix.Unmount(mnt, unix.MNT_DETACH)
	}
}

// initHook is the file system go-fuse serves on a direct mount: FS, whose
// Init first completes the hand-off. go-fuse calls Init right after its
// INIT reply, before it reads another request.
type initHook struct {
	*FS
	m *selfMount
}

var _ fuse.RawFileSystem = initHook{}

// Init completes the hand-off and then initializes FS. On failure FS is
// not initialized; run sees m.err and unmounts.
func (h initHook) Init(s *fuse.Server) {
	if h.m.finish() != nil {
		return
	}
	h.FS.Init(s)
}
