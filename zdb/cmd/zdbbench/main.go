// Command zdbbench is a minimal redis-benchmark stand-in for the one case
// redis-benchmark cannot express: GET of a sequential-mode id, whose 8-byte
// little-endian key contains NUL bytes (redis-benchmark's -x argument is cut
// at the first NUL). It runs -c connections that each send -n/-c requests
// in batches of -P, and prints requests per second. Used by
// scripts/bench-zdb.sh only.
package main

import (
	"flag"
	"fmt"
	"os"
	"sync"
	"time"

	"github.com/qsfs/qsfs/zdb/client"
)

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
			c, err := client.Dial("tcp", *addr, 30*time.Second)
			if err != nil {
				errs <- err
				return
			}
			defer c.Close()
			if err := c.Select(*ns, ""); err != nil {
				errs <- err
				return
			}
			for done := 0; done < per; {
				batch := min(*pipeline, per-done)
				for j := 0; j < batch; j++ {
					c.Send("GET", key)
				}
				if err := c.Flush(); err != nil {
					errs <- err
					return
				}
				for j := 0; j < batch; j++ {
					r, err := c.Receive()
					if err == nil {
						err = r.Err()
					}
					if err == nil && r.Nil {
						err = fmt.Errorf("id %d not found", *id)
					}
					if err != nil {
						errs <- err
						return
					}
				}
				done += batch
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
