package backend

import (
	"sync"
	"time"

	"github.com/qsfs/qsfs/zstor/config"
)

// Pool keeps idle connections per backend namespace and mode. Safe for
// concurrent use.
type Pool struct {
	Timeout time.Duration // dial and round-trip timeout; 0 = Timeout

	mu   sync.Mutex
	idle map[string][]*Conn
}

const maxIdle = 4

func poolKey(b config.Backend, m Mode) string {
	return b.Address + "\x00" + b.NamespaceName() + "\x00" + b.PasswordValue() + "\x00" + string(m)
}

// Get returns an idle connection or dials a new one.
func (p *Pool) Get(b config.Backend, m Mode) (*Conn, error) {
	k := poolKey(b, m)
	p.mu.Lock()
	if l := p.idle[k]; len(l) > 0 {
		c := l[len(l)-1]
		p.idle[k] = l[:len(l)-1]
		p.mu.Unlock()
		return c, nil
	}
	p.mu.Unlock()
	return Dial(b, m, p.Timeout)
}

// Put returns a connection for reuse; broken ones are closed. m must be the
// mode it was obtained with.
func (p *Pool) Put(c *Conn, m Mode) {
	if c == nil {
		return
	}
	if c.broken {
		c.Close()
		return
	}
	k := poolKey(c.Backend, m)
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.idle == nil {
		p.idle = make(map[string][]*Conn)
	}
	if len(p.idle[k]) >= maxIdle {
		c.Close()
		return
	}
	p.idle[k] = append(p.idle[k], c)
}

// Forget closes every idle connection to b (after a failure or reload).
func (p *Pool) Forget(b config.Backend) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, m := range []Mode{Sequential, UserKey, ""} {
		k := poolKey(b, m)
		for _, c := range p.idle[k] {
			c.Close()
		}
		delete(p.idle, k)
	}
}

// Close closes all idle connections.
func (p *Pool) Close() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for k, l := range p.idle {
		for _, c := range l {
			c.Close()
		}
		delete(p.idle, k)
	}
}

// Do runs fn on a connection to b. When fn fails on a reused connection
// with a transport error (the server may have dropped an idle connection),
// it is retried once on a fresh one.
func (p *Pool) Do(b config.Backend, m Mode, fn func(c *Conn) error) error {
	k := poolKey(b, m)
	p.mu.Lock()
	var c *Conn
	if l := p.idle[k]; len(l) > 0 {
		c = l[len(l)-1]
		p.idle[k] = l[:len(l)-1]
	}
	p.mu.Unlock()
	if c != nil {
		err := fn(c)
		if err == nil || !c.broken {
			p.Put(c, m)
			return err
		}
		c.Close()
	}
	c, err := Dial(b, m, p.Timeout)
	if err != nil {
		return err
	}
	err = fn(c)
	p.Put(c, m)
	return err
}
