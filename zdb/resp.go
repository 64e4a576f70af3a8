package zdb

import (
	"bufio"
	"errors"
	"io"
	"strconv"
)

const (
	maxArgs     = 1024
	readBufSize = 64 << 10
	// maxRequest bounds one request's arguments together (official has no
	// such bound; no client sends more than a few 8 MiB values at once)
	maxRequest = 64 << 20
	// ownChunkSize is each connection's own argument chunk, enough for
	// requests without a large value
	ownChunkSize = 4 << 10
	// keepBuf is the largest scratch buffer kept between requests
	keepBuf = 4 << 20
)

// protoError is a request the server answers with an error reply. Fatal
// errors leave the stream out of sync, so the connection is closed after
// the reply.
type protoError struct {
	reply string
	fatal bool
}

func (e *protoError) Error() string { return e.reply }

var (
	errMalformedArray = &protoError{reply: "Malformed request, array expected"}
	errMissingArgs    = &protoError{reply: "Missing arguments"}
	errMalformedArg   = &protoError{reply: "Malformed query string", fatal: true}
	errMalformed      = &protoError{reply: "Malformed request", fatal: true}
	errTooManyArgs    = &protoError{reply: "Too many arguments"}
	errPayloadTooBig  = &protoError{reply: "Payload too big"}
)

// requestReader parses RESP2 multi-bulk requests. read returns one
// request; readNext appends the next one to those already held, so a
// pipelined batch can be kept together (arguments are stored as places in
// chunks and rebuilt with request once reading is done). Arguments are
// read into the connection's own small chunk while they fit, else into
// chunks lent by the server-wide pool (or, for one larger than a chunk, a
// buffer of its own); read gives them all back before reading on, so an
// idle connection holds no chunk. Returned arguments alias the chunks
// until the next read or readNext.
type requestReader struct {
	r      *connReader
	pool   *chunkPool
	chunks [][]byte // the held arguments' chunks: the own one, then lent ones
	offs   []argRef // where every held argument lies
	reqs   []int    // index in offs of each held request's first argument
	bytes  int      // size of the held arguments
	args   [][]byte
}

// argRef is one held argument: chunks[chunk][start:end].
type argRef struct {
	chunk      int32
	start, end int32
}

// newRequestReader reads requests from r with a pool of its own; the
// server gives its connections its shared pool instead.
func newRequestReader(r *connReader) *requestReader {
	return &requestReader{r: r, pool: new(chunkPool), chunks: [][]byte{make([]byte, 0, ownChunkSize)}}
}

// readLine returns one CRLF-terminated line without its terminator.
func (rr *requestReader) readLine() ([]byte, error) {
	line, err := rr.r.readSlice('\n')
	if err == bufio.ErrBufferFull {
		return nil, errMalformed
	}
	if err != nil {
		if err == io.EOF && len(line) > 0 {
			return nil, io.ErrUnexpectedEOF
		}
		return nil, err
	}
	n := len(line) - 1
	if n > 0 && line[n-1] == '\r' {
		n--
	}
	return line[:n], nil
}

// parseLen parses a RESP length; it refuses anything but plain decimals.
func parseLen(b []byte) (int, bool) {
	if len(b) == 0 || len(b) > 18 {
		return 0, false
	}
	neg := false
	if b[0] == '-' {
		neg, b = true, b[1:]
		if len(b) == 0 {
			return 0, false
		}
	}
	n := 0
	for _, c := range b {
		if c < '0' || c > '9' {
			return 0, false
		}
		n = n*10 + int(c-'0')
	}
	if neg {
		n = -n
	}
	return n, true
}

// read returns the next request's arguments, a *protoError for a request
// to answer with an error, or an io error. It drops the held requests and
// gives their lent chunks back first.
func (rr *requestReader) read() ([][]byte, error) {
	rr.drop()
	return rr.readNext()
}

// drop forgets the held requests and gives their lent chunks back.
func (rr *requestReader) drop() {
	rr.release(1, 0)
	rr.offs = rr.offs[:0]
	rr.reqs = rr.reqs[:0]
	rr.bytes = 0
}

// release keeps the first n chunks, the last of them truncated to used
// bytes, and gives the others back to the pool.
func (rr *requestReader) release(n, used int) {
	if len(rr.chunks) == n && len(rr.chunks[n-1]) == used {
		return // nothing to give back
	}
	for i := n; i < len(rr.chunks); i++ {
		rr.pool.put(rr.chunks[i])
		rr.chunks[i] = nil
	}
	rr.chunks = rr.chunks[:n]
	rr.chunks[n-1] = rr.chunks[n-1][:used]
	// no stale argument keeps a chunk alive once the pool dropped it
	clear(rr.args[:cap(rr.args)])
}

// readNext reads one more request and holds it with the previous ones;
// errors are those of read, and a request that fails is not held.
func (rr *requestReader) readNext() ([][]byte, error) {
	nChunks, used := len(rr.chunks), len(rr.chunks[len(rr.chunks)-1])
	offStart, nbytes := len(rr.offs), rr.bytes
	args, err := rr.readOne()
	if err != nil {
		rr.release(nChunks, used)
		rr.offs, rr.bytes = rr.offs[:offStart], nbytes
		return nil, err
	}
	rr.reqs = append(rr.reqs, offStart)
	return args, nil
}

// held returns the number of requests held.
func (rr *requestReader) held() int { return len(rr.reqs) }

// heldBytes returns the size of the held arguments.
func (rr *requestReader) heldBytes() int { return rr.bytes }

// lentBytes returns the capacity of the chunks this reader holds from the
// pool (0 between requests).
func (rr *requestReader) lentBytes() int {
	n := 0
	for _, c := range rr.chunks[1:] {
		n += cap(c)
	}
	return n
}

// arg returns held argument ref.
func (rr *requestReader) arg(ref argRef) []byte {
	return rr.chunks[ref.chunk][ref.start:ref.end:ref.end]
}

// request returns the arguments of held request i (valid until the next
// read, readNext or request call).
func (rr *requestReader) request(i int) [][]byte {
	end := len(rr.offs)
	if i+1 < len(rr.reqs) {
		end = rr.reqs[i+1]
	}
	rr.args = rr.args[:0]
	for _, ref := range rr.offs[rr.reqs[i]:end] {
		rr.args = append(rr.args, rr.arg(ref))
	}
	return rr.args
}

// room returns n bytes of free space at the end of the last chunk, taking
// a new chunk from the pool when it has less.
func (rr *requestReader) room(n int) (int, []byte) {
	ci := len(rr.chunks) - 1
	c := rr.chunks[ci]
	if cap(c)-len(c) < n {
		c = rr.pool.get(n)
		rr.chunks = append(rr.chunks, c)
		ci++
	}
	return ci, c[len(c) : len(c)+n]
}

func (rr *requestReader) readOne() ([][]byte, error) {
	line, err := rr.readLine()
	if err != nil {
		return nil, err
	}
	if len(line) == 0 || line[0] != '*' {
		return nil, errMalformedArray
	}
	// official reads the count with atoi: "*0", "*-1" and "*x" are all
	// "Missing arguments"
	argc, ok := parseLen(line[1:])
	if !ok || argc <= 0 {
		return nil, errMissingArgs
	}
	var perr *protoError
	if argc > maxArgs {
		perr = errTooManyArgs
	}
	offStart := len(rr.offs)
	total := 0
	for i := 0; i < argc; i++ {
		line, err := rr.readLine()
		if err != nil {
			return nil, eofToUnexpected(err)
		}
		if len(line) == 0 || line[0] != '$' {
			return nil, errMalformedArg
		}
		n, ok := parseLen(line[1:])
		if !ok || n < 0 {
			return nil, errMalformedArg
		}
		total += n
		if n > maxPayload || total > maxRequest {
			perr = errPayloadTooBig
		}
		if perr != nil {
			if err := rr.r.discard(n); err != nil {
				return nil, eofToUnexpected(err)
			}
			if err := rr.expectCRLF(); err != nil {
				return nil, err
			}
			continue
		}
		ci, dst := rr.room(n + 2)
		// the payload and its CRLF land in place, not through the read buffer
		if err := rr.r.readFull(dst); err != nil {
			return nil, eofToUnexpected(err)
		}
		if dst[n] != '\r' || dst[n+1] != '\n' {
			return nil, errMalformed
		}
		start := len(rr.chunks[ci])
		rr.chunks[ci] = rr.chunks[ci][:start+n]
		rr.offs = append(rr.offs, argRef{chunk: int32(ci), start: int32(start), end: int32(start + n)})
		rr.bytes += n
	}
	if perr != nil {
		return nil, perr
	}
	rr.args = rr.args[:0]
	for _, ref := range rr.offs[offStart:] {
		rr.args = append(rr.args, rr.arg(ref))
	}
	return rr.args, nil
}

func (rr *requestReader) expectCRLF() error {
	b, err := rr.r.peek(2)
	if err != nil {
		return eofToUnexpected(err)
	}
	if b[0] != '\r' || b[1] != '\n' {
		return errMalformed
	}
	return rr.r.discard(2)
}

func eofToUnexpected(err error) error {
	if errors.Is(err, io.EOF) {
		return io.ErrUnexpectedEOF
	}
	return err
}

// grow extends b by n bytes, reallocating geometrically.
func grow(b []byte, n int) []byte {
	l := len(b)
	if cap(b)-l < n {
		nb := make([]byte, l, 2*cap(b)+n)
		copy(nb, b)
		b = nb
	}
	return b[:l+n]
}

// replyWriter appends RESP2 replies to a buffered writer.
type replyWriter struct {
	w   *bufio.Writer
	num []byte
}

func (rw *replyWriter) status(s string) {
	rw.w.WriteByte('+')
	rw.w.WriteString(s)
	rw.w.WriteString("\r\n")
}

func (rw *replyWriter) err(s string) {
	rw.w.WriteByte('-')
	rw.w.WriteString(s)
	rw.w.WriteString("\r\n")
}

func (rw *replyWriter) integer(n int64) {
	rw.w.WriteByte(':')
	rw.num = strconv.AppendInt(rw.num[:0], n, 10)
	rw.w.Write(rw.num)
	rw.w.WriteString("\r\n")
}

func (rw *replyWriter) bulkHeader(n int) {
	rw.w.WriteByte('$')
	rw.num = strconv.AppendInt(rw.num[:0], int64(n), 10)
	rw.w.Write(rw.num)
	rw.w.WriteString("\r\n")
}

func (rw *replyWriter) bulk(b []byte) {
	rw.bulkHeader(len(b))
	rw.w.Write(b)
	rw.w.WriteString("\r\n")
}

func (rw *replyWriter) bulkString(s string) {
	rw.bulkHeader(len(s))
	rw.w.WriteString(s)
	rw.w.WriteString("\r\n")
}

func (rw *replyWriter) null() { rw.w.WriteString("$-1\r\n") }

func (rw *replyWriter) array(n int) {
	rw.w.WriteByte('*')
	rw.num = strconv.AppendInt(rw.num[:0], int64(n), 10)
	rw.w.Write(rw.num)
	rw.w.WriteString("\r\n")
}
