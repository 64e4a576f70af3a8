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
	r         *connReader
	w         *bufio.Writer
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
		r:        newConnReader(cc, rawConn(nc), &st.netRx, readBufSize),
		w:        bufio.NewWriterSize(cc, 64<<10),
		ns:       s.store.Get(defaultNamespace),
		writable: !s.opts.Protect,
		admin:    s.opts.Admin == "",
	}
	c.rw.w = c.w
	c.rr = newRequestReader(c.r)
	c.rr.pool = &s.args
	s.clientsMu.Lock()
	s.clients[c] = struct{}{}
	s.clientsMu.Unlock()
	defer func() {
		s.clientsMu.Lock()
		delete(s.clients, c)
		s.clientsMu.Unlock()
		nc.Close()
		c.rr.release(1, 0) // the chunks of requests left unanswered
	}()
	defer func() {
		if r := recover(); r != nil {
			s.crash(r)
		}
	}()
	for {
		if c.r.buffered() == 0 {
			if err := c.w.Flush(); err != nil {
				return
			}
			// the client sent nothing more: no large buffer kept while idle
			if cap(c.scratch) > maxIdleScratch {
				c.scratch = nil
			}
		}
		args, err := c.rr.read()
		if err != nil {
			if c.readFailed(err) {
				return
			}
			continue
		}
		if len(args) == 0 {
			continue
		}
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

// readFailed answers a request the reader refused and reports whether the
// connection must be closed (a fatal protocol error or a read error).
func (c *session) readFailed(err error) bool {
	var pe *protoError
	if errors.As(err, &pe) {
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
	c.w.Flush()
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
