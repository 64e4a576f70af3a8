package zstor

import (
	"container/heap"
	"sort"
	"sync"
	"time"

	"github.com/qsfs/qsfs/zstor/proto"
)

// job is one queued command. Blocking commands carry a done channel and run
// ahead of everything else; a failed non-blocking store is re-queued with
// backoff, forever, as the official scheduler does (visible in status and
// metrics).
type job struct {
	cmd       *proto.Command
	prio      int // 0 blocking, 1 background store
	seq       uint64
	done      chan *proto.Response
	attempts  int
	lastErr   string
	nextRetry time.Time
	index     int
}

type jobHeap []*job

func (h jobHeap) Len() int { return len(h) }
func (h jobHeap) Less(i, j int) bool {
	if h[i].prio != h[j].prio {
		return h[i].prio < h[j].prio
	}
	return h[i].seq < h[j].seq
}
func (h jobHeap) Swap(i, j int) { h[i], h[j] = h[j], h[i]; h[i].index = i; h[j].index = j }
func (h *jobHeap) Push(x any)   { j := x.(*job); j.index = len(*h); *h = append(*h, j) }
func (h *jobHeap) Pop() any {
	old := *h
	j := old[len(old)-1]
	*h = old[:len(old)-1]
	return j
}

// queue is the daemon's priority queue with a retry area.
type queue struct {
	mu      sync.Mutex
	cond    *sync.Cond
	h       jobHeap
	seq     uint64
	running map[*job]bool
	waiting map[*job]*time.Timer // failed, waiting for their retry
	closed  bool
}

func newQueue() *queue {
	q := &queue{running: map[*job]bool{}, waiting: map[*job]*time.Timer{}}
	q.cond = sync.NewCond(&q.mu)
	return q
}

func sameStore(a, b *proto.Command) bool {
	if a.Kind != proto.Store || b.Kind != proto.Store || a.File != b.File || a.Delete != b.Delete {
		return false
	}
	if (a.KeyPath == nil) != (b.KeyPath == nil) {
		return false
	}
	return a.KeyPath == nil || *a.KeyPath == *b.KeyPath
}

// push queues j. A background store identical to one already queued (not
// yet running) is merged into it.
func (q *queue) push(j *job) {
	q.mu.Lock()
	defer q.mu.Unlock()
	if j.done == nil {
		for _, x := range q.h {
			if x.done == nil && sameStore(x.cmd, j.cmd) {
				return
			}
		}
	}
	q.seq++
	j.seq = q.seq
	heap.Push(&q.h, j)
	q.cond.Signal()
}

// pop blocks until a job is available; nil when closed and empty.
func (q *queue) pop() *job {
	q.mu.Lock()
	defer q.mu.Unlock()
	for len(q.h) == 0 {
		if q.closed {
			return nil
		}
		q.cond.Wait()
	}
	j := heap.Pop(&q.h).(*job)
	q.running[j] = true
	return j
}

// finish marks a running job done; when retryAfter > 0 it is re-queued
// after that delay.
func (q *queue) finish(j *job, retryAfter time.Duration) {
	q.mu.Lock()
	defer q.mu.Unlock()
	delete(q.running, j)
	if retryAfter > 0 {
		j.nextRetry = time.Now().Add(retryAfter)
		q.waiting[j] = time.AfterFunc(retryAfter, func() { q.retryNow(j) })
	}
	q.cond.Broadcast()
}

func (q *queue) retryNow(j *job) {
	q.mu.Lock()
	if _, ok := q.waiting[j]; !ok {
		q.mu.Unlock()
		return
	}
	delete(q.waiting, j)
	q.seq++
	j.seq = q.seq
	heap.Push(&q.h, j)
	q.cond.Signal()
	q.mu.Unlock()
}

// retryAll moves every waiting job back into the queue (after a reload or
// when a backend comes back). A job whose timer already fired is being
// re-queued by it.
func (q *queue) retryAll() {
	q.mu.Lock()
	defer q.mu.Unlock()
	for j, t := range q.waiting {
		if t != nil && !t.Stop() {
			continue
		}
		delete(q.waiting, j)
		q.seq++
		j.seq = q.seq
		heap.Push(&q.h, j)
	}
	q.cond.Broadcast()
}

// idle reports whether nothing is queued, running or waiting.
func (q *queue) idle() bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.h) == 0 && len(q.running) == 0 && len(q.waiting) == 0
}

// close wakes the workers so they exit once the queue is empty.
func (q *queue) close() {
	q.mu.Lock()
	q.closed = true
	q.cond.Broadcast()
	q.mu.Unlock()
}

// queueStats is the queue as shown by status and metrics.
type queueStats struct {
	Queued  int          `json:"queued"`
	Running int          `json:"running"`
	Failing int          `json:"failing"`
	Jobs    []jobSummary `json:"jobs,omitempty"`
}

type jobSummary struct {
	File      string    `json:"file"`
	State     string    `json:"state"`
	Attempts  int       `json:"attempts"`
	LastError string    `json:"last_error,omitempty"`
	NextRetry time.Time `json:"next_retry,omitzero"`
}

func (q *queue) stats() queueStats {
	q.mu.Lock()
	defer q.mu.Unlock()
	s := queueStats{Queued: len(q.h), Running: len(q.running)}
	add := func(j *job, state string) {
		if j.attempts > 0 {
			s.Failing++
		}
		s.Jobs = append(s.Jobs, jobSummary{File: j.cmd.File, State: state, Attempts: j.attempts, LastError: j.lastErr, NextRetry: j.nextRetry})
	}
	for j := range q.running {
		add(j, "running")
	}
	for j := range q.waiting {
		add(j, "retrying")
	}
	for _, j := range q.h {
		st := "queued"
		if j.attempts > 0 {
			st = "retrying"
		}
		add(j, st)
	}
	sort.SliceStable(s.Jobs, func(a, b int) bool { return s.Jobs[a].State < s.Jobs[b].State })
	return s
}
