package zdb

import (
	"errors"
	"strconv"
	"strings"
	"time"
)

type command struct {
	name    string
	handler func(c *session, args [][]byte)
}

// commandTable is searched in order; a request names the first entry its
// (case-insensitive) text is a prefix of, as official's strncasecmp lookup
// does ("G" is GET, "S" is SET).
var commandTable []command

func init() {
	commandTable = []command{
		{"*", cmdAsterisk},
		{"WAIT", cmdWait},
		{"MIRROR", cmdMirror},
		{"MASTER", cmdMaster},
		{"PING", cmdPing},
		{"TIME", cmdTime},
		{"AUTH", cmdAuth},
		{"SET", cmdSet},
		{"SETX", cmdSet},
		{"GET", cmdGet},
		{"MGET", cmdMGet},
		{"DEL", cmdDel},
		{"EXISTS", cmdExists},
		{"CHECK", cmdCheck},
		{"LENGTH", cmdLength},
		{"KEYTIME", cmdKeyTime},
		{"SCAN", cmdScan},
		{"SCANX", cmdScan},
		{"RSCAN", cmdRScan},
		{"KSCAN", cmdKScan},
		{"HISTORY", cmdHistory},
		{"KEYCUR", cmdKeyCur},
		{"INFO", cmdInfo},
		{"STOP", cmdStop},
		{"DBSIZE", cmdDBSize},
		{"NSNEW", cmdNSNew},
		{"NSDEL", cmdNSDel},
		{"NSLIST", cmdNSList},
		{"NSSET", cmdNSSet},
		{"NSINFO", cmdNSInfo},
		{"NSJUMP", cmdNSJump},
		{"SELECT", cmdSelect},
		{"RELOAD", cmdReload},
		{"FLUSH", cmdFlush},
		{"HOOKS", cmdHooks},
		{"INDEX", cmdIndex},
		{"DATA", cmdData},
	}
}

// lookupCommand resolves a command name by prefix, as official does.
func lookupCommand(name []byte) *command {
	for i := range commandTable {
		c := &commandTable[i]
		if len(name) <= len(c.name) && prefixFold(name, c.name) {
			return c
		}
	}
	return nil
}

// prefixFold reports whether name case-insensitively equals the start of
// upper (an upper-case ASCII command name), without allocating.
func prefixFold(name []byte, upper string) bool {
	for i, b := range name {
		if 'a' <= b && b <= 'z' {
			b -= 'a' - 'A'
		}
		if b != upper[i] {
			return false
		}
	}
	return true
}

func (c *session) dispatch(args [][]byte) {
	st := &c.srv.store.stats
	if c.ns == nil || c.ns.removed.Load() {
		c.rw.err("Your active namespace is not available anymore (probably removed).")
		c.closeConn = true
		return
	}
	st.cmdExecuted.Add(1)
	cmd := lookupCommand(args[0])
	if cmd == nil {
		st.cmdFailed.Add(1)
		c.rw.err("Command not supported")
		return
	}
	cmd.handler(c, args)
	if cmd.name != "WAIT" {
		c.srv.waiters.notify(c.ns, cmd.name)
	}
}

// validate checks the argument count and, unless nullOK, that no argument
// is empty.
func (c *session) validate(args [][]byte, n int, nullOK bool) bool {
	if len(args) != n {
		c.rw.err("Unexpected arguments")
		return false
	}
	if !nullOK {
		for _, a := range args {
			if len(a) == 0 {
				c.rw.err("Invalid argument")
				return false
			}
		}
	}
	return true
}

func (c *session) requireAdmin() bool {
	if !c.admin {
		c.srv.store.stats.cmdUnauthorized.Add(1)
		c.rw.err("Permission denied")
		return false
	}
	return true
}

func (c *session) replyErr(err error) {
	var er errReply
	if errors.As(err, &er) {
		c.rw.err(string(er))
		return
	}
	c.srv.log.Errorf("command failed: %v", err)
	c.rw.err("Internal Error")
}

// atoll mimics C atoll: leading decimal digits, 0 otherwise.
func atoll(b []byte) int64 {
	s := strings.TrimSpace(string(b))
	end := 0
	if end < len(s) && (s[end] == '-' || s[end] == '+') {
		end++
	}
	for end < len(s) && s[end] >= '0' && s[end] <= '9' {
		end++
	}
	n, _ := strconv.ParseInt(s[:end], 10, 64)
	return n
}

func now32() uint32 { return uint32(time.Now().Unix()) }

func cmdAsterisk(c *session, _ [][]byte) { c.rw.err("This is not a valid command") }
func cmdPing(c *session, _ [][]byte)     { c.rw.status("PONG") }
func cmdStop(c *session, _ [][]byte)     { c.rw.err("Unauthorized") }
func cmdKScan(c *session, _ [][]byte) {
	c.rw.err("Command disabled in release code, not yet available")
}
func cmdMirror(c *session, _ [][]byte) { c.rw.status("Starting mirroring") }
func cmdMaster(c *session, _ [][]byte) { c.rw.status("OK") }

func cmdTime(c *session, _ [][]byte) {
	t := time.Now()
	c.rw.array(2)
	c.rw.bulkString(strconv.FormatInt(t.Unix(), 10))
	c.rw.bulkString(strconv.FormatInt(int64(t.Nanosecond()/1000), 10))
}
