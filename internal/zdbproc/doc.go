// Package zdbproc starts real `qsfs zdb` processes for tests: on 127.0.0.1
// (or another address) with a free port and/or on a unix socket, optionally
// inside a named network namespace, waits until the process answers PING,
// keeps its output for failure messages, and stops, kills or restarts it on
// the same directories. Every process is stopped by PID in t.Cleanup.
//
// It owns nothing used in production: the plugin starts zdb in driver/.
package zdbproc
