package main

// Tests of `azaion-loader archive decrypt` and `archive verify` (SPEC §13), in-process and as
// the built binary, on archives the real dockerd saved: exit codes, what stdout and stderr
// say, and that verify writes nothing.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/testenv"
)

// avFixture is a real docker save archive encrypted by our own `archive encrypt`, in a
// directory with its key fragment.
type avFixture struct {
	dir, fragPath, encPath string
	fragment, plain, enc   []byte
	refs                   []string
}

func newAVFixture(t *testing.T) *avFixture {
	t.Helper()
	host := testenv.DockerHost(t)
	refs := ulRefs(ulSpecImages[:3], ulTag())
	f := &avFixture{refs: refs, fragment: make([]byte, 48)}
	rand.Read(f.fragment)
	f.plain = dockertest.BuildArchive(t, host, refs)
	f.dir = t.TempDir()
	f.fragPath, f.encPath = filepath.Join(f.dir, "fragment.bin"), filepath.Join(f.dir, "images.enc")
	if err := os.WriteFile(f.fragPath, f.fragment, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := arRun(t, f.plain, "archive", "encrypt", "--key-fragment", f.fragPath, "--in", "-", "--out", f.encPath); err != nil {
		t.Fatalf("archive encrypt: %v (%s)", err, stderr)
	}
	var err error
	if f.enc, err = os.ReadFile(f.encPath); err != nil {
		t.Fatal(err)
	}
	return f
}

// write puts data next to the archive under name and returns its path.
func (f *avFixture) write(t *testing.T, name string, data []byte) string {
	t.Helper()
	p := filepath.Join(f.dir, name)
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// listDir names the files in dir with their sizes, to see that a command wrote nothing.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		fi, _ := e.Info()
		out = append(out, fmt.Sprintf("%s %d %v", e.Name(), fi.Size(), fi.ModTime()))
	}
	return out
}

func TestArchiveVerifyProcess(t *testing.T) {
	t.Parallel()
	f := newAVFixture(t)
	flipped := func(i int) []byte {
		b := bytes.Clone(f.enc)
		b[i] ^= 0x01
		return b
	}
	otherFrag := f.write(t, "other-fragment.bin", []byte("not the key fragment"))
	notDocker := dockerless(t, f)
	cases := []struct {
		name, in, frag string
		code           int
		want           string // in stderr, or in stdout when the code is 0
	}{
		{"good", f.encPath, f.fragPath, 0, "OK: 3 images"},
		{"a flipped byte at the start", f.write(t, "start.enc", flipped(3)), f.fragPath, 1, "archive corrupted"},
		{"a flipped byte in the middle", f.write(t, "middle.enc", flipped(len(f.enc)/2)), f.fragPath, 1, "archive corrupted"},
		{"a flipped byte in the end-of-archive blocks", f.write(t, "eof.enc", flipped(len(f.enc)-300)), f.fragPath, 1, "archive corrupted"},
		{"a flipped byte at the end", f.write(t, "end.enc", flipped(len(f.enc)-1)), f.fragPath, 1, "archive corrupted"},
		{"truncated", f.write(t, "cut.enc", f.enc[:len(f.enc)-1000]), f.fragPath, 1, "archive truncated"},
		{"cut by a byte", f.write(t, "cut1.enc", f.enc[:len(f.enc)-1]), f.fragPath, 1, "archive truncated"},
		{"wrong key", f.encPath, otherFrag, 1, "wrong key"},
		{"not a docker save", notDocker, f.fragPath, 1, "not a docker save archive"},
	}
	before := listDir(t, f.dir)
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := runBin(t, f.dir, "", nil, "archive", "verify", "--key-fragment", c.frag, "--in", c.in)
			stdout, stderr, code := r.stdout, r.stderr, r.code
			if code != c.code {
				t.Fatalf("exit %d, want %d; stdout %q, stderr %q", code, c.code, stdout, stderr)
			}
			if c.code == 0 {
				lines := strings.Split(strings.TrimSpace(stdout), "\n")
				tags, want := lines[:len(lines)-1], slices.Clone(f.refs)
				slices.Sort(tags)
				slices.Sort(want)
				if !slices.Equal(tags, want) || !strings.HasPrefix(lines[len(lines)-1], c.want) || stderr != "" {
					t.Errorf("stdout %q, stderr %q; want the images %v then %q", stdout, stderr, f.refs, c.want)
				}
				return
			}
			if stdout != "" || strings.Count(stderr, "\n") != 1 || !strings.HasPrefix(stderr, "azaion-loader: archive verify ") || !strings.Contains(stderr, c.want) {
				t.Errorf("stdout %q, stderr %q; want one line on stderr saying %q", stdout, stderr, c.want)
			}
			if strings.Contains(stderr, string(f.fragment)) {
				t.Error("the key fragment is in the message")
			}
		})
	}
	if after := listDir(t, f.dir); !slices.Equal(after, before) {
		t.Errorf("verify changed the directory:\nbefore %v\nafter  %v", before, after)
	}
	// From stdin too.
	cmd := exec.Command(binary(t), "archive", "verify", "--key-fragment", f.fragPath, "--in", "-")
	cmd.Stdin = bytes.NewReader(f.enc)
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "OK: 3 images") {
		t.Errorf("verify from stdin: %v\n%s", err, out)
	}
}

// dockerless writes an archive of a tar that is not a docker save, encrypted with f's key.
func dockerless(t *testing.T, f *avFixture) string {
	t.Helper()
	p := filepath.Join(f.dir, "plain.enc")
	if _, stderr, err := arRun(t, arTar(t), "archive", "encrypt", "--key-fragment", f.fragPath, "--in", "-", "--out", p); err != nil {
		t.Fatalf("archive encrypt: %v (%s)", err, stderr)
	}
	return p
}

// TestArchiveDecryptLoads: what `archive decrypt` writes is the tar docker saved, byte for
// byte, and the real dockerd loads it.
func TestArchiveDecryptLoads(t *testing.T) {
	t.Parallel()
	f := newAVFixture(t)
	tarPath := filepath.Join(f.dir, "images.tar")
	r := runBin(t, f.dir, "", nil, "archive", "decrypt", "--key-fragment", f.fragPath, "--in", f.encPath, "--out", tarPath)
	stdout, stderr, code := r.stdout, r.stderr, r.code
	if code != 0 || stdout != "" || stderr != "" {
		t.Fatalf("archive decrypt: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	got, err := os.ReadFile(tarPath)
	if err != nil || !bytes.Equal(got, f.plain) {
		t.Fatalf("decrypted %d bytes (%v), not the %d-byte tar docker saved", len(got), err, len(f.plain))
	}
	if fi, err := os.Stat(tarPath); err != nil || fi.Mode().Perm() != 0o600 {
		t.Errorf("decrypted tar has mode %v (%v), want 0600", fi.Mode().Perm(), err)
	}
	eng := ulEngine(t, testenv.DockerHost(t))
	ulAssertNoneLoaded(t, eng, f.refs)
	tf, err := os.Open(tarPath)
	if err != nil {
		t.Fatal(err)
	}
	defer tf.Close()
	if err := eng.LoadImages(context.Background(), tf); err != nil {
		t.Fatalf("docker load of the decrypted tar: %v", err)
	}
	ulAssertLoaded(t, eng, f.refs)

	// To stdout.
	r = runBin(t, f.dir, "", nil, "archive", "decrypt", "--key-fragment", f.fragPath, "--in", f.encPath, "--out", "-")
	stdout, stderr, code = r.stdout, r.stderr, r.code
	if code != 0 || stdout != string(f.plain) || stderr != "" {
		t.Errorf("decrypt to stdout: exit %d, %d bytes out, stderr %q", code, len(stdout), stderr)
	}
}

func TestArchiveDecryptFailures(t *testing.T) {
	t.Parallel()
	fragment := []byte("a key fragment")
	plain := arTar(t)
	dir, fragPath, tarPath := arFiles(t, fragment, plain)
	encPath := filepath.Join(dir, "images.enc")
	if _, stderr, err := arRun(t, nil, "archive", "encrypt", "--key-fragment", fragPath, "--in", tarPath, "--out", encPath); err != nil {
		t.Fatalf("archive encrypt: %v (%s)", err, stderr)
	}
	enc, _ := os.ReadFile(encPath)
	other := filepath.Join(dir, "other")
	os.WriteFile(other, []byte("another fragment"), 0o600)
	cut := filepath.Join(dir, "cut.enc")
	os.WriteFile(cut, enc[:len(enc)-5], 0o600)
	out := filepath.Join(dir, "out.tar")
	for _, c := range []struct {
		name, frag, in, want string
	}{
		{"wrong key", other, encPath, "wrong key"},
		{"truncated", fragPath, cut, "archive truncated"},
	} {
		_, _, err := arRun(t, nil, "archive", "decrypt", "--key-fragment", c.frag, "--in", c.in, "--out", out)
		var stderr bytes.Buffer
		if code := exitCode(err, &stderr); code != 1 || !strings.Contains(stderr.String(), c.want) {
			t.Errorf("%s: exit %d, %q; want 1 and %q", c.name, code, stderr.String(), c.want)
		}
		if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s: a failed decrypt left %s behind", c.name, out)
		}
	}
	// Our own tar back, through stdin and stdout.
	stdout, stderr, err := arRun(t, enc, "archive", "decrypt", "--key-fragment", fragPath, "--in", "-", "--out", "-")
	if err != nil || !bytes.Equal(stdout, plain) {
		t.Errorf("decrypt - -: %d bytes, %v (%s)", len(stdout), err, stderr)
	}
	for _, args := range [][]string{
		{"archive", "decrypt"},
		{"archive", "decrypt", "--key-fragment", fragPath, "--in", encPath},
		{"archive", "verify", "--key-fragment", fragPath},
		{"archive", "verify", "--in", encPath},
		{"archive", "verify", "--key-fragment", fragPath, "--in", encPath, "--out", out},
		{"archive", "frobnicate"},
	} {
		_, _, err := arRun(t, nil, args...)
		if code := exitCode(err, &bytes.Buffer{}); code != 2 {
			t.Errorf("%v: exit %d (%v), want 2", args, code, err)
		}
	}
}
