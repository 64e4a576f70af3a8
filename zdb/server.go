package zdb

import (
	"bufio"
	"errors"
	"io"
	"net"
	"os"
	"runtime/debug"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sirupsen/logrus"
)

// Server accepts RESP connections on TCP and/or a unix socket and serves
// them from a Store, one goroutine per client.
type Server struct {
	opts  Options
	store *Store
	hooks *hookRunner
	log   *logrus.Entry
	id    string
	// instanceTag is INFO's instance_id (random per boot)
	instanceTag string
	bootTime    time.Time
	listeners   []net.Listener

	// args lends the connections the chunks their request payloads are
	// read into
	args chunkPool

	clientsMu sync.Mutex
	clients   map[*session]struct{}
	waiters   waitRegistry
	closing   atomic.Bool
}

// instanceID is the id passed as argv[2] of every hook.
func instanceID(o Options) string {
	if o.Socket != "" {
		return "unix://" + o.Socket
	}
	return "tcp://" + o.Listen + ":" + strconv.Itoa(o.Port)
}

// listen opens the configured sockets. TCP comes first so that once the
// unix socket accepts (what supervisors wait for) every listener does.
func (s *Server) listen() error {
	o := s.opts
	if o.Socket == "" || o.DualNet {
		l, err := net.Listen("tcp", net.JoinHostPort(o.Listen, strconv.Itoa(o.Port)))
		if err != nil {
			return err
		}
		s.listeners = append(s.listeners, l)
	}
	if o.Socket != "" {
		if st, err := os.Lstat(o.Socket); err == nil && st.Mode()&os.ModeSocket != 0 {
			os.Remove(o.Socket)
		}
		l, err := net.Listen("unix", o.Socket)
		if err != nil {
			s.closeListeners()
			return err
		}
		s.listeners = append(s.listeners, l)
	}
	return nil
}

func (s *Server) closeListeners() {
	for _, l := range s.listeners {
		l.Close()
	}
}

// serve accepts connections on every listener until they are closed.
func (s *Server) serve() {
	var wg sync.WaitGroup
	for _, l := range s.listeners {
		wg.Add(1)
		go func(l net.Listener) {
			defer wg.Done()
			for {
				nc, err := l.Accept()
				if err != nil {
					if s.closing.Load() || errors.Is(err, net.ErrClosed) {
						return
					}
					s.log.Warnf("accept: %v", err)
					time.Sleep(10 * time.Millisecond)
					continue
				}
				go s.handle(nc)
			}
		}(l)
	}
	wg.Wait()
}

// session is one connection's state.
type session struct {
	srv       *Server
	nc        net.Conn
	cc        countingConn // nc, counted
	r         *connReader
	w         *bufio.Writer // nil while idle
	parked    atomic.Bool   // idle gave everything back (until busy)
	rr        *requestReader
	batch     []setRequest
	crcs      []uint32 // CRC-32C of the held SETs' values
	idBuf     [8]byte  // the sequential id a SET replies with
	rw        replyWriter
	ns        *Namespace
	writable  bool
	admin     bool
	challenge string
	scratch   []byte
	closeConn bool
}

// maxIdleScratch is the largest scratch buffer a connection keeps once it
// has answered everything its client sent.
const maxIdleScratch = 64 << 10

type countingConn struct {
	net.Conn
	rx, tx *atomic.Int64
}

func (c countingConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.rx.Add(int64(n))
	return n, err
}

func (c countingConn) Write(p []byte) (int, error) {
	n, err := c.Conn.Write(p)
	c.tx.Add(int64(n))
	return n, err
}

func (s *Server) handle(nc net.Conn) {
	st := &s.store.stats
	st.clientsLifetime.Add(1)
	cc := countingConn{Conn: nc, rx: &st.netRx, tx: &st.netTx}
	c := &session{
		srv:      s,
		nc:       nc,
		cc:       cc,
		r:        newConnReader(cc, rawConn(nc), &st.netRx, readBufSize),
		ns:       s.store.Get(defaultNamespace),
		writable: !s.opts.Protect,
		admin:    s.opts.Admin == "",
	}
	c.rr = newRequestReader(c.r)
	c.rr.pool = &s.args
	s.clientsMu.Lock()
	s.clients[c] = struct{}{}
	s.clientsMu.Unlock()
	defer func() {
		s.clientsMu.Lock()
		delete(s.clients, c)
		s.clientsMu.Unlock()
		c.rr.release(1, 0) // the chunks of requests left unanswered
		c.r.letGo(true)
		nc.Close()
	}()
	defer func() {
		if r := recover(); r != nil {
			s.crash(r)
		}
	}()
	for {
		c.rr.drop() // the answered requests' chunks go back first
		if c.r.buffered() == 0 {
			if err := c.idle(); err != nil {
				return
			}
		}
		args, err := c.rr.readNext()
		if err != nil {
			if c.readFailed(err) {
				return
			}
			continue
		}
		if len(args) == 0 {
			continue
		}
		c.busy()
		if c.batchable(args) && c.r.buffered() > 0 {
			c.runBatch()
		} else {
			c.dispatch(args)
		}
		if c.closeConn {
			c.w.Flush()
			return
		}
	}
}

// replyWriters holds the reply buffers of connections that have answered
// everything their client sent.
var replyWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, replyBufSize) }}

// replyBufSize is the size of a connection's reply buffer.
const replyBufSize = 64 << 10

// idle flushes the replies once the client has sent nothing more, and
// gives back what the connection only needs while it has requests to
// answer: its reply buffer and a large scratch buffer (the argument chunks
// went back before, the read buffer goes back once the socket has nothing
// to read).
func (c *session) idle() error {
	if c.w == nil {
		return nil
	}
	err := c.w.Flush()
	c.w.Reset(nil)
	replyWriters.Put(c.w)
	c.w, c.rw.w = nil, nil
	if cap(c.scratch) > maxIdleScratch {
		c.scratch = nil
	}
	c.parked.Store(true)
	return err
}

// busy takes a reply buffer for the requests read.
func (c *session) busy() {
	c.parked.Store(false)
	if c.w == nil {
		c.w = replyWriters.Get().(*bufio.Writer)
		c.w.Reset(c.cc)
		c.rw.w = c.w
	}
}

// readFailed answers a request the reader refused and reports whether the
// connection must be closed (a fatal protocol error or a read error).
func (c *session) readFailed(err error) bool {
	var pe *protoError
	if errors.As(err, &pe) {
		c.busy()
		c.rw.err(pe.reply)
		if pe.fatal {
			c.w.Flush()
			return true
		}
		return false
	}
	if !errors.Is(err, io.EOF) && !errors.Is(err, io.ErrUnexpectedEOF) && !errors.Is(err, net.ErrClosed) {
		c.srv.log.Debugf("client read: %v", err)
	}
	if c.w != nil {
		c.w.Flush()
	}
	return true
}

// crash handles a panic in a connection as official handles SIGSEGV: the
// crash hook (not waited for), namespace-closing for every namespace, and
// exit status 139.
func (s *Server) crash(r any) {
	s.log.Errorf("internal error, stopping: %v\n%s", r, debug.Stack())
	s.closing.Store(true)
	s.hooks.run("crash", false)
	s.closeNamespaces(true)
	os.Exit(139)
}
