package archive

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/moby/moby/api/types/build"
	"github.com/moby/moby/client"

	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/testenv"
)

// Tests on archives the real dockerd saves (whichever layout its version writes).

// realArchive has a real dockerd build and save images, and returns the tar and the repo:tags
// it holds. It holds: an imported base image under two tags; an image built on it by the
// classic builder with two COPY layers and an ENV (three layers, parent links between their
// legacy directories); and a second import of the same rootfs, whose layer docker stores once
// (a symlink in the legacy layout). The images are removed from the daemon again.
func realArchive(t testing.TB) ([]byte, []string) {
	t.Helper()
	host := testenv.DockerHost(t)
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	var suffix [4]byte
	rand.Read(suffix[:])
	repo := "azaion-archive-test/" + hex.EncodeToString(suffix[:])
	base, alias, built, twin := repo+"-base:1", repo+"-base:alias", repo+"-app:2", repo+"-twin:3"
	tags := []string{base, alias, built, twin}
	t.Cleanup(func() { dockertest.RemoveImages(t, host, tags) })

	rootfs := buildTar(t, []tarFile{{name: "etc/", typ: '5'}, {name: "etc/hello.txt", data: []byte("hello " + repo + "\n")}})
	for _, ref := range []string{base, twin} {
		if err := dockertest.Import(ctx, cli, ref, bytes.NewReader(rootfs)); err != nil {
			t.Fatalf("import %s: %v", ref, err)
		}
	}
	if _, err := cli.ImageTag(ctx, client.ImageTagOptions{Source: base, Target: alias}); err != nil {
		t.Fatalf("tag %s: %v", alias, err)
	}
	buildCtx := buildTar(t, []tarFile{
		{name: "Dockerfile", data: []byte("FROM " + base + "\nCOPY a.bin /a.bin\nENV MODEL=detector\nCOPY b.txt /b.txt\n")},
		{name: "a.bin", data: bytes.Repeat([]byte{0xAB, 0x00, 0x17}, 3000)},
		{name: "b.txt", data: []byte("b\n")},
	})
	res, err := cli.ImageBuild(ctx, bytes.NewReader(buildCtx), client.ImageBuildOptions{
		Tags: []string{built}, Version: build.BuilderV1, Remove: true, ForceRemove: true,
	})
	if err != nil {
		t.Fatalf("build %s: %v", built, err)
	}
	err = docker.ReadMessages(res.Body)
	res.Body.Close()
	if err != nil {
		t.Fatalf("build %s: %v", built, err)
	}
	saved, err := cli.ImageSave(ctx, tags)
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	defer saved.Close()
	tarball, err := io.ReadAll(saved)
	if err != nil {
		t.Fatalf("save: %v", err)
	}
	dockertest.RemoveImages(t, host, tags)
	return tarball, tags
}

func TestVerifyRealDockerSave(t *testing.T) {
	plain, tags := realArchive(t)
	enc, key := encrypt(t, plain)
	rep := mustVerify(t, enc, key)
	got := tagsOf(rep)
	slices.Sort(got)
	slices.Sort(tags)
	if !slices.Equal(got, tags) {
		t.Errorf("images %v, want %v", got, tags)
	}
	layers := make(map[string]int)
	for _, im := range rep.Images {
		for _, tag := range im.RepoTags {
			layers[tag] = im.Layers
		}
	}
	for tag, n := range layers {
		want := 1
		if strings.Contains(tag, "-app:") {
			want = 3
		}
		if n != want {
			t.Errorf("%s: %d layers, want %d", tag, n, want)
		}
	}
	t.Logf("%d-byte tar, %s layout, %d files checked against a digest", rep.TarBytes, rep.Layout, rep.Checked)
	if rep.TarBytes != int64(len(plain)) || rep.Checked < 6 {
		t.Errorf("report: %d-byte tar, %d files checked", rep.TarBytes, rep.Checked)
	}
}

// TestVerifyRealDockerSaveDamage: a real archive with a flipped byte in every block, at the
// start (the IV, the first header), in the middle and at the end (the end-of-archive blocks,
// the PKCS#7 block); truncated; with a wrong key.
func TestVerifyRealDockerSaveDamage(t *testing.T) {
	plain, _ := realArchive(t)
	enc, key := encrypt(t, plain)
	mustVerify(t, enc, key)
	for _, c := range []struct {
		name string
		at   int
		want string
	}{
		{"the IV", 0, "tar header"},
		{"the first header", 16 + 100, "tar header"},
		{"the middle", len(enc) / 2, ""},
		{"the end-of-archive blocks", len(enc) - 16 - 600, "end-of-archive"},
		{"the block before the padding", len(enc) - 17, "end-of-archive"},
		{"the padding block", len(enc) - 1, "last block"},
	} {
		_, err := verify(flip(enc, c.at), key)
		if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("byte %d flipped (%s): %v, want ErrCorrupt mentioning %q", c.at, c.name, err, c.want)
		}
	}
	for _, n := range []int{len(enc) - 1, len(enc) - 16, len(enc) - 1024 - 16, len(enc) / 2, len(enc)/2 + 1, 600} {
		if _, err := verify(enc[:n], key); !errors.Is(err, ErrTruncated) {
			t.Errorf("cut to %d of %d bytes: %v, want ErrTruncated", n, len(enc), err)
		}
	}
	other, _ := encrypt(t, nil)
	if _, err := verify(other[:0], key); !errors.Is(err, ErrTruncated) {
		t.Errorf("empty file: %v, want ErrTruncated", err)
	}
	_, wrong := encrypt(t, nil)
	if _, err := verify(enc, wrong); !errors.Is(err, ErrWrongKey) {
		t.Errorf("wrong key: %v", err)
	}
	everyFlip(t, enc, key)
}
