package zstor

import (
	"encoding/json"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/zstor/config"
	"github.com/qsfs/qsfs/zstor/engine"
)

func humanBytes(n int64) string {
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %ciB", float64(n)/float64(div), "KMGTPE"[exp])
}

// printStatus prints the backends table and, when a daemon runs, its
// upload queue with failing uploads.
func printStatus(w io.Writer, cfg *config.Config, log *logrus.Entry) error {
	eng, err := engine.New(cfg, log)
	if err != nil {
		return err
	}
	rows := eng.Status(probeTimeout)
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "TYPE\tADDRESS\tNAMESPACE\tREACHABLE\tOBJECTS\tUSED\tFREE\tUSAGE")
	for _, r := range rows {
		ns := "-"
		if r.Backend.Namespace != nil {
			ns = *r.Backend.Namespace
		}
		if !r.Reachable {
			fmt.Fprintf(tw, "%s\t%s\t%s\tno\t-\t-\t-\t-\n", r.Type, r.Backend.Address, ns)
			continue
		}
		used := r.Int("data_size_bytes")
		limit := r.Int("data_limits_bytes")
		free, usage := "unlimited", "-"
		if limit > 0 {
			free = humanBytes(max(limit-used, 0))
			usage = fmt.Sprintf("%.1f%%", 100*float64(used)/float64(limit))
		} else if d := r.Int("data_disk_freespace_bytes"); d > 0 {
			free = humanBytes(d) + " (disk)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\tyes\t%d\t%s\t%s\t%s\n", r.Type, r.Backend.Address, ns, r.Int("entries"), humanBytes(used), free, usage)
	}
	tw.Flush()
	if cfg.Socket == "" {
		return nil
	}
	conn, err := dialDaemon(cfg.Socket)
	if err != nil {
		fmt.Fprintln(w, "\ndaemon: not running (no answer on", cfg.Socket+")")
		return nil
	}
	conn.Close()
	b, err := os.ReadFile(statusFile(cfg.Socket))
	if err != nil {
		fmt.Fprintln(w, "\ndaemon: not running (no status at", statusFile(cfg.Socket)+")")
		return nil
	}
	var q queueStats
	if err := json.Unmarshal(b, &q); err != nil {
		return fmt.Errorf("daemon status %s: %w", statusFile(cfg.Socket), err)
	}
	fmt.Fprintf(w, "\ndaemon queue: %d queued, %d running, %d failing (retried with backoff)\n", q.Queued, q.Running, q.Failing)
	if len(q.Jobs) > 0 {
		tw = tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "FILE\tSTATE\tATTEMPTS\tNEXT RETRY\tLAST ERROR")
		for _, j := range q.Jobs {
			next := "-"
			if !j.NextRetry.IsZero() {
				next = time.Until(j.NextRetry).Round(time.Second).String()
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%s\n", j.File, j.State, j.Attempts, next, j.LastError)
		}
		tw.Flush()
	}
	return nil
}
