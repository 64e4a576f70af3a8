package zdbproc

import (
	"bytes"
	"sync"
)

// maxOutput bounds the output kept per process: the last bytes are the ones
// a failure message needs.
const maxOutput = 1 << 20

// output is a process's combined stdout and stderr, safe for concurrent use.
type output struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (o *output) Write(p []byte) (int, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.b.Len()+len(p) > maxOutput {
		keep := maxOutput / 2
		if keep > o.b.Len() {
			keep = o.b.Len()
		}
		tail := append([]byte(nil), o.b.Bytes()[o.b.Len()-keep:]...)
		o.b.Reset()
		o.b.Write(tail)
	}
	return o.b.Write(p)
}

func (o *output) String() string {
	o.mu.Lock()
	defer o.mu.Unlock()
	return o.b.String()
}
