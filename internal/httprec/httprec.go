// Package httprec records what an HTTP handler answered, the status and the size of the body,
// for request logs and metrics. A Recorder passes everything through to the ResponseWriter it
// wraps; other behaviour (noticing a client that went away, say) composes by wrapping that
// ResponseWriter, or the Recorder.
package httprec

import "net/http"

// Recorder is an http.ResponseWriter that remembers the status and counts the body bytes
// written through it. It unwraps for http.ResponseController (flushes, deadlines).
type Recorder struct {
	http.ResponseWriter
	status int // 0 until the header is written
	bytes  int64
}

// New returns a Recorder writing to w.
func New(w http.ResponseWriter) *Recorder { return &Recorder{ResponseWriter: w} }

func (r *Recorder) WriteHeader(status int) {
	if r.status == 0 {
		r.status = status
	}
	r.ResponseWriter.WriteHeader(status)
}

func (r *Recorder) Write(b []byte) (int, error) {
	if r.status == 0 {
		r.status = http.StatusOK
	}
	n, err := r.ResponseWriter.Write(b)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection's writer.
func (r *Recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// Started reports whether the header has been written: the status can no longer change.
func (r *Recorder) Started() bool { return r.status != 0 }

// Status is the status of the answer: the first one written, or 200, which net/http sends for
// a handler that writes nothing.
func (r *Recorder) Status() int {
	if r.status == 0 {
		return http.StatusOK
	}
	return r.status
}

// Bytes is how many body bytes were written.
func (r *Recorder) Bytes() int64 { return r.bytes }
