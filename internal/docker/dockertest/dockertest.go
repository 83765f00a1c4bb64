// Package dockertest makes image archives on a real Docker daemon for tests. Import it from
// tests only.
package dockertest

import (
	"archive/tar"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"testing"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"
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
		res, err := cli.ImageImport(ctx, client.ImageImportSource{Source: bytes.NewReader(rootfs), SourceName: "-"}, ref, client.ImageImportOptions{})
		if err != nil {
			t.Fatalf("import %s: %v", ref, err)
		}
		err = drain(res)
		res.Close()
		if err != nil {
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

// drain reads a JSON message stream to its end and returns the error reported in it, if any.
func drain(r io.Reader) error {
	dec := json.NewDecoder(r)
	for {
		var m struct {
			ErrorDetail *struct {
				Message string `json:"message"`
			} `json:"errorDetail"`
		}
		if err := dec.Decode(&m); err == io.EOF {
			return nil
		} else if err != nil {
			return err
		}
		if m.ErrorDetail != nil {
			return fmt.Errorf("docker: %s", m.ErrorDetail.Message)
		}
	}
}
