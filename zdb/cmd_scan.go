package zdb

// Cursor commands: SCAN, RSCAN, KEYCUR, HISTORY; DATA RAW.

func cmdScan(c *session, args [][]byte)    { c.rw.err("No more data") }
func cmdRScan(c *session, args [][]byte)   { c.rw.err("No more data") }
func cmdKeyCur(c *session, args [][]byte)  { c.rw.err("Key not found") }
func cmdHistory(c *session, args [][]byte) { c.rw.err("No more history") }
func cmdData(c *session, args [][]byte)    { c.rw.err("Missing arguments") }
