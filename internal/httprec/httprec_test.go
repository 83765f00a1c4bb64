package httprec_test

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/azaion/loader/internal/httprec"
)

func TestRecorderRecordsWhatWasAnswered(t *testing.T) {
	for _, c := range []struct {
		name    string
		handler func(w http.ResponseWriter)
		status  int
		bytes   int64
		started bool
	}{
		{"nothing written", func(http.ResponseWriter) {}, 200, 0, false},
		{"body only", func(w http.ResponseWriter) { io.WriteString(w, "hello") }, 200, 5, true},
		{"status then body", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusTeapot)
			io.WriteString(w, "short and stout")
		}, 418, 15, true},
		{"a second status is ignored", func(w http.ResponseWriter) {
			w.WriteHeader(http.StatusNotFound)
			w.WriteHeader(http.StatusOK)
		}, 404, 0, true},
	} {
		t.Run(c.name, func(t *testing.T) {
			under := httptest.NewRecorder()
			rec := httprec.New(under)
			c.handler(rec)
			if rec.Status() != c.status || rec.Bytes() != c.bytes || rec.Started() != c.started {
				t.Fatalf("status %d, bytes %d, started %v; want %d, %d, %v", rec.Status(), rec.Bytes(), rec.Started(), c.status, c.bytes, c.started)
			}
			if c.started && under.Code != c.status {
				t.Fatalf("the wrapped writer got %d, want %d", under.Code, c.status)
			}
			if int64(under.Body.Len()) != c.bytes {
				t.Fatalf("the wrapped writer got %d bytes, want %d", under.Body.Len(), c.bytes)
			}
		})
	}
}

// A failed write counts what went through and passes the error on.
func TestRecorderPassesWriteErrorsOn(t *testing.T) {
	boom := errors.New("connection reset")
	rec := httprec.New(&failAfter{ResponseWriter: httptest.NewRecorder(), n: 3, err: boom})
	n, err := rec.Write([]byte("abcdef"))
	if n != 3 || !errors.Is(err, boom) || rec.Bytes() != 3 {
		t.Fatalf("write: %d %v, counted %d; want 3, the error, 3", n, err, rec.Bytes())
	}
}

type failAfter struct {
	http.ResponseWriter
	n   int
	err error
}

func (f *failAfter) Write(b []byte) (int, error) {
	n, _ := f.ResponseWriter.Write(b[:min(len(b), f.n)])
	return n, f.err
}

// http.ResponseController reaches the connection through a Recorder: a flush sends the header
// at once, and a write deadline can be set.
func TestRecorderUnwrapsForResponseController(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rec := httprec.New(w)
		rc := http.NewResponseController(rec)
		if err := rc.SetWriteDeadline(time.Now().Add(time.Minute)); err != nil {
			t.Errorf("SetWriteDeadline through the Recorder: %v", err)
		}
		io.WriteString(rec, "first")
		if err := rc.Flush(); err != nil {
			t.Errorf("Flush through the Recorder: %v", err)
		}
		<-r.Context().Done() // hold the answer open until the client has read the flushed part
	}))
	defer srv.Close()
	resp, err := http.Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, len("first"))
	if _, err := io.ReadFull(resp.Body, b); err != nil || string(b) != "first" {
		t.Fatalf("flushed part: %q %v", b, err)
	}
	resp.Body.Close()
}
