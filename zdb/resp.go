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
	// keepBuf is the largest argument buffer kept between requests
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
// pipelined batch can be kept together (arguments are stored as offsets
// into one buffer and rebuilt with request once reading is done). Returned
// arguments alias the internal buffer until the next read or readNext.
type requestReader struct {
	r    *connReader
	buf  []byte
	offs []int // start and end of every held argument in buf
	reqs []int // index in offs of each held request's first argument
	args [][]byte
}

func newRequestReader(r *connReader) *requestReader {
	return &requestReader{r: r, buf: make([]byte, 0, 4096)}
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
// to answer with an error, or an io error. It drops the held requests.
func (rr *requestReader) read() ([][]byte, error) {
	if cap(rr.buf) > keepBuf {
		rr.buf = make([]byte, 0, 4096)
	} else {
		rr.buf = rr.buf[:0]
	}
	rr.offs = rr.offs[:0]
	rr.reqs = rr.reqs[:0]
	return rr.readNext()
}

// readNext reads one more request and holds it with the previous ones;
// errors are those of read, and a request that fails is not held.
func (rr *requestReader) readNext() ([][]byte, error) {
	bufStart, offStart := len(rr.buf), len(rr.offs)
	args, err := rr.readOne()
	if err != nil {
		rr.buf, rr.offs = rr.buf[:bufStart], rr.offs[:offStart]
		return nil, err
	}
	rr.reqs = append(rr.reqs, offStart)
	return args, nil
}

// held returns the number of requests held.
func (rr *requestReader) held() int { return len(rr.reqs) }

// heldBytes returns the size of the held arguments.
func (rr *requestReader) heldBytes() int { return len(rr.buf) }

// request returns the arguments of held request i (valid until the next
// read, readNext or request call).
func (rr *requestReader) request(i int) [][]byte {
	end := len(rr.offs)
	if i+1 < len(rr.reqs) {
		end = rr.reqs[i+1]
	}
	rr.args = rr.args[:0]
	for j := rr.reqs[i]; j < end; j += 2 {
		rr.args = append(rr.args, rr.buf[rr.offs[j]:rr.offs[j+1]:rr.offs[j+1]])
	}
	return rr.args
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
		start := len(rr.buf)
		rr.buf = grow(rr.buf, n+2)
		// the payload and its CRLF land in place, not through the read buffer
		if err := rr.r.readFull(rr.buf[start : start+n+2]); err != nil {
			return nil, eofToUnexpected(err)
		}
		if rr.buf[start+n] != '\r' || rr.buf[start+n+1] != '\n' {
			return nil, errMalformed
		}
		rr.buf = rr.buf[:start+n]
		rr.offs = append(rr.offs, start, start+n)
	}
	if perr != nil {
		return nil, perr
	}
	rr.args = rr.args[:0]
	for i := offStart; i < len(rr.offs); i += 2 {
		rr.args = append(rr.args, rr.buf[rr.offs[i]:rr.offs[i+1]:rr.offs[i+1]])
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
