package events

import (
	"bytes"
	"errors"
	"testing"
)

func TestEventFormatAndIDs(t *testing.T) {
	var out bytes.Buffer
	flushes := 0
	w := NewWriter(&out, func() error { flushes++; return nil })
	if err := w.Event("analysis", []byte(`{"status":"ANALYSIS_STATUS_PENDING"}`)); err != nil {
		t.Fatal(err)
	}
	if err := w.Comment("keepalive"); err != nil {
		t.Fatal(err)
	}
	if err := w.Event("analysis", []byte(`{}`)); err != nil {
		t.Fatal(err)
	}
	want := "event: analysis\nid: 1\ndata: {\"status\":\"ANALYSIS_STATUS_PENDING\"}\n\n" +
		": keepalive\n\n" +
		"event: analysis\nid: 2\ndata: {}\n\n"
	if out.String() != want {
		t.Fatalf("got %q\nwant %q", out.String(), want)
	}
	if flushes != 3 {
		t.Fatalf("flushed %d times, want once per event or comment (3)", flushes)
	}
	if w.LastID() != 2 {
		t.Fatalf("LastID = %d", w.LastID())
	}
}

func TestMultilineDataBecomesSeveralDataFields(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out, nil)
	if err := w.Event("", []byte("a\nb\r\nc\rd")); err != nil {
		t.Fatal(err)
	}
	want := "id: 1\ndata: a\ndata: b\ndata: c\ndata: d\n\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

func TestEmptyDataStillDispatches(t *testing.T) {
	var out bytes.Buffer
	if err := NewWriter(&out, nil).Event("ping", nil); err != nil {
		t.Fatal(err)
	}
	if out.String() != "event: ping\nid: 1\ndata: \n\n" {
		t.Fatalf("got %q", out.String())
	}
}

func TestFieldValuesCannotInjectFields(t *testing.T) {
	var out bytes.Buffer
	w := NewWriter(&out, nil)
	_ = w.Event("analysis\ndata: forged", []byte("x"))
	_ = w.Comment("ok\nevent: forged")
	want := "event: analysis\nid: 1\ndata: x\n\n: ok\n\n"
	if out.String() != want {
		t.Fatalf("got %q, want %q", out.String(), want)
	}
}

type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("gone") }

func TestWriteAndFlushErrorsAreReturned(t *testing.T) {
	if err := NewWriter(failingWriter{}, nil).Event("analysis", []byte("x")); err == nil {
		t.Fatal("write error swallowed")
	}
	var out bytes.Buffer
	boom := errors.New("flush")
	if err := NewWriter(&out, func() error { return boom }).Comment("k"); !errors.Is(err, boom) {
		t.Fatalf("flush error: %v", err)
	}
}
