package httpapi

import (
	"net/http"
	"time"
)

// cacheResponse is GET /cache (SPEC §11).
type cacheResponse struct {
	Parts []cachePart `json:"parts"`
	Bytes int64       `json:"bytes"` // on disk
	Max   *int64      `json:"max"`   // MODEL_CACHE_MAX, null for none
}

type cachePart struct {
	Folder   string  `json:"folder"`
	Name     string  `json:"name"`
	Bytes    int64   `json:"bytes"`    // on disk
	Size     *int64  `json:"size"`     // of the whole part; null while not known
	State    string  `json:"state"`    // cached, downloading, partial, queued
	LastUsed *string `json:"lastUsed"` // RFC 3339: last /load or write; null when queued
}

func (s *Server) cacheStatus(w http.ResponseWriter, r *http.Request) error {
	st, err := s.resources.CacheStatus()
	if err != nil {
		return err
	}
	resp := cacheResponse{Parts: make([]cachePart, 0, len(st.Parts)), Bytes: st.Bytes}
	if st.Max > 0 {
		resp.Max = &st.Max
	}
	for _, p := range st.Parts {
		cp := cachePart{Folder: p.Folder, Name: p.Name, Bytes: p.Bytes, State: string(p.State)}
		if p.Size >= 0 {
			cp.Size = &p.Size
		}
		if !p.LastUsed.IsZero() {
			t := p.LastUsed.UTC().Format(time.RFC3339)
			cp.LastUsed = &t
		}
		resp.Parts = append(resp.Parts, cp)
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}
