package cdn

import (
	"context"
	"fmt"
	"io"
	"sync"
	"time"

	"github.com/minio/minio-go/v7"

	"github.com/azaion/loader/internal/streams"
)

// Upload stores size bytes of r as bucket/object, with meta as the object's user metadata
// (x-amz-meta-KEY: value). The bytes stream from r: an object up to 16 MiB in one PUT, a
// larger one in parts of at least 16 MiB sent one after the other, each read from r through
// an io.SectionReader, so memory does not grow with the object's size nor is a part buffered.
//
// It creates the bucket when it does not exist; if the credentials may not create it, the
// error is ErrDenied. A CDN that takes less than Options.StallMinBytes of the body in
// Options.StallTimeout (a stopped or stuck server), or does not answer within it, ends the
// upload with ErrUnavailable; the parts of a failed multipart upload are aborted within the
// same bound, so no call outlives the upload by more than it.
func (c *Client) Upload(ctx context.Context, bucket, object string, r io.ReaderAt, size int64, meta map[string]string) error {
	if size < 0 {
		return fmt.Errorf("upload %s/%s: invalid size %d", bucket, object, size)
	}
	w := newWatchdog(ctx, c.stall, c.stallMin)
	defer w.stop()
	if err := c.ensureBucket(w.ctx, bucket); err != nil {
		return c.fail(ctx, "upload", bucket, object, nil, "create bucket", w.stalled(err))
	}
	opts := minio.PutObjectOptions{ContentType: "application/octet-stream", UserMetadata: meta}
	core := minio.Core{Client: c.mc}
	var (
		stored int64
		err    error
	)
	if size <= partSize {
		var info minio.UploadInfo
		info, err = core.PutObject(w.ctx, bucket, object, w.reader(io.NewSectionReader(r, 0, size)), size, "", "", opts)
		stored = info.Size
	} else {
		stored, err = c.uploadParts(ctx, w, core, bucket, object, r, size, opts)
	}
	if err != nil {
		return c.fail(ctx, "upload", bucket, object, nil, "", w.stalled(err))
	}
	if stored != size {
		return c.fail(ctx, "upload", bucket, object, ErrUnavailable, "",
			fmt.Errorf("CDN stored %d bytes, sent %d", stored, size))
	}
	c.log.DebugContext(ctx, "cdn upload done", "endpoint", c.endpoint, "bucket", bucket,
		"object", object, "bytes", size)
	return nil
}

// uploadParts sends r as a multipart upload, one part at a time, and aborts it on failure.
func (c *Client) uploadParts(ctx context.Context, w *watchdog, core minio.Core, bucket, object string, r io.ReaderAt, size int64, opts minio.PutObjectOptions) (int64, error) {
	ps := int64(partSize)
	if size > partSize*maxParts {
		ps = (size + maxParts - 1) / maxParts
		ps = (ps + 1<<20 - 1) &^ (1<<20 - 1) // whole MiB
	}
	id, err := core.NewMultipartUpload(w.ctx, bucket, object, opts)
	if err != nil {
		return 0, err
	}
	var parts []minio.CompletePart
	for off, num := int64(0), 1; off < size; off, num = off+ps, num+1 {
		n := min(ps, size-off)
		p, err := core.PutObjectPart(w.ctx, bucket, object, id, num, w.reader(io.NewSectionReader(r, off, n)), n, minio.PutObjectPartOptions{})
		if err != nil {
			c.abort(ctx, bucket, object, id)
			return 0, err
		}
		parts = append(parts, minio.CompletePart{PartNumber: num, ETag: p.ETag})
	}
	if _, err := core.CompleteMultipartUpload(w.ctx, bucket, object, id, parts, opts); err != nil {
		c.abort(ctx, bucket, object, id)
		return 0, err
	}
	return size, nil
}

// abort drops the parts of a failed multipart upload, giving the CDN one stall timeout to
// answer: a CDN that is down keeps them until its own cleanup of stale uploads.
func (c *Client) abort(ctx context.Context, bucket, object, id string) {
	actx, cancel := context.WithTimeout(context.WithoutCancel(ctx), c.stall)
	defer cancel()
	if err := (minio.Core{Client: c.mc}).AbortMultipartUpload(actx, bucket, object, id); err != nil {
		c.log.WarnContext(ctx, "cdn: could not abort a failed multipart upload", "endpoint", c.endpoint,
			"bucket", bucket, "object", object, "err", c.redact(err.Error()))
	}
}

// watchdog cancels its context with errStalled when a stall window of d passes in which fewer
// than min bytes were read through its readers; reading min bytes starts a new window.
type watchdog struct {
	ctx    context.Context
	cancel context.CancelCauseFunc
	d      time.Duration
	min    int64

	mu       sync.Mutex
	timer    *time.Timer
	inWindow int64
}

func newWatchdog(ctx context.Context, d time.Duration, min int64) *watchdog {
	w := &watchdog{d: d, min: min}
	w.ctx, w.cancel = context.WithCancelCause(ctx)
	w.timer = time.AfterFunc(d, func() { w.cancel(errStalled) })
	return w
}

func (w *watchdog) stop() {
	w.timer.Stop()
	w.cancel(nil)
}

// progress counts n bytes moved.
func (w *watchdog) progress(n int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.inWindow += int64(n); w.inWindow >= w.min {
		w.inWindow = 0
		w.timer.Reset(w.d)
	}
}

// stalled replaces err by errStalled when the watchdog fired.
func (w *watchdog) stalled(err error) error { return stalled(w.ctx, err) }

// reader counts what is read from r as progress; it keeps r's Seek, which minio-go needs to
// send a part again after a failed attempt.
func (w *watchdog) reader(r *io.SectionReader) io.ReadSeeker {
	return struct {
		io.Reader
		io.Seeker
	}{streams.OnRead(r, w.progress), r}
}
