package resources

import (
	"time"

	"github.com/azaion/loader/internal/cache"
)

// CachePart is one part in GET /cache.
type CachePart struct {
	Folder, Name string
	Bytes        int64       // on disk
	Size         int64       // of the whole part; -1 when not known yet
	State        cache.State // cached, downloading, partial or queued
	LastUsed     time.Time   // zero when never used
}

// CacheStatus is GET /cache: every part on disk and every part prefetch has still to fetch.
type CacheStatus struct {
	Parts []CachePart
	Bytes int64 // on disk, all parts together
	Max   int64 // MODEL_CACHE_MAX; 0 for none
}

// CacheStatus lists the model cache (SPEC §11).
func (s *Service) CacheStatus() (CacheStatus, error) {
	entries, err := s.cache.List()
	if err != nil {
		return CacheStatus{}, err
	}
	st := CacheStatus{Max: s.opts.CacheMax, Parts: []CachePart{}}
	onDisk := make(map[cache.Key]bool, len(entries))
	for _, e := range entries {
		onDisk[e.Key] = true
		st.Bytes += e.Bytes
		st.Parts = append(st.Parts, CachePart{Folder: e.Folder, Name: e.Name, Bytes: e.Bytes, Size: e.Size, State: e.State, LastUsed: e.LastUsed})
	}
	for _, k := range s.pf.queued() {
		if !onDisk[k] {
			st.Parts = append(st.Parts, CachePart{Folder: k.Folder, Name: k.Name, Size: -1, State: cache.StateQueued})
		}
	}
	return st, nil
}
