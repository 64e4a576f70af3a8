// Package backend owns zstor's connections to 0-db namespaces: dialing with
// the official checks (PING, NSINFO mode, SELECT), writing a shard as
// sequential-mode chunks of at most 2 MiB, reading it back, user-key
// get/set/scan for the metadata store, a small connection pool, and shard
// placement over groups (placement.go).
//
// It does not own encoding, metadata layout or retry policy.
package backend

import (
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
	"github.com/qsfs/qsfs/zstor/config"
)

// MaxChunk is the largest value written in one SET (MAX_ZDB_CHUNK_SIZE).
const MaxChunk = 2 << 20

// Timeout bounds every round trip (ZDB_TIMEOUT).
const Timeout = 30 * time.Second

// ConnectTimeout bounds establishing a connection, shorter than Timeout so
// a dead backend is skipped quickly.
const ConnectTimeout = 10 * time.Second

// Mode is a namespace mode as NSINFO reports it.
type Mode string

// Namespace modes.
const (
	Sequential Mode = "sequential"
	UserKey    Mode = "userkey"
)

// Conn is one connection to a backend namespace. Not safe for concurrent
// use.
type Conn struct {
	Backend config.Backend
	c       *client.Conn
	broken  bool
}

// Dial connects to b, checks it answers PING, checks the namespace mode when
// want is not empty and selects the namespace.
func Dial(b config.Backend, want Mode, timeout time.Duration) (*Conn, error) {
	ap, err := config.ParseAddress(b.Address)
	if err != nil {
		return nil, err
	}
	if timeout <= 0 {
		timeout = Timeout
	}
	d := net.Dialer{Timeout: min(timeout, ConnectTimeout)}
	nc, err := d.Dial("tcp", ap.String())
	if err != nil {
		return nil, fmt.Errorf("dial zdb %s: %w", ap, err)
	}
	c := client.NewConn(nc, timeout)
	conn := &Conn{Backend: b, c: c}
	if err := c.Ping(); err != nil {
		c.Close()
		return nil, fmt.Errorf("ping %s: %w", b.Address, err)
	}
	if b.Namespace != nil {
		if err := c.Select(*b.Namespace, b.PasswordValue()); err != nil {
			c.Close()
			return nil, fmt.Errorf("backend %s: %w", b.Address, err)
		}
	}
	if want != "" {
		info, err := conn.NSInfo()
		if err != nil {
			c.Close()
			return nil, err
		}
		if m := Mode(info["mode"]); m != want {
			c.Close()
			return nil, fmt.Errorf("backend %s namespace %q is in %s mode, want %s", b.Address, b.NamespaceName(), m, want)
		}
	}
	return conn, nil
}

// Close closes the connection.
func (c *Conn) Close() error { return c.c.Close() }

// Broken reports whether a transport error happened on the connection.
func (c *Conn) Broken() bool { return c.broken }

func (c *Conn) fail(err error) error {
	var se client.ServerError
	if err != nil && !errors.As(err, &se) {
		c.broken = true
	}
	return err
}

func (c *Conn) nsName() string {
	if c.Backend.Namespace == nil {
		return "default"
	}
	return *c.Backend.Namespace
}

// NSInfo returns the NSINFO fields of the connection's namespace.
func (c *Conn) NSInfo() (map[string]string, error) {
	m, err := c.c.NSInfo(c.nsName())
	if err != nil {
		return nil, c.fail(fmt.Errorf("backend %s: %w", c.Backend.Address, err))
	}
	return m, nil
}

// FreeSpace returns the space zstor may still use: data_limits_bytes, or
// -1 for unlimited (the official rule, used space is not subtracted).
func FreeSpace(info map[string]string) int64 {
	lim, err := strconv.ParseInt(info["data_limits_bytes"], 10, 64)
	if err != nil || lim == 0 {
		return -1
	}
	return lim
}

// WriteShard stores data as SET "" chunks of at most MaxChunk bytes,
// pipelined, and returns the sequential ids in order. When onChunk is not
// nil it sees every chunk just before it is sent (to checksum the shard
// while the previous chunks are in flight).
func (c *Conn) WriteShard(data []byte, onChunk func([]byte)) ([]uint64, error) {
	const window = 4
	var ids []uint64
	pending := 0
	recv := func() error {
		r, err := c.c.Receive()
		if err != nil {
			return c.fail(err)
		}
		if err := r.Err(); err != nil {
			return err
		}
		if r.Nil {
			return fmt.Errorf("SET returned no key")
		}
		id, err := client.SeqID(r.Str)
		if err != nil {
			if len(r.Str) == 4 { // 0-db v1
				id = uint64(r.Str[0]) | uint64(r.Str[1])<<8 | uint64(r.Str[2])<<16 | uint64(r.Str[3])<<24
			} else {
				return err
			}
		}
		ids = append(ids, id)
		pending--
		return nil
	}
	for off := 0; off < len(data); off += MaxChunk {
		end := min(off+MaxChunk, len(data))
		if onChunk != nil {
			onChunk(data[off:end])
		}
		if err := c.c.Send("SET", "", data[off:end]); err != nil {
			return nil, err
		}
		if err := c.c.Flush(); err != nil {
			return nil, c.fail(err)
		}
		pending++
		for pending > window {
			if err := recv(); err != nil {
				return nil, c.drain(pending, fmt.Errorf("backend %s: write shard: %w", c.Backend.Address, err))
			}
		}
	}
	for pending > 0 {
		if err := recv(); err != nil {
			return nil, c.drain(pending, fmt.Errorf("backend %s: write shard: %w", c.Backend.Address, err))
		}
	}
	return ids, nil
}

// drain reads outstanding replies after an error so the connection stays
// usable, and returns err.
func (c *Conn) drain(pending int, err error) error {
	for i := 1; i < pending && !c.broken; i++ {
		if _, e := c.c.Receive(); e != nil {
			c.broken = true
		}
	}
	return err
}

// ReadShard fetches the values of keys and concatenates them into dst.
func (c *Conn) ReadShard(keys [][]byte, dst []byte) ([]byte, error) {
	const window = 8
	sent, got := 0, 0
	for got < len(keys) {
		for sent < len(keys) && sent-got < window {
			if err := c.c.Send("GET", keys[sent]); err != nil {
				return nil, err
			}
			sent++
		}
		if err := c.c.Flush(); err != nil {
			return nil, c.fail(err)
		}
		r, err := c.c.Receive()
		if err != nil {
			return nil, c.fail(err)
		}
		got++
		if err := r.Err(); err != nil {
			return nil, c.drain(sent-got+1, fmt.Errorf("backend %s: read shard: %w", c.Backend.Address, err))
		}
		if r.Nil {
			return nil, c.drain(sent-got+1, fmt.Errorf("backend %s: read shard: key %x not found", c.Backend.Address, keys[got-1]))
		}
		dst = append(dst, r.Str...)
	}
	return dst, nil
}

// Get returns a user key's value, nil when missing.
func (c *Conn) Get(key []byte) ([]byte, error) {
	v, err := c.c.Get(key)
	return v, c.fail(err)
}

// Set stores a user key.
func (c *Conn) Set(key, value []byte) error {
	_, err := c.c.Set(key, value)
	return c.fail(err)
}

// Del deletes a user key; a missing key is not an error.
func (c *Conn) Del(key []byte) error {
	err := c.c.Del(key)
	if client.IsServerError(err, "Key not found") {
		return nil
	}
	return c.fail(err)
}

// ScanEntry is one SCAN result.
type ScanEntry struct {
	Key       []byte
	Size      int64
	Timestamp int64
}

// Scan returns the next batch of keys after cursor (nil = start) and the
// next cursor; done is true at the end ("No more data").
func (c *Conn) Scan(cursor []byte) (entries []ScanEntry, next []byte, done bool, err error) {
	var r client.Reply
	if cursor == nil {
		r, err = c.c.Do("SCAN")
	} else {
		r, err = c.c.Do("SCAN", cursor)
	}
	if client.IsServerError(err, "No more data") {
		return nil, nil, true, nil
	}
	if err != nil {
		return nil, nil, false, c.fail(fmt.Errorf("backend %s: scan: %w", c.Backend.Address, err))
	}
	if len(r.Array) != 2 {
		return nil, nil, false, fmt.Errorf("backend %s: scan: malformed reply", c.Backend.Address)
	}
	next = r.Array[0].Str
	for _, e := range r.Array[1].Array {
		if len(e.Array) < 3 {
			continue
		}
		entries = append(entries, ScanEntry{Key: e.Array[0].Str, Size: e.Array[1].Int, Timestamp: e.Array[2].Int})
	}
	return entries, next, false, nil
}
