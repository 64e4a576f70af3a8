package iouring

import (
	"errors"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"
)

func newRing(t *testing.T, entries uint32, flags uint32) *Ring {
	t.Helper()
	r, err := New(entries, flags)
	if errors.Is(err, unix.ENOSYS) || errors.Is(err, unix.EPERM) {
		t.Skipf("io_uring not available: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

// TestNopRoundTrip submits more no-ops than the ring holds, in batches, and
// checks every completion comes back once with its user data.
func TestNopRoundTrip(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := newRing(t, 4, SetupSingleIssuer|SetupDeferTaskrun)
	seen := map[uint64]int{}
	next := uint64(1)
	for batch := 0; batch < 10; batch++ {
		n := 0
		for e := r.Next(); e != nil; e = r.Next() {
			e.SetOp(OpNop, -1, next)
			next++
			n++
		}
		if n != 4 {
			t.Fatalf("batch %d: %d free entries, want 4", batch, n)
		}
		if err := r.Submit(uint32(n)); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < n; i++ {
			c, ok := r.Peek()
			if !ok {
				t.Fatalf("batch %d: completion %d missing", batch, i)
			}
			if c.Res != 0 {
				t.Fatalf("nop %d: res %d", c.UserData, c.Res)
			}
			seen[c.UserData]++
			r.Seen()
		}
		if _, ok := r.Peek(); ok {
			t.Fatalf("batch %d: extra completion", batch)
		}
	}
	for ud := uint64(1); ud < next; ud++ {
		if seen[ud] != 1 {
			t.Fatalf("user data %d completed %d times", ud, seen[ud])
		}
	}
}

// TestCmdOnPlainFile checks that a command on a descriptor that does not
// take io_uring commands completes with an error rather than hanging.
func TestCmdOnPlainFile(t *testing.T) {
	runtime.LockOSThread()
	defer runtime.UnlockOSThread()
	r := newRing(t, 2, 0)
	f, err := unix.Open(t.TempDir(), unix.O_RDONLY|unix.O_DIRECTORY, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(f)
	e := r.Next()
	e.SetOp(OpURingCmd, int32(f), 7)
	e.SetCmdOp(1)
	copy(e.Cmd(), []byte{1, 2, 3})
	if err := r.Submit(1); err != nil {
		t.Fatal(err)
	}
	c, ok := r.Peek()
	if !ok {
		t.Fatal("no completion")
	}
	if c.UserData != 7 || c.Res >= 0 {
		t.Fatalf("completion %+v, want user data 7 and an error", c)
	}
	r.Seen()
}
