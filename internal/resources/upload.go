package resources

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"

	"github.com/azaion/loader/internal/cache"
	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/streams"
)

// Upload encrypts r with the resource key and stores it split: the big part first in the
// cache (a temp file), then from that file on the CDN, then the small part on the Resource
// API, and only then is the cached part committed. Memory does not grow with the resource's
// size nor with the number of uploads: the CDN reads the big part from the file with its size
// known (no part buffer), and at most Options.MaxUploads uploads send to the CDN at once; the
// others wait, as long as their request lasts.
//
// The CDN object records the SHA-256 of its small part (x-amz-meta-small-sha256), so a device
// never decrypts the new big part behind an older small part should the last step fail.
func (s *Service) Upload(ctx context.Context, folder, name string, r io.Reader) error {
	if err := validate(folder, name); err != nil {
		return err
	}
	st, err := s.store(true)
	if err != nil {
		return err
	}
	// The upload's own reader failing (a client that went away) is not the cache's fault:
	// remember its error to report it as such.
	src := streams.RecordErr(r)
	enc, err := security.NewEncryptReader(src, s.key)
	if err != nil {
		return err
	}
	// The split point needs the ciphertext's length only while the ciphertext is short:
	// past threshold bytes it is always SplitMax. Reading that much up front is enough.
	threshold := int(float64(s.opts.SplitMax)/s.opts.SplitRatio) + security.BlockSize
	head := make([]byte, threshold)
	got, err := io.ReadFull(enc, head)
	switch {
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		head = head[:got]
	case err != nil:
		return fmt.Errorf("read upload: %w", err)
	}
	n := s.splitPoint(len(head), got == threshold)
	small := head[:n]
	sum := cache.SumHex(small)

	t, err := s.cache.NewTemp(folder, name)
	if err != nil {
		return noSpace(err)
	}
	_, err = io.Copy(t, io.MultiReader(bytes.NewReader(head[n:]), enc))
	if err == nil {
		err = t.Sync()
	}
	switch {
	case src.Err() != nil:
		t.Abort()
		return fmt.Errorf("read upload: %w", src.Err())
	case err != nil: // e.g. a full disk: 507 with nothing sent anywhere
		t.Abort()
		return noSpace(err)
	}

	select {
	case s.uploads <- struct{}{}:
	case <-ctx.Done():
		t.Abort()
		return fmt.Errorf("upload %s/%s: waiting for a turn to send to the CDN: %w", folder, name, ctx.Err())
	}
	err = st.Upload(ctx, folder, name+".big", t.ReaderAt(), t.Size(), map[string]string{cdn.MetaSmallSHA256: sum})
	<-s.uploads
	if err != nil {
		t.Abort()
		return fmt.Errorf("upload big part of %s/%s: %w", folder, name, err)
	}
	if err := s.api.UploadResource(ctx, folder, name+".small", bytes.NewReader(small)); err != nil {
		t.Abort()
		// SPEC §5 puts the big part first, so the CDN now holds the new one while the API may
		// keep an older small part. Devices will not mix them (the object names its small
		// part), they answer 502 until an upload of this resource succeeds. Say so loudly.
		s.log.Error("upload left the CDN's big part newer than the Resource API's small part; devices without it cached answer 502 until the resource is uploaded again",
			"folder", folder, "name", name, "err", err)
		return fmt.Errorf("upload small part of %s/%s: %w", folder, name, err)
	}
	return noSpace(t.Commit(sum))
}

// splitPoint is SPEC §5's n = min(SplitMax, floor(SplitRatio * len(c))); long means the
// ciphertext is at least as long as the head that was read.
func (s *Service) splitPoint(headLen int, long bool) int {
	if long {
		return s.opts.SplitMax
	}
	return min(s.opts.SplitMax, int(s.opts.SplitRatio*float64(headLen)))
}
