// Package zdb is qsfs's 0-db 2.0.x compatible server, run as `qsfs zdb`.
//
// It owns the whole server side of official zdb 2.0.7: the command line
// (getopt_long_only style flags and defaults), the RESP2 request parser and
// replies, the command set with official error strings, namespaces and their
// descriptors, the on-disk index and data files (byte-compatible with the
// official layout, CRC-32C computed as official does), rotation, hooks, and
// signal handling. It does not own any client: zdbfs, zstor and the plugin
// talk to it over TCP or a unix socket through package zdb/client, exactly as
// they would talk to the official binary.
//
// Concurrency: one goroutine per connection, with buffered reads and writes;
// pipelined replies are flushed once the read buffer is drained. Each
// Namespace has its own RWMutex: reads share it, writes take it exclusively
// and complete their write(2) calls before the reply is queued, so kill -9
// never loses an acknowledged write. The index lives in memory (a map in
// user-key mode, a slice indexed by id in sequential mode) and is rebuilt
// from the index files at start.
//
// Deliberate deviations from official 2.0.7:
//
//   - FLUSH on a private, password-protected namespace really removes every
//     entry and file and restarts at i0/d0, so the next sequential id is 0
//     (official answers +OK and deletes nothing because it only matches v1
//     file names).
//   - NSSET validates values and names the bad one:
//     `-Invalid property value "abc" (expected: size in bytes)` for maxsize,
//     `(expected: 0, 1)` for public, worm, lock and freeze (official stores
//     atoll/first-character results silently).
//   - Within one user-key overwrite the new index entry is appended before
//     the previous one is flagged deleted (official flags first), so a crash
//     in between never loses the key.
//   - At start the last index entry of the active file is checked against
//     its payload's CRC; a torn entry (and a partial trailing index record)
//     is dropped instead of being served.
//   - A missing active data file at start fires missing-data (waited for)
//     before an empty one is created as official does.
//   - One request's arguments together are limited to 64 MiB (official
//     limits only each argument, to 8 MiB); the reply is -Payload too big.
//   - A crash between an overwrite's two index writes leaves two live
//     records for the key; the older one is flagged at the next start.
//   - The index `dataid` field is written with the real data file id
//     (official was observed writing 0); on load the larger of the field and
//     the index file id is used, which reads both forms correctly.
//
// A sequential-mode update appends a copy of the superseded record flagged
// deleted and rewrites the original slot in place, so it consumes one id; a
// delete flags the slot in place and consumes none (official's test suite:
// insert, update, delete, and the next insert returns id 2).
// next_internal_id counts index records, not keys.
package zdb
