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

// requestReader parses RESP2 multi-bulk requests. The returned arguments
// alias an internal buffer valid until the next call.
type requestReader struct {
	r    *bufio.Reader
	buf  []byte
	offs []int
	args [][]byte
}

func newRequestReader(r *bufio.Reader) *requestReader {
	return &requestReader{r: r, buf: make([]byte, 0, 4096)}
}

// readLine returns one CRLF-terminated line without its terminator.
func (rr *requestReader) readLine() ([]byte, error) {
	line, err := rr.r.ReadSlice('\n')
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
// to answer with an error, or an io error.
func (rr *requestReader) read() ([][]byte, error) {
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
	if cap(rr.buf) > keepBuf {
		rr.buf = make([]byte, 0, 4096)
	} else {
		rr.buf = rr.buf[:0]
	}
	rr.offs = rr.offs[:0]
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
			if _, err := rr.r.Discard(n); err != nil {
				return nil, eofToUnexpected(err)
			}
			if err := rr.expectCRLF(); err != nil {
				return nil, err
			}
			continue
		}
		start := len(rr.buf)
		rr.buf = grow(rr.buf, n+2)
		if _, err := io.ReadFull(rr.r, rr.buf[start:start+n+2]); err != nil {
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
	for i := 0; i < len(rr.offs); i += 2 {
		rr.args = append(rr.args, rr.buf[rr.offs[i]:rr.offs[i+1]:rr.offs[i+1]])
	}
	return rr.args, nil
}

func (rr *requestReader) expectCRLF() error {
	b, err := rr.r.Peek(2)
	if err != nil {
		return eofToUnexpected(err)
	}
	if b[0] != '\r' || b[1] != '\n' {
		return errMalformed
	}
	rr.r.Discard(2)
	return nil
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
