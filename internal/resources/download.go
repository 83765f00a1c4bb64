package resources

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/azaion/loader/internal/cache"
	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/security"
)

// Open downloads and decrypts folder/name. The returned Resource knows its exact size before
// the first byte is read; the caller must Close it.
func (s *Service) Open(ctx context.Context, folder, name string) (*Resource, error) {
	if err := validate(folder, name); err != nil {
		return nil, err
	}
	small, err := s.api.GetResource(ctx, folder, name+".small")
	if err != nil {
		return nil, fmt.Errorf("small part of %s/%s: %w", folder, name, err)
	}
	want := need{ctx: ctx, k: cache.Key{Folder: folder, Name: name}, small: small, sum: cache.SumHex(small), load: true}
	p, fromCache, err := s.bigPart(want)
	if err != nil {
		return nil, err
	}
	size, err := s.plaintextSize(small, p)
	if err != nil && fromCache {
		// A cached big part that does not decrypt is stale or damaged: fetch it once more.
		p.Close()
		s.log.Warn("cached big part does not decrypt, fetching it again", "folder", folder, "name", name, "err", err)
		want.bad = p
		if p, _, err = s.bigPart(want); err != nil {
			return nil, err
		}
		size, err = s.plaintextSize(small, p)
	}
	if err != nil {
		p.Close()
		return nil, fmt.Errorf("decrypt %s/%s: %w", folder, name, err)
	}
	body := security.NewDecrypter(io.MultiReader(bytes.NewReader(small), p), s.key)
	return &Resource{Size: size, ReadCloser: &resourceReader{r: body, c: p, obs: s.obs}}, nil
}

func (s *Service) plaintextSize(small []byte, big *cache.Part) (int64, error) {
	ra := concatReaderAt{head: small, tail: big}
	return security.PlaintextSize(ra, int64(len(small))+big.Size, s.key)
}

// need is what a caller wants of the cache: the big part of k that belongs to small.
type need struct {
	ctx   context.Context
	k     cache.Key
	small []byte
	sum   string      // hex SHA-256 of small
	bad   *cache.Part // a cached part found unusable: it does not count, even if paired
	load  bool        // a /load waits (prefetch yields to it; offline fallback allowed)
}

// usable reports whether p is the part n wants: paired with n's small part, not the bad one,
// and its bytes match the record (verified once per process and file version).
func (s *Service) usable(n need, p *cache.Part) bool {
	if !p.PairedWith(n.sum) || p.SameFile(n.bad) {
		return false
	}
	if err := s.cache.Verify(p); err != nil {
		s.log.Warn("cached big part is damaged, fetching it again", "folder", n.k.Folder, "name", n.k.Name, "err", err)
		return false
	}
	return true
}

// bigPart opens the cached big part n wants, fetching it from the CDN when it is missing,
// belongs to another small part, is damaged, or is n.bad. fromCache tells whether the part
// was already there. With the CDN unreachable, a /load may get a part without a pairing
// record (offline first, SPEC §11).
func (s *Service) bigPart(n need) (p *cache.Part, fromCache bool, err error) {
	if n.bad == nil {
		if p, err := s.cache.Open(n.k.Folder, n.k.Name); err == nil {
			if s.usable(n, p) {
				s.obs.CacheHit()
				return p, true, nil
			}
			if p.PairedWith(n.sum) {
				n.bad = p // damaged: a download that ends with this same file does not help
			}
			p.Close()
		}
	}
	s.obs.CacheMiss()
	// Everyone asking for this part now shares one download, owned by the service rather
	// than by the request that started it, so a client that goes away does not fail the
	// others. A caller that joined the download of another version (the resource was
	// re-uploaded meanwhile) finds the result unpaired and starts one more.
	for range 2 {
		err := s.fetch(n, func() bool { return s.holds(n) })
		if err != nil {
			if n.load && offline(err) {
				if p := s.offlinePart(n, err); p != nil {
					return p, false, nil
				}
			}
			return nil, false, err
		}
		if p, err := s.cache.Open(n.k.Folder, n.k.Name); err == nil {
			if s.usable(n, p) {
				return p, false, nil
			}
			p.Close()
		}
	}
	return nil, false, fmt.Errorf("big part of %s: %w: the resource changed while it was being fetched",
		n.k, cdn.ErrUnavailable)
}

// holds reports whether the cache already has what n wants (another download filled it since
// n looked).
func (s *Service) holds(n need) bool {
	p, err := s.cache.Open(n.k.Folder, n.k.Name)
	if err != nil {
		return false
	}
	defer p.Close()
	return s.usable(n, p)
}

// offline reports whether err means the CDN cannot be reached (not: refused, missing, changed
// or inconsistent).
func offline(err error) bool {
	return errors.Is(err, cdn.ErrUnavailable) && !errors.Is(err, cdn.ErrChanged)
}

// offlinePart is the cached big part of n.k without a pairing record (put on the device at
// provisioning), if there is one and its last block decrypts behind n's small part. A part
// whose record names another small part, or that fails its SHA-256, is never used this way.
func (s *Service) offlinePart(n need, cause error) *cache.Part {
	p, err := s.cache.Open(n.k.Folder, n.k.Name)
	if err != nil {
		return nil
	}
	if p.Record != nil {
		p.Close()
		return nil
	}
	if _, err := s.plaintextSize(n.small, p); err != nil {
		p.Close()
		return nil
	}
	s.log.Warn("CDN unreachable: serving a cached big part that has no pairing record (its last block decrypts)",
		"folder", n.k.Folder, "name", n.k.Name, "bytes", p.Size, "cdnError", cause)
	return p
}

// download brings the big part of n.k from the CDN into the cache, continuing a partial
// download an earlier run left when it is of the same object (same ETag); the object's
// metadata must name n's small part when it names one.
func (s *Service) download(ctx context.Context, fl *flight, n need) error {
	st, err := s.store(false)
	if err != nil {
		return err
	}
	object := n.k.Name + ".big"
	obj, err := s.object(ctx, st, n)
	if err != nil {
		return err
	}
	p, err := s.cache.OpenPartial(n.k.Folder, n.k.Name)
	if err != nil {
		return noSpace(err)
	}
	// After a Commit that got as far as finishing the partial, this Close does nothing; a
	// Commit that failed before (a short download, an fsync that failed) leaves it to Close.
	keep := true
	defer func() { p.Close(keep) }()
	w := &throttled{ctx: ctx, s: s, fl: fl, w: p}
	for restarted := false; ; restarted = true {
		if err := p.Begin(obj.Size, obj.ETag); err != nil {
			keep = false
			return noSpace(err)
		}
		if err := s.cache.CheckSpace(n.k.Folder, n.k.Name, obj.Size-p.Offset()); err != nil {
			return err
		}
		if p.Offset() > 0 {
			s.log.Info("resuming a partial download", "folder", n.k.Folder, "name", n.k.Name,
				"offset", p.Offset(), "size", obj.Size)
		}
		if p.Offset() == obj.Size {
			break // complete before the restart, not yet renamed into place
		}
		got, err := st.DownloadFrom(ctx, n.k.Folder, object, w, cdn.Resume{Offset: p.Offset(), ETag: obj.ETag})
		s.obs.CDNDownloaded(got)
		if errors.Is(err, cdn.ErrChanged) && !restarted {
			// Replaced since the partial was written or since the Stat (412): from zero,
			// once, with the object as it is now.
			s.log.Info("the CDN object changed: downloading it from the start", "folder", n.k.Folder, "name", n.k.Name)
			if err := p.Reset(); err != nil {
				keep = false
				return noSpace(err)
			}
			if obj, err = s.object(ctx, st, n); err != nil {
				return err
			}
			continue
		}
		if err != nil {
			if errors.Is(err, cache.ErrNoSpace) {
				keep = false
				return noSpace(err)
			}
			return fmt.Errorf("big part of %s: %w", n.k, err)
		}
		break
	}
	if err := p.Commit(n.sum); err != nil {
		return noSpace(err)
	}
	return nil
}

// object asks the CDN for n.k's big part: its size, ETag, and whether it belongs to n's
// small part.
func (s *Service) object(ctx context.Context, st Store, n need) (cdn.Object, error) {
	obj, err := st.Stat(ctx, n.k.Folder, n.k.Name+".big")
	if err != nil {
		return cdn.Object{}, fmt.Errorf("big part of %s: %w", n.k, err)
	}
	if obj.SmallSHA256 != "" && obj.SmallSHA256 != n.sum {
		s.log.Warn("the CDN's big part belongs to another small part than the Resource API's: not serving a mix",
			"folder", n.k.Folder, "name", n.k.Name)
		return cdn.Object{}, fmt.Errorf("%s: %w", n.k, ErrInconsistent)
	}
	return obj, nil
}

// noSpace returns the *cache.SpaceError in err as it is, so the answer's detail starts with
// what a person must know ("not enough disk space …"); other errors stay as they are.
func noSpace(err error) error {
	var se *cache.SpaceError
	if errors.As(err, &se) {
		return se
	}
	return err
}

// concatReaderAt reads head followed by tail as one io.ReaderAt.
type concatReaderAt struct {
	head []byte
	tail io.ReaderAt
}

func (c concatReaderAt) ReadAt(p []byte, off int64) (int, error) {
	n := 0
	if off < int64(len(c.head)) {
		n = copy(p, c.head[off:])
		if n == len(p) {
			return n, nil
		}
		off = int64(len(c.head))
	}
	m, err := c.tail.ReadAt(p[n:], off-int64(len(c.head)))
	return n + m, err
}

// resourceReader streams plaintext and closes the cached file when done.
type resourceReader struct {
	r      io.Reader
	c      io.Closer
	obs    Observer
	closed bool
}

func (r *resourceReader) Read(p []byte) (int, error) {
	if r.closed {
		// The decrypter may still hold plaintext it read ahead: a closed resource hands out
		// none of it.
		return 0, os.ErrClosed
	}
	n, err := r.r.Read(p)
	r.obs.Served(int64(n))
	return n, err
}

func (r *resourceReader) Close() error {
	if r.closed {
		return nil
	}
	r.closed = true
	return r.c.Close()
}
