// Command zdbbench is a minimal redis-benchmark stand-in for the one case
// redis-benchmark cannot express: GET of a sequential-mode id, whose 8-byte
// little-endian key contains NUL bytes (redis-benchmark's -x argument is cut
// at the first NUL). It runs -c connections that each send -n/-c requests
// in batches of -P and prints requests per second. Like redis-benchmark it
// checks reply framing and discards payloads without keeping them. Used by
// scripts/bench-zdb.sh only.
package main

import (
	"bufio"
	"bytes"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

func request(args ...[]byte) []byte {
	var b bytes.Buffer
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n", len(a))
		b.Write(a)
		b.WriteString("\r\n")
	}
	return b.Bytes()
}

// discardReply reads one reply; it fails on error replies and nil bulks.
func discardReply(r *bufio.Reader) error {
	line, err := r.ReadSlice('\n')
	if err != nil {
		return err
	}
	switch line[0] {
	case '+':
		return nil
	case '$':
		n, err := strconv.Atoi(string(line[1 : len(line)-2]))
		if err != nil {
			return fmt.Errorf("bad bulk header %q", line)
		}
		if n < 0 {
			return fmt.Errorf("key not found")
		}
		_, err = r.Discard(n + 2)
		return err
	}
	return fmt.Errorf("unexpected reply %q", line)
}

func worker(addr, ns string, key []byte, count, pipeline int) error {
	nc, err := net.DialTimeout("tcp", addr, 10*time.Second)
	if err != nil {
		return err
	}
	defer nc.Close()
	r := bufio.NewReaderSize(nc, 64<<10)
	if _, err := nc.Write(request([]byte("SELECT"), []byte(ns))); err != nil {
		return err
	}
	if err := discardReply(r); err != nil {
		return fmt.Errorf("select %s: %w", ns, err)
	}
	batch := bytes.Repeat(request([]byte("GET"), key), pipeline)
	for done := 0; done < count; {
		n := min(pipeline, count-done)
		if _, err := nc.Write(batch[:n*len(batch)/pipeline]); err != nil {
			return err
		}
		for j := 0; j < n; j++ {
			if err := discardReply(r); err != nil {
				if err == io.EOF {
					err = io.ErrUnexpectedEOF
				}
				return err
			}
		}
		done += n
	}
	return nil
}

func main() {
	addr := flag.String("a", "127.0.0.1:9900", "zdb address (host:port)")
	ns := flag.String("ns", "default", "namespace to SELECT")
	clients := flag.Int("c", 16, "parallel connections")
	requests := flag.Int("n", 10000, "total requests")
	pipeline := flag.Int("P", 1, "requests per batch")
	id := flag.Uint64("id", 0, "sequential id to GET")
	flag.Parse()

	key := client.SeqKey(*id)
	per := *requests / *clients
	var wg sync.WaitGroup
	errs := make(chan error, *clients)
	start := time.Now()
	for i := 0; i < *clients; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := worker(*addr, *ns, key, per, *pipeline); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		fmt.Fprintln(os.Stderr, "zdbbench:", err)
		os.Exit(1)
	}
	fmt.Printf("%.2f\n", float64(per**clients)/time.Since(start).Seconds())
}
