// Package client is a small, allocation-conscious 0-db (RESP2) client.
//
// It owns the wire encoding of requests and the decoding of replies, plus thin
// helpers for the commands qsfs components use (SELECT, SET, GET, DEL, NSINFO,
// NSNEW, NSSET, ...). It speaks to any 0-db 2.x server: the official zdb or
// `qsfs zdb`. It does not own connection pooling or reconnect policy; callers
// that need those build them on top of Conn.
//
// A Conn is not safe for concurrent use. Requests may be pipelined with Send
// followed by Flush and as many Receive calls as requests sent.
package client

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

// ServerError is an error reply ("-..." line) from the server. Its text is the
// reply without the leading '-', e.g. "No more data".
type ServerError string

func (e ServerError) Error() string { return string(e) }

// IsServerError reports whether err is a server error reply with exactly msg.
func IsServerError(err error, msg string) bool {
	var se ServerError
	return errors.As(err, &se) && string(se) == msg
}

// Reply kinds.
const (
	KindStatus = '+'
	KindError  = '-'
	KindInt    = ':'
	KindBulk   = '$'
	KindArray  = '*'
)

// Reply is one decoded RESP2 reply.
type Reply struct {
	Kind  byte    // one of the Kind constants
	Nil   bool    // $-1 or *-1
	Str   []byte  // status text, error text or bulk payload
	Int   int64   // integer replies
	Array []Reply // array replies
}

// Err returns the reply as a ServerError when it is an error reply, else nil.
func (r Reply) Err() error {
	if r.Kind == KindError {
		return ServerError(r.Str)
	}
	return nil
}

// Conn is one connection to a 0-db server.
type Conn struct {
	nc   net.Conn
	r    *bufio.Reader
	wbuf []byte      // encoded requests not yet written
	werr error       // first write error, sticky, returned by Flush
	iov  net.Buffers // scratch for writev of wbuf and large payloads
	// gather mode (SetGather): large payloads held by reference until
	// Flush, each after wbuf[:held[i].at]
	gather   bool
	held     []heldBulk
	heldSize int
	timeout  time.Duration
	pending  int
	num      []byte
	alloc    func(n int) []byte // buffers for large bulk replies, see SetBulkAlloc
}

// Dial connects to a server. network is "tcp" or "unix". timeout bounds the
// dial and, when non-zero, every later round trip.
func Dial(network, addr string, timeout time.Duration) (*Conn, error) {
	d := net.Dialer{Timeout: timeout}
	nc, err := d.Dial(network, addr)
	if err != nil {
		return nil, fmt.Errorf("dial zdb %s %s: %w", network, addr, err)
	}
	return NewConn(nc, timeout), nil
}

// NewConn wraps an established connection.
func NewConn(nc net.Conn, timeout time.Duration) *Conn {
	return &Conn{
		nc:      nc,
		r:       bufio.NewReaderSize(nc, 64<<10),
		wbuf:    make([]byte, 0, 4<<10),
		timeout: timeout,
		num:     make([]byte, 0, 24),
	}
}

// SetBulkAlloc makes Receive read every bulk reply payload of at least
// bigBulk bytes into a buffer from alloc (which must return len(b) >= n)
// instead of a freshly allocated one, so that a caller that recycles its
// buffers (a block cache) does not pay for allocating and zeroing one per
// reply. The payload is the first n bytes; the caller owns the buffer.
func (c *Conn) SetBulkAlloc(alloc func(n int) []byte) { c.alloc = alloc }

// SetGather turns gather mode on or off. In gather mode Send keeps a
// reference to every large payload instead of writing it at once, and
// Flush writes all buffered requests with their payloads in one writev(2)
// (several when more than maxGathered bytes are held): a pipeline of
// large SETs then costs one system call instead of one per payload, and
// the server finds whole pipelines in its socket. The caller must leave
// the payloads unchanged until Flush returns. Turning it off flushes
// nothing; call it between pipelines.
func (c *Conn) SetGather(on bool) { c.gather = on }

// heldBulk is a payload held in gather mode, written after wbuf[:at].
type heldBulk struct {
	at int
	b  []byte
}

// maxGathered bounds the payload bytes gather mode holds before writing.
const maxGathered = 4 << 20

// SetWriteBuffer asks for a socket send buffer of n bytes: with root
// rights beyond the system's limit (SO_SNDBUFFORCE), else up to it. On a
// unix socket the send buffer bounds what a client may have on its way to
// the server, so a larger one lets a pipeline of large payloads be written
// without waiting for the server to read.
func (c *Conn) SetWriteBuffer(n int) error {
	sc, ok := c.nc.(syscall.Conn)
	if !ok {
		return fmt.Errorf("set send buffer: %T is not a socket", c.nc)
	}
	raw, err := sc.SyscallConn()
	if err != nil {
		return fmt.Errorf("set send buffer: %w", err)
	}
	var serr error
	if err := raw.Control(func(fd uintptr) {
		if unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUFFORCE, n) == nil {
			return
		}
		serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_SNDBUF, n)
	}); err != nil {
		return fmt.Errorf("set send buffer: %w", err)
	}
	if serr != nil {
		return fmt.Errorf("set send buffer of %d bytes: %w", n, serr)
	}
	return nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.nc.Close() }

// Write buffering: requests are encoded into wbuf, which is written when
// it exceeds maxBuffered and at Flush. A bulk argument of at least bigBulk
// bytes is not copied: it goes to the socket at once in one writev(2)
// together with what is buffered before it, so Send may write for large
// payloads (as a full buffer did before) and the caller may reuse the
// payload as soon as Send returns; in gather mode (SetGather) it is held
// by reference and written with the rest at Flush instead.
const (
	bigBulk     = 16 << 10
	maxBuffered = 64 << 10
)

// Send buffers one request. Arguments may be string, []byte, int, int64 or
// uint64 (formatted in decimal). Write errors are reported by Flush.
func (c *Conn) Send(args ...any) error {
	c.wbuf = append(c.wbuf, '*')
	c.writeNum(int64(len(args)))
	for _, a := range args {
		switch v := a.(type) {
		case []byte:
			c.writeBulk(v)
		case string:
			c.wbuf = append(c.wbuf, '$')
			c.writeNum(int64(len(v)))
			c.wbuf = append(c.wbuf, v...)
			c.wbuf = append(c.wbuf, "\r\n"...)
		case int:
			c.writeBulk(strconv.AppendInt(nil, int64(v), 10))
		case int64:
			c.writeBulk(strconv.AppendInt(nil, v, 10))
		case uint64:
			c.writeBulk(strconv.AppendUint(nil, v, 10))
		default:
			return fmt.Errorf("zdb request argument of type %T is not supported", a)
		}
	}
	c.pending++
	if len(c.wbuf) >= maxBuffered || c.heldSize >= maxGathered {
		c.writeOut(nil)
	}
	return nil
}

func (c *Conn) writeNum(n int64) {
	c.wbuf = strconv.AppendInt(c.wbuf, n, 10)
	c.wbuf = append(c.wbuf, "\r\n"...)
}

func (c *Conn) writeBulk(b []byte) {
	c.wbuf = append(c.wbuf, '$')
	c.writeNum(int64(len(b)))
	switch {
	case len(b) >= bigBulk && c.gather:
		c.held = append(c.held, heldBulk{len(c.wbuf), b})
		c.heldSize += len(b)
	case len(b) >= bigBulk:
		c.writeOut(b)
	default:
		c.wbuf = append(c.wbuf, b...)
	}
	c.wbuf = append(c.wbuf, "\r\n"...)
}

// writeOut writes wbuf, with the held payloads in their places, followed
// by extra (if any) in one writev and empties wbuf. After a write error
// nothing more is written.
func (c *Conn) writeOut(extra []byte) {
	if c.werr == nil {
		if c.timeout > 0 {
			c.nc.SetDeadline(time.Now().Add(c.timeout))
		}
		c.iov = c.iov[:0]
		at := 0
		for _, h := range c.held {
			if h.at > at {
				c.iov = append(c.iov, c.wbuf[at:h.at])
			}
			c.iov = append(c.iov, h.b)
			at = h.at
		}
		if len(c.wbuf) > at {
			c.iov = append(c.iov, c.wbuf[at:])
		}
		if len(extra) > 0 {
			c.iov = append(c.iov, extra)
		}
		bufs := c.iov
		if _, err := bufs.WriteTo(c.nc); err != nil {
			c.werr = err
		}
		clear(c.iov[:cap(c.iov)])
	}
	clear(c.held)
	c.held, c.heldSize = c.held[:0], 0
	if cap(c.wbuf) > 4*maxBuffered {
		c.wbuf = make([]byte, 0, 4<<10)
	}
	c.wbuf = c.wbuf[:0]
}

// Flush writes buffered requests to the server.
func (c *Conn) Flush() error {
	if len(c.wbuf) > 0 || len(c.held) > 0 {
		c.writeOut(nil)
	}
	if c.werr != nil {
		return fmt.Errorf("zdb write: %w", c.werr)
	}
	return nil
}

// Receive reads one reply. An error reply is returned as a Reply of
// KindError with a nil error; use Reply.Err or Do to turn it into an error.
func (c *Conn) Receive() (Reply, error) {
	if c.timeout > 0 {
		c.nc.SetDeadline(time.Now().Add(c.timeout))
	}
	r, err := readReply(c.r, c.alloc)
	if err != nil {
		return Reply{}, fmt.Errorf("zdb read: %w", err)
	}
	if c.pending > 0 {
		c.pending--
	}
	return r, nil
}

// Do sends one request and waits for its reply. Error replies are returned
// as ServerError.
func (c *Conn) Do(args ...any) (Reply, error) {
	if err := c.Send(args...); err != nil {
		return Reply{}, err
	}
	if err := c.Flush(); err != nil {
		return Reply{}, err
	}
	r, err := c.Receive()
	if err != nil {
		return r, err
	}
	return r, r.Err()
}

func readLine(r *bufio.Reader) ([]byte, error) {
	line, err := r.ReadSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, errors.New("reply line too long")
	}
	if err != nil {
		return nil, err
	}
	if len(line) < 3 || line[len(line)-2] != '\r' {
		return nil, fmt.Errorf("malformed reply line %q", line)
	}
	return line[:len(line)-2], nil
}

func readReply(r *bufio.Reader, alloc func(int) []byte) (Reply, error) {
	line, err := readLine(r)
	if err != nil {
		return Reply{}, err
	}
	kind := line[0]
	body := line[1:]
	switch kind {
	case KindStatus, KindError:
		return Reply{Kind: kind, Str: append([]byte(nil), body...)}, nil
	case KindInt:
		n, err := strconv.ParseInt(string(body), 10, 64)
		if err != nil {
			return Reply{}, fmt.Errorf("malformed integer reply %q", body)
		}
		return Reply{Kind: kind, Int: n}, nil
	case KindBulk:
		n, err := strconv.Atoi(string(body))
		if err != nil {
			return Reply{}, fmt.Errorf("malformed bulk length %q", body)
		}
		if n < 0 {
			return Reply{Kind: kind, Nil: true}, nil
		}
		var buf []byte
		if alloc != nil && n >= bigBulk {
			if buf = alloc(n); len(buf) < n {
				return Reply{}, fmt.Errorf("bulk buffer of %d bytes for a %d-byte reply", len(buf), n)
			}
			buf = buf[:n]
		} else {
			buf = make([]byte, n)
		}
		if _, err := io.ReadFull(r, buf); err != nil {
			return Reply{}, err
		}
		var crlf [2]byte
		if _, err := io.ReadFull(r, crlf[:]); err != nil {
			return Reply{}, err
		}
		if crlf != [2]byte{'\r', '\n'} {
			return Reply{}, fmt.Errorf("bulk reply of %d bytes not followed by CRLF", n)
		}
		return Reply{Kind: kind, Str: buf}, nil
	case KindArray:
		n, err := strconv.Atoi(string(body))
		if err != nil {
			return Reply{}, fmt.Errorf("malformed array length %q", body)
		}
		if n < 0 {
			return Reply{Kind: kind, Nil: true}, nil
		}
		arr := make([]Reply, n)
		for i := range arr {
			if arr[i], err = readReply(r, alloc); err != nil {
				return Reply{}, err
			}
		}
		return Reply{Kind: kind, Array: arr}, nil
	}
	return Reply{}, fmt.Errorf("unknown reply type %q", kind)
}

// Ping sends PING.
func (c *Conn) Ping() error {
	_, err := c.Do("PING")
	return err
}

// Select switches namespace. An empty password sends a plain SELECT.
func (c *Conn) Select(ns, password string) error {
	var err error
	if password == "" {
		_, err = c.Do("SELECT", ns)
	} else {
		_, err = c.Do("SELECT", ns, password)
	}
	if err != nil {
		return fmt.Errorf("select namespace %q: %w", ns, err)
	}
	return nil
}

// Set stores value under key and returns the key the server reports (the new
// 8-byte id in sequential mode). It returns nil, nil when the server reports
// the value unchanged.
func (c *Conn) Set(key, value []byte) ([]byte, error) {
	r, err := c.Do("SET", key, value)
	if err != nil {
		return nil, err
	}
	if r.Nil {
		return nil, nil
	}
	return r.Str, nil
}

// Get returns the value of key, or nil, nil when it does not exist.
func (c *Conn) Get(key []byte) ([]byte, error) {
	r, err := c.Do("GET", key)
	if err != nil {
		return nil, err
	}
	if r.Nil {
		return nil, nil
	}
	return r.Str, nil
}

// Del deletes key.
func (c *Conn) Del(key []byte) error {
	_, err := c.Do("DEL", key)
	return err
}

// NSInfo returns the fields of NSINFO ns as a map ("entries", "mode", ...).
func (c *Conn) NSInfo(ns string) (map[string]string, error) {
	r, err := c.Do("NSINFO", ns)
	if err != nil {
		return nil, fmt.Errorf("nsinfo %q: %w", ns, err)
	}
	return ParseInfo(r.Str), nil
}

// Info returns the fields of INFO as a map.
func (c *Conn) Info() (map[string]string, error) {
	r, err := c.Do("INFO")
	if err != nil {
		return nil, fmt.Errorf("info: %w", err)
	}
	return ParseInfo(r.Str), nil
}

// ParseInfo parses "key: value" lines as INFO and NSINFO print them.
func ParseInfo(text []byte) map[string]string {
	m := make(map[string]string)
	for _, line := range strings.Split(string(text), "\n") {
		line = strings.TrimRight(line, "\r")
		if line == "" || line[0] == '#' {
			continue
		}
		k, v, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		m[strings.TrimSpace(k)] = strings.TrimSpace(v)
	}
	return m
}

// SeqKey encodes a sequential-mode id as the 8-byte little-endian key.
func SeqKey(id uint64) []byte {
	k := make([]byte, 8)
	for i := 0; i < 8; i++ {
		k[i] = byte(id >> (8 * i))
	}
	return k
}

// SeqID decodes an 8-byte little-endian sequential-mode key.
func SeqID(key []byte) (uint64, error) {
	if len(key) != 8 {
		return 0, fmt.Errorf("sequential key has %d bytes, want 8", len(key))
	}
	var id uint64
	for i := 7; i >= 0; i-- {
		id = id<<8 | uint64(key[i])
	}
	return id, nil
}

// Auth authenticates as admin with the plain AUTH command.
func (c *Conn) Auth(password string) error {
	if _, err := c.Do("AUTH", password); err != nil {
		return fmt.Errorf("auth: %w", err)
	}
	return nil
}

// NSNew creates namespace ns (admin).
func (c *Conn) NSNew(ns string) error {
	if _, err := c.Do("NSNEW", ns); err != nil {
		return fmt.Errorf("nsnew %q: %w", ns, err)
	}
	return nil
}

// NSSet sets a namespace property (admin): maxsize, password, public, worm,
// mode, lock or freeze.
func (c *Conn) NSSet(ns, property, value string) error {
	if _, err := c.Do("NSSET", ns, property, value); err != nil {
		return fmt.Errorf("nsset %q %s: %w", ns, property, err)
	}
	return nil
}
