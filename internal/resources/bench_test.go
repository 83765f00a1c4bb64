package resources_test

import (
	"bytes"
	"context"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/azaion/loader/internal/cdn"
	"github.com/azaion/loader/internal/resourceapi"
	"github.com/azaion/loader/internal/resources"
)

// memAPI is a Resource API in memory: it keeps uploaded small parts, hands them back and
// serves empty CDN settings.
type memAPI struct {
	mu    sync.Mutex
	files map[string][]byte
}

func (a *memAPI) GetResource(_ context.Context, folder, name string) ([]byte, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	b, ok := a.files[folder+"/"+name]
	if !ok {
		return nil, resourceapi.ErrNotFound
	}
	return b, nil
}

func (a *memAPI) UploadResource(_ context.Context, folder, name string, r io.ReadSeeker) error {
	b, err := io.ReadAll(r)
	if err != nil {
		return err
	}
	a.mu.Lock()
	defer a.mu.Unlock()
	a.files[folder+"/"+name] = b
	return nil
}

func (a *memAPI) ListResources(_ context.Context, folder string) ([]string, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	names := []string{}
	for k := range a.files {
		if name, ok := strings.CutPrefix(k, folder+"/"); ok {
			names = append(names, name)
		}
	}
	slices.Sort(names)
	return names, nil
}

func (a *memAPI) CDN() (resourceapi.CDNSettings, error) {
	return resourceapi.CDNSettings{Host: "http://cdn.invalid"}, nil
}

// discardStore takes uploads and has nothing to download: the benchmark reads from the cache.
type discardStore struct{}

func (discardStore) Stat(context.Context, string, string) (cdn.Object, error) {
	return cdn.Object{}, cdn.ErrNotFound
}

func (discardStore) DownloadFrom(context.Context, string, string, io.Writer, cdn.Resume) (int64, error) {
	return 0, cdn.ErrNotFound
}

func (discardStore) Upload(_ context.Context, _, _ string, r io.ReaderAt, size int64, _ map[string]string) error {
	_, err := io.Copy(io.Discard, io.NewSectionReader(r, 0, size))
	return err
}

// BenchmarkOpenCached opens and reads resources whose big part is cached, and reports the
// figure openssl enc -d reaches on the same ciphertext in the same run (openssl-MB/s) and the
// ratio of the two (x-openssl: above 1 is faster than openssl).
func BenchmarkOpenCached(b *testing.B) {
	for _, size := range []int64{16 << 20, 256 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			api := &memAPI{files: map[string][]byte{}}
			cache := b.TempDir()
			s, err := resources.New(api, resources.Options{
				CacheDir: cache,
				NewStore: func(cdn.Config) (resources.Store, error) { return discardStore{}, nil },
			})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			if err := s.Upload(b.Context(), "models", "m", stream(size, 99)); err != nil {
				b.Fatal(err)
			}
			sslMBps := opensslBaseline(b, api.files["models/m.small"], filepath.Join(cache, "models", "m.big"), size)

			buf := make([]byte, 256<<10)
			b.SetBytes(size)
			b.ResetTimer()
			start := time.Now()
			for range b.N {
				res, err := s.Open(b.Context(), "models", "m")
				if err != nil {
					b.Fatal(err)
				}
				n, err := io.CopyBuffer(io.Discard, res, buf)
				res.Close()
				if err != nil || n != size {
					b.Fatalf("read %d of %d bytes: %v", n, size, err)
				}
			}
			goMBps := float64(size) * float64(b.N) / time.Since(start).Seconds() / 1e6
			b.StopTimer()
			if sslMBps > 0 {
				b.ReportMetric(sslMBps, "openssl-MB/s")
				b.ReportMetric(goMBps/sslMBps, "x-openssl")
			}
		})
	}
}

// opensslBaseline times openssl enc -d over small ‖ big (the IV split off into -iv) to
// /dev/null and returns its throughput in MB/s, the best of three runs; 0 if openssl is
// missing.
func opensslBaseline(b *testing.B, small []byte, bigPath string, size int64) float64 {
	b.Helper()
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		return 0
	}
	big, err := os.Open(bigPath)
	if err != nil {
		b.Fatal(err)
	}
	defer big.Close()
	c := filepath.Join(b.TempDir(), "cipher")
	out, err := os.Create(c)
	if err != nil {
		b.Fatal(err)
	}
	// The whole ciphertext minus its IV, as openssl reads it.
	head := bytes.NewReader(small)
	var iv [16]byte
	if _, err := io.ReadFull(io.MultiReader(head, big), iv[:]); err != nil {
		b.Fatal(err)
	}
	if _, err := io.Copy(out, io.MultiReader(head, big)); err != nil {
		b.Fatal(err)
	}
	if err := out.Close(); err != nil {
		b.Fatal(err)
	}
	best := time.Duration(0)
	for range 3 {
		cmd := exec.Command(openssl, "enc", "-d", "-aes-256-cbc", "-K", resourceKeyHex,
			"-iv", hex.EncodeToString(iv[:]), "-in", c, "-out", os.DevNull)
		start := time.Now()
		if out, err := cmd.CombinedOutput(); err != nil {
			b.Fatalf("openssl: %v\n%s", err, out)
		}
		if d := time.Since(start); best == 0 || d < best {
			best = d
		}
	}
	os.Remove(c)
	return float64(size) / best.Seconds() / 1e6
}
