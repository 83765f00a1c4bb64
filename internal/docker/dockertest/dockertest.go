// Package dockertest makes images and image archives on a real Docker daemon for tests and
// benchmarks. Import it from tests and bench/ only.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"io"
	mrand "math/rand/v2"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/azaion/loader/internal/docker"
)

// timeout bounds each helper's talk with the daemon.
const timeout = 2 * time.Minute

// BuildArchive makes one tiny image per ref ("repo:tag") on the daemon at host, each from a
// rootfs holding a single small file, saves them all into one tar (the format "docker save"
// writes and an image load reads) and removes them from the daemon again, so that loading the
// archive is observable. It registers a cleanup that removes the refs once more, for whatever the
// test loads.
func BuildArchive(t testing.TB, host string, refs []string) []byte {
	t.Helper()
	cli := newClient(t, host)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()

	t.Cleanup(func() { RemoveImages(t, host, refs) })
	for _, ref := range refs {
		rootfs, err := rootfsTar(ref)
		if err != nil {
			t.Fatalf("rootfs for %s: %v", ref, err)
		}
		if err := Import(ctx, cli, ref, bytes.NewReader(rootfs)); err != nil {
			t.Fatalf("import %s: %v", ref, err)
		}
	}

	res, err := cli.ImageSave(ctx, refs)
	if err != nil {
		t.Fatalf("save %v: %v", refs, err)
	}
	archive, err := io.ReadAll(res)
	res.Close()
	if err != nil {
		t.Fatalf("save %v: %v", refs, err)
	}
	RemoveImages(t, host, refs)
	return archive
}

// RemoveImages removes the images refs from the daemon at host; refs it does not hold are fine.
func RemoveImages(t testing.TB, host string, refs []string) {
	t.Helper()
	cli := newClient(t, host)
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	for _, ref := range refs {
		_, err := cli.ImageRemove(ctx, ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
		if err != nil && !cerrdefs.IsNotFound(err) {
			t.Errorf("remove image %s: %v", ref, err)
		}
	}
}

func newClient(t testing.TB, host string) *client.Client {
	t.Helper()
	cli, err := client.New(client.WithHost(host))
	if err != nil {
		t.Fatalf("docker client for %s: %v", host, err)
	}
	t.Cleanup(func() { cli.Close() })
	return cli
}

// rootfsTar is a filesystem of one file whose content names the image, so every image differs.
func rootfsTar(ref string) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := []byte("test image " + ref + "\n")
	if err := tw.WriteHeader(&tar.Header{Name: "hello.txt", Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
		return nil, err
	}
	if _, err := tw.Write(body); err != nil {
		return nil, err
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// RandomImage makes the image ref on the daemon at host from a rootfs holding one file of size
// pseudo-random bytes, streamed (nothing is written to disk), and registers a cleanup that
// removes it.
func RandomImage(t testing.TB, host, ref string, size int64) {
	t.Helper()
	cli := newClient(t, host)
	t.Cleanup(func() { RemoveImages(t, host, []string{ref}) })
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	if err := ImportRandom(ctx, cli, ref, size); err != nil {
		t.Fatalf("import %s: %v", ref, err)
	}
}

// ImportRandom makes the image ref with cli from a rootfs holding one file of size pseudo-random
// bytes (WriteRandomRootfs), streamed: nothing is written to disk.
func ImportRandom(ctx context.Context, cli *client.Client, ref string, size int64) error {
	pr, pw := io.Pipe()
	go func() { pw.CloseWithError(WriteRandomRootfs(pw, size)) }()
	err := Import(ctx, cli, ref, pr)
	if err != nil {
		pr.CloseWithError(err) // stops the writer
	}
	return err
}

// WriteRandomRootfs writes a rootfs tar holding one file, big.bin, of size pseudo-random bytes.
func WriteRandomRootfs(w io.Writer, size int64) error {
	tw := tar.NewWriter(w)
	if err := tw.WriteHeader(&tar.Header{Name: "big.bin", Mode: 0o644, Size: size, ModTime: time.Unix(0, 0)}); err != nil {
		return err
	}
	var seed [32]byte
	rand.Read(seed[:])
	if _, err := io.CopyN(tw, mrand.NewChaCha8(seed), size); err != nil {
		return err
	}
	return tw.Close()
}

// Import makes the image ref with cli from the rootfs tar read from rootfs (the Engine API's
// ImageImport) and waits until the daemon has finished, returning the error it reported.
func Import(ctx context.Context, cli *client.Client, ref string, rootfs io.Reader) error {
	res, err := cli.ImageImport(ctx, client.ImageImportSource{Source: rootfs, SourceName: "-"}, ref, client.ImageImportOptions{})
	if err != nil {
		return err
	}
	defer res.Close()
	return docker.ReadMessages(res)
}
