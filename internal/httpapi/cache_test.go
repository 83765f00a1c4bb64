package httpapi_test

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/azaion/loader/internal/resources"
)

// TestCacheStatus: GET /cache answers SPEC §11's shape, with null for an unknown size, a part
// never used and a cache without a cap.
func TestCacheStatus(t *testing.T) {
	e := newEnv(t, nil)
	used := time.Date(2025, 3, 4, 5, 6, 7, 0, time.UTC)
	e.res.cache = func() (resources.CacheStatus, error) {
		return resources.CacheStatus{Bytes: 1500, Parts: []resources.CachePart{
			{Folder: "models", Name: "a.bin", Bytes: 1000, Size: 1000, State: "cached", LastUsed: used},
			{Folder: "models", Name: "b.bin", Bytes: 500, Size: 2000, State: "partial"},
			{Folder: "models", Name: "c.bin", Size: -1, State: "queued"},
		}}, nil
	}
	a := e.do(t, "GET", "/cache", "", nil)
	if a.status != 200 {
		t.Fatalf("GET /cache: %d %s", a.status, a.body)
	}
	var got map[string]any
	if err := json.Unmarshal(a.body, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"bytes": 1500.0,
		"max":   nil,
		"parts": []any{
			map[string]any{"folder": "models", "name": "a.bin", "bytes": 1000.0, "size": 1000.0, "state": "cached", "lastUsed": "2025-03-04T05:06:07Z"},
			map[string]any{"folder": "models", "name": "b.bin", "bytes": 500.0, "size": 2000.0, "state": "partial", "lastUsed": nil},
			map[string]any{"folder": "models", "name": "c.bin", "bytes": 0.0, "size": nil, "state": "queued", "lastUsed": nil},
		},
	}
	gb, _ := json.Marshal(got)
	wb, _ := json.Marshal(want)
	if string(gb) != string(wb) {
		t.Errorf("GET /cache\n got %s\nwant %s", gb, wb)
	}

	e.res.cache = func() (resources.CacheStatus, error) { return resources.CacheStatus{Max: 5 << 20}, nil }
	a = e.do(t, "GET", "/cache", "", nil)
	if string(a.body) != `{"parts":[],"bytes":0,"max":5242880}`+"\n" {
		t.Errorf("an empty cache with a cap: %s", a.body)
	}
}
