package cdn

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"time"

	"github.com/minio/minio-go/v7"
)

// Download streams bucket/object into w and returns the number of bytes written to w, also
// when it fails.
//
// A connection that breaks, or that delivers no byte for Options.StallTimeout, is resumed
// with a ranged request from the last byte written, at most Options.MaxResumes times, with a
// doubling pause between attempts that make no progress. Bytes are never requested twice, so
// w only ever sees each byte once, in order. The ranged requests must match the ETag of the
// first answer: if the object was replaced meanwhile the error is ErrChanged. The download
// succeeds only when exactly the object's size was written.
//
// Errors wrap ErrNotFound (no such object or bucket), ErrDenied (the credentials were
// refused), ErrUnavailable (unreachable, 5xx, resumes exhausted), the context's error when ctx
// ends, or w's error when a write fails.
func (c *Client) Download(ctx context.Context, bucket, object string, w io.Writer) (int64, error) {
	return c.DownloadFrom(ctx, bucket, object, w, Resume{})
}

// Resume is where a download continues that an earlier one (possibly an earlier process)
// left: Offset bytes of the object with ETag are already in hand.
type Resume struct {
	Offset int64
	ETag   string // required when Offset > 0: the ranged request asks If-Match this ETag
}

// DownloadFrom is Download of the bytes of bucket/object from from.Offset on: w gets byte
// from.Offset first. The first request is already ranged and carries If-Match from.ETag, so
// an object replaced since from was written fails with ErrChanged (the caller restarts from
// zero) rather than splicing two versions. With Offset 0, a non-empty ETag still asks for
// that version only. It returns the bytes written to w by this call.
func (c *Client) DownloadFrom(ctx context.Context, bucket, object string, w io.Writer, from Resume) (int64, error) {
	if from.Offset < 0 || (from.Offset > 0 && from.ETag == "") {
		return 0, fmt.Errorf("download %s/%s: a resume needs a non-negative offset and the ETag", bucket, object)
	}
	d := &download{c: c, bucket: bucket, object: object, w: w, size: -1,
		buf: make([]byte, copyBufferSize), written: from.Offset, start: from.Offset, etag: from.ETag, want: from.ETag}
	n, err := c.run(ctx, d)
	return n - from.Offset, err
}

// run makes the attempts of d; it returns the offset d reached.
func (c *Client) run(ctx context.Context, d *download) (int64, error) {
	bucket, object := d.bucket, d.object
	wait := c.backoff
	for resumes := 0; ; resumes++ {
		before := d.written
		err := d.attempt(ctx)
		if err == nil {
			c.log.DebugContext(ctx, "cdn download done", "endpoint", c.endpoint, "bucket", bucket,
				"object", object, "bytes", d.written, "resumes", resumes)
			return d.written, nil
		}
		if ctx.Err() != nil {
			return d.written, c.fail(ctx, "download", bucket, object, nil, "", err)
		}
		var we *writeError
		if errors.As(err, &we) {
			return d.written, fmt.Errorf("download %s/%s: write at byte %d: %w", bucket, object, d.written, we.err)
		}
		sentinel, retry := kind(err)
		if !retry {
			return d.written, c.fail(ctx, "download", bucket, object, sentinel, "", err)
		}
		if resumes >= c.maxResumes {
			return d.written, c.fail(ctx, "download", bucket, object, ErrUnavailable,
				fmt.Sprintf("gave up after %d resumes at byte %d of %s", resumes, d.written, d.sizeText()), err)
		}
		if d.written > before {
			wait = c.backoff // the link worked for a while: a fresh problem, a short pause
		}
		c.log.WarnContext(ctx, "cdn download interrupted, resuming", "endpoint", c.endpoint,
			"bucket", bucket, "object", object, "offset", d.written, "size", d.size,
			"resume", resumes+1, "maxResumes", c.maxResumes, "backoff", wait, "err", c.redact(err.Error()))
		if err := sleep(ctx, wait); err != nil {
			return d.written, c.fail(ctx, "download", bucket, object, nil, "", err)
		}
		wait = min(2*wait, max(maxBackoff, c.backoff))
	}
}

// download is the state of one Download across its attempts.
type download struct {
	c              *Client
	bucket, object string
	w              io.Writer
	buf            []byte

	written int64  // offset reached in the object: where the next attempt starts
	start   int64  // the offset the download started at (Resume.Offset)
	want    string // Resume.ETag: the version the caller asked for, if any
	size    int64  // the object's size, -1 until the first answer
	etag    string // the object's ETag: from the first answer, or given by Resume
}

// writeError marks a failure of the destination, which no resume can help.
type writeError struct{ err error }

func (e *writeError) Error() string { return e.err.Error() }

// errBadAnswer is an answer that does not fit the request (wrong range, wrong length); asking
// again would not help.
var errBadAnswer = errors.New("unexpected answer")

func (d *download) sizeText() string {
	if d.size < 0 {
		return "unknown"
	}
	return strconv.FormatInt(d.size, 10)
}

// attempt makes one GET, from d.written on, and copies its body into d.w. The attempt's
// context is cancelled with errStalled when a stall window (the stall timeout) ends before
// stallMin bytes arrived in it; the window's clock does not run while d.w is writing, so a slow
// destination is not taken for a stall.
func (d *download) attempt(ctx context.Context) error {
	if d.size >= 0 && d.written == d.size {
		return nil // the connection broke after the last byte
	}
	actx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	watchdog := time.AfterFunc(d.c.stall, func() { cancel(errStalled) })
	defer watchdog.Stop()
	left, started, inWindow := d.c.stall, time.Now(), int64(0) // the current stall window

	var opts minio.GetObjectOptions
	if d.written > 0 {
		if err := opts.SetRange(d.written, 0); err != nil {
			return err
		}
	}
	if d.etag != "" {
		if err := opts.SetMatchETag(d.etag); err != nil {
			return err
		}
	}
	body, info, header, err := d.c.get.GetObject(actx, d.bucket, d.object, opts)
	if err != nil {
		return stalled(actx, err)
	}
	defer body.Close()
	if err := d.accept(info, header); err != nil {
		return err
	}
	for {
		n, rerr := body.Read(d.buf)
		if n > 0 {
			watchdog.Stop()
			left -= time.Since(started)
			if d.written+int64(n) > d.size {
				return fmt.Errorf("%w: more than the object's %d bytes", errBadAnswer, d.size)
			}
			wn, werr := d.w.Write(d.buf[:n])
			d.written += int64(wn)
			if werr == nil && wn < n {
				werr = io.ErrShortWrite
			}
			if werr != nil {
				return &writeError{werr}
			}
			if inWindow += int64(n); inWindow >= d.c.stallMin {
				left, inWindow = d.c.stall, 0 // enough progress: a new window
			}
			started = time.Now()
			if left <= 0 {
				cancel(errStalled) // the window ran out while it trickled
			} else {
				watchdog.Reset(left)
			}
		}
		switch {
		case rerr == io.EOF && d.written < d.size:
			return fmt.Errorf("connection closed at byte %d of %d: %w", d.written, d.size, io.ErrUnexpectedEOF)
		case rerr == io.EOF:
			return nil
		case rerr != nil:
			return stalled(actx, rerr)
		}
	}
}

// accept checks the headers of an answer against what was asked and what earlier answers said.
func (d *download) accept(info minio.ObjectInfo, header http.Header) error {
	if d.written == 0 && d.start == 0 {
		// A whole object: take its size and ETag. Nothing was written yet, so a different
		// version than an earlier, failed, attempt announced does no harm, unless the caller
		// named the version it wants (Resume.ETag).
		if info.Size < 0 {
			return fmt.Errorf("%w: no Content-Length", errBadAnswer)
		}
		if d.want != "" && info.ETag != d.want {
			return fmt.Errorf("%w: ETag %q, asked for %q", ErrChanged, info.ETag, d.want)
		}
		d.size, d.etag = info.Size, info.ETag
		return nil
	}
	if d.etag != "" && info.ETag != d.etag {
		// A server that ignored If-Match.
		return fmt.Errorf("%w: ETag %q, started with %q", ErrChanged, info.ETag, d.etag)
	}
	start, total, ok := parseContentRange(header.Get("Content-Range"))
	if !ok {
		return fmt.Errorf("%w: asked for bytes from %d, got Content-Range %q", errBadAnswer, d.written, header.Get("Content-Range"))
	}
	if d.size < 0 {
		d.size = total // a download resumed from an earlier one: the first answer tells the size
	}
	if total != d.size {
		return fmt.Errorf("%w: size %d, started with %d", ErrChanged, total, d.size)
	}
	if start != d.written || info.Size != d.size-d.written {
		return fmt.Errorf("%w: asked for bytes from %d, got %d bytes from %d", errBadAnswer, d.written, info.Size, start)
	}
	return nil
}

// parseContentRange reads "bytes START-END/TOTAL".
func parseContentRange(s string) (start, total int64, ok bool) {
	rest, found := strings.CutPrefix(s, "bytes ")
	if !found {
		return 0, 0, false
	}
	span, totalText, found := strings.Cut(rest, "/")
	if !found {
		return 0, 0, false
	}
	startText, _, found := strings.Cut(span, "-")
	if !found {
		return 0, 0, false
	}
	start, err1 := strconv.ParseInt(startText, 10, 64)
	total, err2 := strconv.ParseInt(totalText, 10, 64)
	if err1 != nil || err2 != nil || start < 0 || total < 0 {
		return 0, 0, false
	}
	return start, total, true
}

// stalled replaces err by errStalled when the watchdog cancelled the attempt.
func stalled(actx context.Context, err error) error {
	if errors.Is(context.Cause(actx), errStalled) {
		return fmt.Errorf("%w (%v)", errStalled, err)
	}
	return err
}

func sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}
