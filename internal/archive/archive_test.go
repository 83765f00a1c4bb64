package archive

import (
	"archive/tar"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math/rand/v2"
	"runtime"
	"slices"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/security"
)

// Tests on archives built by hand in the layout docker 25 and later write (the dockerd of the
// test machines is older, see docker_test.go for real ones).

func TestVerifyOCI(t *testing.T) {
	for _, c := range []struct {
		name   string
		images []ociImage
		pax    bool
	}{
		{"one image, one layer", []ociImage{{tags: []string{"azaion/detector:1.2"}, layers: [][]byte{layerTar(t, 3000)}}}, false},
		{"two images sharing a layer, PAX headers", []ociImage{
			{tags: []string{"azaion/detector:1.2", "azaion/detector:latest"}, layers: [][]byte{layerTar(t, 100), layerTar(t, 5000)}},
			{tags: []string{"redis:7"}, layers: [][]byte{layerTar(t, 100)}},
		}, true},
		{"gzip-compressed layers", []ociImage{{tags: []string{"azaion/tracker:2"}, layers: [][]byte{layerTar(t, 7000), layerTar(t, 10)}, gzip: true}}, false},
		{"an untagged image", []ociImage{{layers: [][]byte{layerTar(t, 10)}}}, false},
	} {
		t.Run(c.name, func(t *testing.T) {
			plain := ociArchive(t, c.images, c.pax)
			enc, key := encrypt(t, plain)
			rep := mustVerify(t, enc, key)
			var want []string
			for _, im := range c.images {
				want = append(want, im.tags...)
			}
			if got := tagsOf(rep); !slices.Equal(got, want) {
				t.Errorf("images %v, want %v", got, want)
			}
			if rep.TarBytes != int64(len(plain)) || !strings.HasPrefix(rep.Layout, "OCI") {
				t.Errorf("report: %d-byte tar in the %s layout, want %d bytes, OCI", rep.TarBytes, rep.Layout, len(plain))
			}
			for i, im := range rep.Images {
				if im.Layers != len(c.images[i].layers) {
					t.Errorf("image %d: %d layers, want %d", i, im.Layers, len(c.images[i].layers))
				}
			}
			if rep.Checked < len(c.images)+1 {
				t.Errorf("only %d files checked against a digest", rep.Checked)
			}
		})
	}
}

// TestVerifyEveryFlippedByteOCI flips a byte in every block of an archive in turn (see
// everyFlip): every one is found, and reported as damage, wherever it is (the IV, a header,
// a PAX header, a layer, a JSON file no digest covers, the padding of an entry, the
// end-of-archive blocks, the PKCS#7 block).
func TestVerifyEveryFlippedByteOCI(t *testing.T) {
	plain := ociArchive(t, []ociImage{
		{tags: []string{"azaion/detector:1.2"}, layers: [][]byte{layerTar(t, 700)}},
		{tags: []string{"azaion/tracker:2"}, layers: [][]byte{layerTar(t, 300)}, gzip: true},
	}, true)
	enc, key := encrypt(t, plain)
	mustVerify(t, enc, key)
	everyFlip(t, enc, key)
}

// everyFlip checks that flipping one byte of enc makes Verify report ErrCorrupt, for two
// bytes of every 16-byte block (a different pair from block to block) and every byte of the
// first and last four blocks. In CBC, flipping byte j of ciphertext block c garbles plaintext
// block c into 16 random bytes and flips byte j of block c+1, so this garbles every block of
// the tar and flips bytes at every offset within a block.
func everyFlip(t *testing.T, enc, key []byte) {
	t.Helper()
	var positions []int
	for c := range len(enc) / security.BlockSize {
		if c < 4 || c >= len(enc)/security.BlockSize-4 {
			for j := range security.BlockSize {
				positions = append(positions, c*security.BlockSize+j)
			}
			continue
		}
		j := c % security.BlockSize
		positions = append(positions, c*security.BlockSize+j, c*security.BlockSize+(j+7)%security.BlockSize)
	}
	var missed []string
	for _, i := range positions {
		_, err := verify(flip(enc, i), key)
		if !errors.Is(err, ErrCorrupt) {
			missed = append(missed, fmt.Sprintf("byte %d (tar offset %d): %v", i, i-security.BlockSize, err))
		}
	}
	if len(missed) > 0 {
		t.Errorf("%d of %d flipped bytes not reported as damage, e.g.:\n%s", len(missed), len(positions), strings.Join(missed[:min(len(missed), 10)], "\n"))
	}
}

func TestVerifyWrongKey(t *testing.T) {
	enc, _ := encrypt(t, ociArchive(t, []ociImage{{tags: []string{"a:1"}, layers: [][]byte{layerTar(t, 100)}}}, false))
	for range 50 {
		other := make([]byte, 20)
		for i := range other {
			other[i] = byte(rand.Uint32())
		}
		_, err := verify(enc, security.ArchiveKey(other))
		if !errors.Is(err, ErrWrongKey) {
			t.Fatalf("wrong key: %v", err)
		}
	}
}

func TestVerifyTruncated(t *testing.T) {
	plain := ociArchive(t, []ociImage{{tags: []string{"a:1"}, layers: [][]byte{layerTar(t, 20000)}}}, false)
	enc, key := encrypt(t, plain)
	for _, n := range []int{0, 7, 16, 31, 1000, 1024, len(enc) / 2, len(enc)/2 + 5, len(enc) - 1040, len(enc) - 1024, len(enc) - 32, len(enc) - 17, len(enc) - 16, len(enc) - 1} {
		_, err := verify(enc[:n], key)
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("cut to %d of %d bytes: %v, want ErrTruncated", n, len(enc), err)
		}
	}
	// A tar cut short before it was encrypted: the padding is right, the tar is not.
	for _, n := range []int{300, 512, len(plain) / 2, len(plain) - 1024, len(plain) - 512} {
		enc, key := encrypt(t, plain[:n])
		if _, err := verify(enc, key); !errors.Is(err, ErrTruncated) {
			t.Errorf("tar cut to %d of %d bytes: %v, want ErrTruncated", n, len(plain), err)
		}
	}
}

func TestVerifyNotDockerSave(t *testing.T) {
	good := ociArchive(t, []ociImage{{tags: []string{"a:1"}, layers: [][]byte{layerTar(t, 100)}}}, false)
	withExtra := func(extra tarFile) []byte {
		// The good archive's entries, then one more.
		return buildTar(t, append(tarFiles(t, good), extra))
	}
	for _, c := range []struct {
		name  string
		plain []byte
	}{
		{"text", []byte(strings.Repeat("not a tar at all\n", 100))},
		{"zeros", make([]byte, 4096)},
		{"an empty tar", buildTar(t, nil)},
		{"a tar of files", buildTar(t, []tarFile{{name: "README", data: []byte("hello")}, {name: "model.onnx", data: make([]byte, 1000)}})},
		{"manifest.json of something else", buildTar(t, []tarFile{{name: "manifest.json", data: []byte(`{"name": "x"}`)}})},
		{"an extra file", withExtra(tarFile{name: "notes.txt", data: []byte("hi")})},
		{"a device", withExtra(tarFile{name: "dev", typ: tar.TypeChar})},
		{"a path out of the archive", withExtra(tarFile{name: "../../etc/passwd", data: []byte("x")})},
		{"a symlink out of the archive", withExtra(tarFile{name: "escape", typ: tar.TypeSymlink, link: "/etc/passwd"})},
	} {
		t.Run(c.name, func(t *testing.T) {
			enc, key := encrypt(t, c.plain)
			_, err := verify(enc, key)
			if !errors.Is(err, ErrNotDockerSave) {
				t.Errorf("%v, want ErrNotDockerSave", err)
			}
			if _, err := checkTar(context.Background(), bytes.NewReader(c.plain)); !errors.Is(err, ErrNotDockerSave) {
				t.Errorf("Check of the plain tar: %v, want ErrNotDockerSave", err)
			}
		})
	}
}

// TestCheckTarBytes damages the bytes of a tar that no digest covers, without touching any
// header, and checks that Check notices each.
func TestCheckTarBytes(t *testing.T) {
	good := ociArchive(t, []ociImage{{tags: []string{"a:1"}, layers: [][]byte{layerTar(t, 100)}}}, false)
	if _, err := checkTar(context.Background(), bytes.NewReader(good)); err != nil {
		t.Fatal(err)
	}
	// Where the padding after each entry's data is: walk the tar, noting offsets.
	var pads []int
	tr := tar.NewReader(bytes.NewReader(good))
	pos := 0
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pos += 512
		if h.Size%512 != 0 {
			pads = append(pads, pos+int(h.Size))
		}
		pos += int((h.Size + 511) / 512 * 512)
	}
	if len(pads) < 3 {
		t.Fatalf("only %d entries with padding", len(pads))
	}
	for _, c := range []struct {
		name string
		tar  []byte
		want error
	}{
		{"a byte in an entry's padding", flip(good, pads[0]), ErrCorrupt},
		{"the last byte of an entry's padding", flip(good, (pads[1]+511)/512*512-1), ErrCorrupt},
		{"a byte in the first end-of-archive block", flip(good, pos+10), ErrCorrupt},
		{"the last byte of the tar", flip(good, len(good)-1), ErrCorrupt},
		{"a byte after the end-of-archive blocks", append(bytes.Clone(good), 0, 0, 1), ErrCorrupt},
		{"zeros after the end-of-archive blocks", append(bytes.Clone(good), make([]byte, 10240)...), nil},
		{"no end-of-archive blocks", good[:pos], ErrTruncated},
		{"one end-of-archive block", good[:pos+512], ErrTruncated},
	} {
		_, err := checkTar(context.Background(), bytes.NewReader(c.tar))
		if c.want == nil && err != nil || c.want != nil && !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
}

// TestVerifyDisagreements: archives whose every digest holds but whose parts disagree.
func TestVerifyDisagreements(t *testing.T) {
	l1, l2 := layerTar(t, 100), layerTar(t, 200)
	good := ociArchive(t, []ociImage{{tags: []string{"a:1"}, layers: [][]byte{l1}}}, false)
	other := ociArchive(t, []ociImage{{tags: []string{"a:1"}, layers: [][]byte{l2}}}, false)
	entries := func(b []byte) map[string]tarFile {
		m := make(map[string]tarFile)
		for _, f := range tarFiles(t, b) {
			m[f.name] = f
		}
		return m
	}
	g, o := entries(good), entries(other)
	rebuild := func(change func(m map[string]tarFile)) []byte {
		m := maps.Clone(g)
		change(m)
		var files []tarFile
		for _, k := range slices.Sorted(maps.Keys(m)) {
			files = append(files, m[k])
		}
		return buildTar(t, files)
	}
	for _, c := range []struct {
		name   string
		change func(m map[string]tarFile)
		want   error
	}{
		{"manifest.json of another archive", func(m map[string]tarFile) { m["manifest.json"] = o["manifest.json"] }, ErrCorrupt},
		{"repositories of another archive", func(m map[string]tarFile) { m["repositories"] = o["repositories"] }, ErrCorrupt},
		{"index.json of another archive", func(m map[string]tarFile) { m["index.json"] = o["index.json"] }, ErrCorrupt},
		{"a tag renamed in repositories", func(m map[string]tarFile) {
			f := m["repositories"]
			f.data = bytes.Replace(f.data, []byte(`"1"`), []byte(`"2"`), 1)
			m["repositories"] = f
		}, ErrCorrupt},
		{"a layer missing", func(m map[string]tarFile) { delete(m, "blobs/sha256/"+sha(l1)) }, ErrCorrupt},
		{"a blob renamed", func(m map[string]tarFile) {
			f := m["blobs/sha256/"+sha(l1)]
			f.name = "blobs/sha256/" + sha(l2)
			m[f.name] = f
			delete(m, "blobs/sha256/"+sha(l1))
		}, ErrCorrupt},
		{"oci-layout of another version", func(m map[string]tarFile) {
			m["oci-layout"] = tarFile{name: "oci-layout", data: []byte(`{"imageLayoutVersion": "2.0.0"}`)}
		}, ErrCorrupt},
		{"manifest.json with an unknown field", func(m map[string]tarFile) {
			f := m["manifest.json"]
			f.data = bytes.Replace(f.data, []byte(`"Config"`), []byte(`"Cfg":1,"Config"`), 1)
			m["manifest.json"] = f
		}, ErrNotDockerSave},
	} {
		t.Run(c.name, func(t *testing.T) {
			enc, key := encrypt(t, rebuild(c.change))
			if _, err := verify(enc, key); !errors.Is(err, c.want) {
				t.Errorf("%v, want %v", err, c.want)
			}
		})
	}
}

// TestVerifyBoundedMemory streams a 16 MiB layer through Verify: what it allocates does
// not grow with the layer.
func TestVerifyBoundedMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("16 MiB")
	}
	measure := func(size int) uint64 {
		plain := ociArchive(t, []ociImage{{tags: []string{"big:1"}, layers: [][]byte{layerTar(t, size)}}}, false)
		enc, key := encrypt(t, plain)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		if _, err := Verify(context.Background(), &onlyReader{bytes.NewReader(enc)}, key); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		return after.TotalAlloc - before.TotalAlloc
	}
	small, large := measure(1<<20), measure(16<<20)
	t.Logf("allocated: %d bytes for a 1 MiB layer, %d for a 16 MiB one", small, large)
	if large > small+4<<20 {
		t.Errorf("Verify allocated %d bytes for a 16 MiB layer, %d for 1 MiB: it grows with the data", large, small)
	}
}

// TestVerifyRandomFlips flips a random byte of random archives, as a cheap complement of the
// exhaustive tests.
func TestVerifyRandomFlips(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	for range 30 {
		var images []ociImage
		for i := range 1 + rng.IntN(3) {
			var layers [][]byte
			for range 1 + rng.IntN(3) {
				layers = append(layers, layerTar(t, rng.IntN(5000)))
			}
			images = append(images, ociImage{tags: []string{fmt.Sprintf("img%d:%d", i, rng.IntN(100))}, layers: layers, gzip: rng.IntN(2) == 0})
		}
		enc, key := encrypt(t, ociArchive(t, images, rng.IntN(2) == 0))
		mustVerify(t, enc, key)
		for range 20 {
			i := rng.IntN(len(enc))
			if _, err := verify(flip(enc, i), key); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("byte %d of %d flipped: %v", i, len(enc), err)
			}
		}
	}
}
