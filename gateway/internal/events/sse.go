package events

import (
	"bytes"
	"io"
	"strconv"
	"strings"
)

// Writer writes a Server-Sent Events stream (the WHATWG HTML "event stream" format):
// each event gets the next id (1, 2, ...), and everything written is flushed at once,
// since a proxy or the ResponseWriter's buffer would otherwise hold an event back.
type Writer struct {
	w     io.Writer
	flush func() error
	id    int64
	buf   bytes.Buffer
}

// NewWriter writes to w and calls flush after each event or comment (nil: none).
func NewWriter(w io.Writer, flush func() error) *Writer {
	if flush == nil {
		flush = func() error { return nil }
	}
	return &Writer{w: w, flush: flush}
}

// LastID is the id of the last event written (0 before the first).
func (s *Writer) LastID() int64 { return s.id }

// Event writes one event named name (empty: the default "message") with data as its
// payload. Each line of data becomes its own "data:" field (a payload may hold
// newlines; the client joins them back with "\n"); CR, LF and CRLF all end a line.
func (s *Writer) Event(name string, data []byte) error {
	s.id++
	s.buf.Reset()
	if name != "" {
		s.buf.WriteString("event: ")
		s.buf.WriteString(oneLine(name))
		s.buf.WriteByte('\n')
	}
	s.buf.WriteString("id: ")
	s.buf.WriteString(strconv.FormatInt(s.id, 10))
	s.buf.WriteByte('\n')
	for _, line := range lines(data) {
		s.buf.WriteString("data: ")
		s.buf.Write(line)
		s.buf.WriteByte('\n')
	}
	s.buf.WriteByte('\n')
	return s.send()
}

// Comment writes a comment line (": text"), which clients ignore: a keepalive that
// keeps idle proxies from closing the connection and finds a client that went away.
func (s *Writer) Comment(text string) error {
	s.buf.Reset()
	s.buf.WriteString(": ")
	s.buf.WriteString(oneLine(text))
	s.buf.WriteString("\n\n")
	return s.send()
}

func (s *Writer) send() error {
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		return err
	}
	return s.flush()
}

// lines splits data at CRLF, LF or CR; empty data is one empty line (an event with
// an empty payload still needs its "data:" field to be dispatched).
func lines(data []byte) [][]byte {
	var out [][]byte
	for {
		i := bytes.IndexAny(data, "\r\n")
		if i < 0 {
			return append(out, data)
		}
		out = append(out, data[:i])
		if data[i] == '\r' && i+1 < len(data) && data[i+1] == '\n' {
			i++
		}
		data = data[i+1:]
	}
}

// oneLine keeps a field value from starting another field.
func oneLine(s string) string {
	if i := strings.IndexAny(s, "\r\n"); i >= 0 {
		return s[:i]
	}
	return s
}
