package zstor

import (
	"testing"
	"time"

	"github.com/qsfs/qsfs/zstor/proto"
)

func storeJob(file string, prio int) *job {
	return &job{cmd: &proto.Command{Kind: proto.Store, File: file}, prio: prio}
}

func TestQueueOrderMergeRetry(t *testing.T) {
	q := newQueue()
	q.push(storeJob("/a", 1))
	q.push(storeJob("/b", 1))
	q.push(storeJob("/a", 1)) // merged with the queued /a
	blocking := storeJob("/c", 0)
	blocking.done = make(chan *proto.Response, 1)
	q.push(blocking)
	if st := q.stats(); st.Queued != 3 {
		t.Fatalf("queued %d, want 3 (duplicate merged)", st.Queued)
	}
	var order []string
	for i := 0; i < 3; i++ {
		j := q.pop()
		order = append(order, j.cmd.File)
		if j.cmd.File == "/b" {
			j.attempts, j.lastErr = 1, "backend down"
			q.finish(j, time.Hour) // waits for its retry
		} else {
			q.finish(j, 0)
		}
	}
	if order[0] != "/c" || order[1] != "/a" || order[2] != "/b" {
		t.Fatalf("order %v, want blocking first then FIFO", order)
	}
	st := q.stats()
	if q.idle() || st.Failing != 1 || len(st.Jobs) != 1 || st.Jobs[0].State != "retrying" || st.Jobs[0].LastError != "backend down" {
		t.Fatalf("stats after a failure: %+v", st)
	}
	q.retryAll()
	q.retryAll()
	if st := q.stats(); st.Queued != 1 {
		t.Fatalf("after retryAll twice: %+v", st)
	}
	j := q.pop()
	q.finish(j, 0)
	if !q.idle() {
		t.Fatalf("queue not idle: %+v", q.stats())
	}
	q.close()
	if q.pop() != nil {
		t.Fatal("pop on a closed empty queue returned a job")
	}
}
