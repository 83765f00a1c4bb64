package archive

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/security"
	"github.com/azaion/loader/internal/streams"
)

// tarFile is one entry of a hand-built tar.
type tarFile struct {
	name string
	typ  byte // tar.TypeReg when zero
	link string
	data []byte
	pax  bool // write it with a PAX header (a sub-second modification time needs one)
}

// buildTar writes files with archive/tar, as docker's own tar writer does.
func buildTar(t testing.TB, files []tarFile) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range files {
		h := &tar.Header{Name: f.name, Typeflag: f.typ, Linkname: f.link, Mode: 0o644, Size: int64(len(f.data)), ModTime: time.Unix(1700000000, 0)}
		switch f.typ {
		case 0:
			h.Typeflag = tar.TypeReg
		case tar.TypeDir:
			h.Mode, h.Size = 0o755, 0
		case tar.TypeSymlink, tar.TypeLink:
			h.Size = 0
		}
		if f.pax {
			h.Format = tar.FormatPAX
			h.ModTime = time.Unix(1700000000, 123456789)
		}
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(f.data); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// tarFiles reads the entries of the tar b back, for tests that rebuild it with a change.
func tarFiles(t testing.TB, b []byte) []tarFile {
	t.Helper()
	var files []tarFile
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files = append(files, tarFile{name: h.Name, typ: h.Typeflag, link: h.Linkname, data: data})
	}
}

// layerTar is a small layer: a tar of one file of n random bytes.
func layerTar(t testing.TB, n int) []byte {
	t.Helper()
	body := make([]byte, n)
	rand.Read(body)
	return buildTar(t, []tarFile{{name: "app/model.bin", data: body}})
}

func sha(b []byte) string {
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

func gzipped(t testing.TB, b []byte) []byte {
	t.Helper()
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(b)
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func mustJSON(t testing.TB, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// ociImage is one image of a hand-built OCI layout archive.
type ociImage struct {
	tags   []string // "repo:tag", familiar form
	layers [][]byte // layer tars, bottom first
	gzip   bool     // store the layers gzip-compressed (as the containerd image store does)
}

// ociArchive builds the archive docker 25 and later save (moby's image/tarexport): the OCI
// image layout plus manifest.json and repositories. pax writes the blobs with PAX headers.
func ociArchive(t testing.TB, images []ociImage, pax bool) []byte {
	t.Helper()
	files := []tarFile{{name: "blobs/", typ: tar.TypeDir}, {name: "blobs/sha256/", typ: tar.TypeDir}}
	seen := make(map[string]bool)
	blob := func(data []byte) string {
		d := sha(data)
		if !seen[d] {
			seen[d] = true
			files = append(files, tarFile{name: "blobs/sha256/" + d, data: data, pax: pax})
		}
		return d
	}
	type item struct {
		Config   string
		RepoTags []string
		Layers   []string
	}
	var manifest []item
	repos := make(map[string]map[string]string)
	var index []map[string]any
	for _, im := range images {
		var diffs, paths []string
		var layerDescs []map[string]any
		for _, l := range im.layers {
			diffs = append(diffs, "sha256:"+sha(l))
			data, mt := l, "application/vnd.oci.image.layer.v1.tar"
			if im.gzip {
				data, mt = gzipped(t, l), mt+"+gzip"
			}
			d := blob(data)
			paths = append(paths, "blobs/sha256/"+d)
			layerDescs = append(layerDescs, map[string]any{"mediaType": mt, "digest": "sha256:" + d, "size": len(data)})
		}
		cfg := mustJSON(t, map[string]any{
			"architecture": "amd64", "os": "linux", "created": "2026-01-02T03:04:05Z",
			"config": map[string]any{"Env": []string{"PATH=/usr/bin"}},
			"rootfs": map[string]any{"type": "layers", "diff_ids": diffs},
		})
		cd := blob(cfg)
		// moby also stores each layer's legacy json as a blob; only its name covers it.
		blob(mustJSON(t, map[string]any{"id": sha(cfg), "created": "1970-01-01T00:00:00Z", "os": "linux"}))
		platform := map[string]any{"architecture": "amd64", "os": "linux"}
		mt := "application/vnd.oci.image.manifest.v1+json"
		man := mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": mt,
			"config": map[string]any{"mediaType": "application/vnd.oci.image.config.v1+json", "digest": "sha256:" + cd, "size": len(cfg), "platform": platform},
			"layers": layerDescs})
		md := blob(man)
		manifest = append(manifest, item{Config: "blobs/sha256/" + cd, RepoTags: im.tags, Layers: paths})
		for _, tag := range im.tags {
			i := strings.LastIndex(tag, ":")
			repo, tg := tag[:i], tag[i+1:]
			if repos[repo] == nil {
				repos[repo] = make(map[string]string)
			}
			repos[repo][tg] = strings.TrimPrefix(diffs[len(diffs)-1], "sha256:")
			full := repo
			if !strings.Contains(repo, "/") {
				full = "library/" + repo
			}
			index = append(index, map[string]any{"mediaType": mt, "digest": "sha256:" + md, "size": len(man), "platform": platform,
				"annotations": map[string]string{annotationImageName: "docker.io/" + full + ":" + tg, annotationRefName: tg}})
		}
	}
	files = append(files,
		tarFile{name: "index.json", data: mustJSON(t, map[string]any{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": index})},
		tarFile{name: "manifest.json", data: append(mustJSON(t, manifest), '\n')},
		tarFile{name: "oci-layout", data: []byte(`{"imageLayoutVersion": "1.0.0"}`)},
		tarFile{name: "repositories", data: append(mustJSON(t, repos), '\n')},
	)
	return buildTar(t, files)
}

// encrypt makes the encrypted archive of plain with a fresh key fragment, and returns it with
// the key.
func encrypt(t testing.TB, plain []byte) (enc, key []byte) {
	t.Helper()
	fragment := make([]byte, 32)
	rand.Read(fragment)
	key = security.ArchiveKey(fragment)
	enc, err := security.Encrypt(plain, key)
	if err != nil {
		t.Fatal(err)
	}
	return enc, key
}

func flip(b []byte, i int) []byte {
	c := bytes.Clone(b)
	c[i] ^= 0x01
	return c
}

func verify(b, key []byte) (*Report, error) {
	return Verify(context.Background(), bytes.NewReader(b), key)
}

// mustVerify verifies the archive and fails the test unless it checks out.
func mustVerify(t testing.TB, enc, key []byte) *Report {
	t.Helper()
	rep, err := verify(enc, key)
	if err != nil {
		t.Fatalf("a good archive fails: %v", err)
	}
	return rep
}

// tagsOf lists the repo:tags of a report, in the order of manifest.json.
func tagsOf(rep *Report) []string {
	var tags []string
	for _, im := range rep.Images {
		tags = append(tags, im.RepoTags...)
	}
	return tags
}

// checkTar checks a docker save tar read from r, as Verify does after decrypting (the tar
// without the encryption).
func checkTar(ctx context.Context, r io.Reader) (*Report, error) {
	w, err := readTar(streams.WithContext(ctx, r))
	if err != nil {
		if cerr := ctx.Err(); cerr != nil {
			return nil, cerr
		}
		return nil, err
	}
	return report(w)
}
