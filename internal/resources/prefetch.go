package resources

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/azaion/loader/internal/cache"
	"github.com/azaion/loader/internal/resourceapi"
)

// target is one PREFETCH entry: folder/name, or folder/* for every resource of the folder.
type target struct{ folder, name string }

const wholeFolder = "*"

// parseTargets reads PREFETCH entries ("folder/name", "folder/*").
func parseTargets(entries []string) ([]target, error) {
	var out []target
	for _, e := range entries {
		folder, name, ok := strings.Cut(e, "/")
		if !ok {
			return nil, fmt.Errorf("%w: PREFETCH entry %q is not folder/name or folder/*", ErrInvalidName, e)
		}
		check := name
		if name == wholeFolder {
			check = "x"
		}
		if err := validate(folder, check); err != nil {
			return nil, fmt.Errorf("PREFETCH entry %q: %w", e, err)
		}
		out = append(out, target{folder, name})
	}
	return out, nil
}

// pinned reports whether a PREFETCH entry names folder/name: eviction keeps those parts.
func (s *Service) pinned(folder, name string) bool {
	return slices.ContainsFunc(s.targets, func(t target) bool {
		return t.folder == folder && (t.name == wholeFolder || t.name == name)
	})
}

// LoggedIn tells prefetch that the loader has logged in: it runs a round now (SPEC §11).
func (s *Service) LoggedIn() {
	if len(s.targets) == 0 {
		return
	}
	select {
	case s.pf.kick <- struct{}{}:
	default: // a round is due already
	}
}

// prefetcher brings the PREFETCH parts into the cache in the background: after each login and
// every interval after that, one part at a time, yielding to /load.
type prefetcher struct {
	s    *Service
	kick chan struct{}

	mu    sync.Mutex
	queue []cache.Key // parts of the current round not done yet, for GET /cache
}

func newPrefetcher(s *Service) *prefetcher {
	return &prefetcher{s: s, kick: make(chan struct{}, 1)}
}

// run does rounds until ctx ends: at each login, and every interval after the last login.
func (pf *prefetcher) run(ctx context.Context) {
	if len(pf.s.targets) == 0 {
		return
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-pf.kick:
		case <-timer.C:
		}
		timer.Reset(pf.s.opts.PrefetchInterval)
		pf.round(ctx)
	}
}

// round brings every part PREFETCH names into the cache, one after the other.
func (pf *prefetcher) round(ctx context.Context) {
	s := pf.s
	if _, err := s.api.CDN(); err != nil {
		s.log.Info("prefetch waits for a login", "err", err)
		return
	}
	keys := pf.expand(ctx)
	pf.mu.Lock()
	pf.queue = keys
	pf.mu.Unlock()
	start, fetched := time.Now(), 0
	for len(keys) > 0 && ctx.Err() == nil {
		k := keys[0]
		did, err := s.prefetch(ctx, k)
		switch {
		case errors.Is(err, cache.ErrNoSpace):
			s.log.Warn("prefetch skips a part: "+err.Error(), "folder", k.Folder, "name", k.Name)
		case err != nil && ctx.Err() == nil:
			s.log.Warn("prefetch of a part failed", "folder", k.Folder, "name", k.Name, "err", err)
		case did:
			fetched++
		}
		keys = keys[1:]
		pf.mu.Lock()
		pf.queue = keys
		pf.mu.Unlock()
	}
	s.cache.SweepPartials()
	s.log.Info("prefetch round done", "parts", fetched, "duration", time.Since(start).Round(time.Millisecond))
}

// expand lists the parts the targets name; a folder's listing names resource NAME by its
// small part NAME.small (SPEC §3).
func (pf *prefetcher) expand(ctx context.Context) []cache.Key {
	s := pf.s
	var keys []cache.Key
	for _, t := range s.targets {
		if t.name != wholeFolder {
			keys = append(keys, cache.Key{Folder: t.folder, Name: t.name})
			continue
		}
		names, err := s.api.ListResources(ctx, t.folder)
		if err != nil {
			s.log.Warn("prefetch cannot list a folder", "folder", t.folder, "err", err)
			continue
		}
		for _, n := range names {
			if name, ok := strings.CutSuffix(n, ".small"); ok && validate(t.folder, name) == nil {
				keys = append(keys, cache.Key{Folder: t.folder, Name: name})
			}
		}
	}
	slices.SortFunc(keys, func(a, b cache.Key) int { return strings.Compare(a.String(), b.String()) })
	return slices.Compact(keys)
}

// queued returns the parts of the current round that prefetch has not reached yet.
func (pf *prefetcher) queued() []cache.Key {
	pf.mu.Lock()
	defer pf.mu.Unlock()
	return slices.Clone(pf.queue)
}

// prefetch makes sure the big part of k that belongs to its current small part is in the
// cache; did is true when it had to be downloaded.
func (s *Service) prefetch(ctx context.Context, k cache.Key) (did bool, err error) {
	small, err := s.api.GetResource(ctx, k.Folder, k.Name+".small")
	if err != nil {
		if errors.Is(err, resourceapi.ErrNotFound) {
			return false, fmt.Errorf("%s is unknown to the Resource API: %w", k, err)
		}
		return false, err
	}
	p, fromCache, err := s.bigPart(need{ctx: ctx, k: k, small: small, sum: cache.SumHex(small)})
	if err != nil {
		return false, err
	}
	p.Close()
	if !fromCache {
		s.log.Info("prefetched a part", "folder", k.Folder, "name", k.Name, "bytes", p.Size)
	}
	return !fromCache, nil
}
