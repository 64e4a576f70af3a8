package zdbfs

import (
	"errors"
	"fmt"
	"strings"
	"syscall"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

// ioTimeout bounds one round trip to zdb.
const ioTimeout = 60 * time.Second

// reconnectWindow is how long a request keeps retrying while zdb is away.
const reconnectWindow = 30 * time.Second

// namespace is a small pool of connections to one sequential namespace. Each
// pooled connection has already selected the namespace. A connection that
// failed at the transport level is dropped and the request retried once on a
// fresh one, so a restarted zdb is picked up transparently.
type namespace struct {
	b    Backend
	pool chan *client.Conn
	// direct bounds the direct-write batches sent at once (write_direct.go):
	// zdb spends less per block on a few busy connections than on one per
	// FUSE request in flight (measured: 4 beat 16 in zdb and zdbfs CPU)
	direct chan struct{}
	// alloc, when set, supplies the buffers large replies are read into
	// (the block pool, for the data namespace)
	alloc func(n int) []byte
}

// unixSendBuffer is the send buffer asked for on unix socket connections:
// a 1 MiB pipeline of 128 KiB SETs takes about 1.1 MiB of it.
const unixSendBuffer = 2 << 20

// directBatches is how many direct-write batches go to zdb at once, as many
// as write-behind workers.
const directBatches = 4

func newNamespace(b Backend, size int) *namespace {
	return &namespace{b: b, pool: make(chan *client.Conn, size), direct: make(chan struct{}, directBatches)}
}

func (ns *namespace) dial() (*client.Conn, error) {
	network, addr := ns.b.Network()
	c, err := client.Dial(network, addr, ioTimeout)
	if err != nil {
		return nil, err
	}
	if err := c.Select(ns.b.Namespace, ns.b.Password); err != nil {
		c.Close()
		return nil, err
	}
	// every request goes through pipelineInto, whose arguments stay
	// unchanged until it has flushed: a pipeline of block SETs is one
	// writev
	c.SetGather(true)
	if network == "unix" {
		// room for a whole direct-write pipeline (a 1 MiB WRITE) in the
		// socket, so that it is written without waiting for zdb; best
		// effort: without it writes wait for zdb more often (TCP keeps
		// its own auto-tuning)
		_ = c.SetWriteBuffer(unixSendBuffer)
	}
	if ns.alloc != nil {
		c.SetBulkAlloc(ns.alloc)
	}
	return c, nil
}

func (ns *namespace) get() (*client.Conn, error) {
	select {
	case c := <-ns.pool:
		return c, nil
	default:
		return ns.dial()
	}
}

func (ns *namespace) put(c *client.Conn) {
	select {
	case ns.pool <- c:
	default:
		c.Close()
	}
}

func (ns *namespace) close() {
	for {
		select {
		case c := <-ns.pool:
			c.Close()
		default:
			return
		}
	}
}

// isTransport reports whether err came from the connection, not from a reply.
func isTransport(err error) bool {
	var se client.ServerError
	return err != nil && !errors.As(err, &se)
}

// pipeline sends n requests built by req on one connection and hands each
// reply to got. Replies that say the namespace is temporarily locked are
// retried every 100 ms, as 0-db-fs does. After a transport error the
// requests without a reply are resent on new connections for up to
// reconnectWindow. The first error got returns is pipeline's error, also
// when the connection broke after it.
func (ns *namespace) pipeline(n int, req func(i int) []any, got func(i int, r client.Reply) error) error {
	return ns.pipelineInto(n, nil, req, got)
}

// pipelineInto is pipeline with alloc, when non-nil, supplying the buffer
// that the large bulk reply to request i is read into (see
// client.Conn.SetBulkAlloc); the connection's own allocator is restored
// before it goes back to the pool.
func (ns *namespace) pipelineInto(n int, alloc func(i, size int) []byte, req func(i int) []any, got func(i int, r client.Reply) error) error {
	if n == 0 {
		return nil
	}
	todo := make([]int, n)
	for i := range todo {
		todo[i] = i
	}
	deadline := time.Now().Add(reconnectWindow)
	for len(todo) > 0 {
		c, err := ns.get()
		if err != nil {
			if time.Now().After(deadline) {
				return err
			}
			time.Sleep(200 * time.Millisecond)
			continue
		}
		var locked []int
		var replyErr error // the first error got returned
		cur := 0
		answered := 0 // todo[:answered] have their reply (or are in locked)
		if alloc != nil {
			c.SetBulkAlloc(func(size int) []byte { return alloc(cur, size) })
		}
		err = func() error {
			for start := 0; start < len(todo); start += 512 {
				end := min(start+512, len(todo))
				for _, i := range todo[start:end] {
					if err := c.Send(req(i)...); err != nil {
						return err
					}
				}
				if err := c.Flush(); err != nil {
					return err
				}
				for _, i := range todo[start:end] {
					cur = i
					r, err := c.Receive()
					if err != nil {
						return err
					}
					answered++
					if r.Kind == client.KindError && strings.HasPrefix(string(r.Str), "Namespace is temporarily locked") {
						locked = append(locked, i)
						continue
					}
					if err := got(i, r); err != nil && replyErr == nil {
						replyErr = err
					}
				}
				if replyErr != nil {
					return replyErr
				}
			}
			return nil
		}()
		if alloc != nil {
			c.SetBulkAlloc(ns.alloc)
		}
		if replyErr != nil {
			// got's error is the answer, whatever it wraps and even if
			// the connection broke later in the batch: its request is
			// answered and will not be resent, so retrying would lose it
			if err != replyErr {
				c.Close()
				ns.close()
			} else {
				ns.put(c)
			}
			return replyErr
		}
		if isTransport(err) {
			// zdb went away (restart?): drop every pooled connection and
			// resend what has no reply yet on a new one (SETs of ids and
			// GETs are idempotent; a SET of a new id that zdb stored but
			// did not answer is stored again under another id)
			c.Close()
			ns.close()
			if time.Now().After(deadline) {
				return err
			}
			todo = append(locked, todo[answered:]...)
			time.Sleep(100 * time.Millisecond)
			continue
		}
		ns.put(c)
		if err != nil {
			return err
		}
		todo = locked
		if len(todo) > 0 {
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func (ns *namespace) do(args ...any) (client.Reply, error) {
	var out client.Reply
	err := ns.pipeline(1, func(int) []any { return args }, func(_ int, r client.Reply) error {
		out = r
		return r.Err()
	})
	return out, err
}

// blockSet is one block SET on the data namespace.
type blockSet struct {
	ino   uint64 // the file, for errors
	idx   uint32 // the block's index in the file
	id    uint32 // the block's data id, 0 = a new block
	data  []byte
	newID uint64 // the id zdb gave a new block
	err   error
}

// setBlocks stores sets in one pipeline and records each result in its
// set: a new id, or the error. A transport error marks every set that has
// neither a reply error nor, for a new block, an id.
func (ns *namespace) setBlocks(sets []*blockSet) {
	err := ns.pipeline(len(sets), func(i int) []any {
		s := sets[i]
		if s.id == 0 {
			return []any{"SET", "", s.data}
		}
		return []any{"SET", client.SeqKey(uint64(s.id)), s.data}
	}, func(i int, r client.Reply) error {
		s := sets[i]
		if err := r.Err(); err != nil {
			s.err = fmt.Errorf("write block %d of inode %d: %w", s.idx, s.ino, err)
			return nil
		}
		if s.id == 0 {
			id, err := client.SeqID(r.Str)
			if err == nil && id > 0xffffffff {
				err = fmt.Errorf("data id %d does not fit the 32-bit block list", id)
			}
			s.err, s.newID = err, id
		}
		return nil
	})
	if err != nil {
		for _, s := range sets {
			if s.err == nil && (s.id != 0 || s.newID == 0) {
				s.err = err
			}
		}
	}
}

// getMany fetches ids; missing ones come back nil.
func (ns *namespace) getMany(ids []uint64) ([][]byte, error) {
	out := make([][]byte, len(ids))
	err := ns.pipeline(len(ids), func(i int) []any {
		return []any{"GET", client.SeqKey(ids[i])}
	}, func(i int, r client.Reply) error {
		if err := r.Err(); err != nil {
			return fmt.Errorf("get %s id %d: %w", ns.b.Namespace, ids[i], err)
		}
		if !r.Nil {
			out[i] = r.Str
		}
		return nil
	})
	return out, err
}

func (ns *namespace) getOne(id uint64) ([]byte, error) {
	v, err := ns.getMany([]uint64{id})
	if err != nil {
		return nil, err
	}
	return v[0], nil
}

// setMany updates existing ids.
func (ns *namespace) setMany(ids []uint64, vals [][]byte) error {
	return ns.pipeline(len(ids), func(i int) []any {
		return []any{"SET", client.SeqKey(ids[i]), vals[i]}
	}, func(i int, r client.Reply) error {
		if err := r.Err(); err != nil {
			return fmt.Errorf("set %s id %d: %w", ns.b.Namespace, ids[i], err)
		}
		return nil
	})
}

// insertMany stores new values and returns their ids.
func (ns *namespace) insertMany(vals [][]byte) ([]uint64, error) {
	ids := make([]uint64, len(vals))
	err := ns.pipeline(len(vals), func(i int) []any {
		return []any{"SET", "", vals[i]}
	}, func(i int, r client.Reply) error {
		if err := r.Err(); err != nil {
			return fmt.Errorf("insert into %s: %w", ns.b.Namespace, err)
		}
		id, err := client.SeqID(r.Str)
		if err != nil {
			return fmt.Errorf("insert into %s: %w", ns.b.Namespace, err)
		}
		ids[i] = id
		return nil
	})
	return ids, err
}

// delMany deletes ids; ids already gone are not an error.
func (ns *namespace) delMany(ids []uint64) error {
	return ns.pipeline(len(ids), func(i int) []any {
		return []any{"DEL", client.SeqKey(ids[i])}
	}, func(i int, r client.Reply) error {
		if err := r.Err(); err != nil && !client.IsServerError(err, "Key not found") {
			return fmt.Errorf("del %s id %d: %w", ns.b.Namespace, ids[i], err)
		}
		return nil
	})
}

// errno maps a backend error to what the caller of a FUSE operation sees.
func errno(err error) syscall.Errno {
	if err == nil {
		return 0
	}
	var e syscall.Errno
	if errors.As(err, &e) {
		return e
	}
	var se client.ServerError
	if errors.As(err, &se) {
		s := string(se)
		if strings.HasPrefix(s, "No space left on this namespace") || strings.HasPrefix(s, "Namespace definitely full") {
			return syscall.ENOSPC
		}
		if strings.Contains(s, "read-only") {
			return syscall.EROFS
		}
	}
	return syscall.EIO
}
