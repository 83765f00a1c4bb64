package main

// Tests of `azaion-loader archive encrypt` (SPEC §8): its output is checked with `openssl enc -d`
// (SPEC §4: IV ‖ AES-256-CBC(PKCS#7(tar)), key SHA-256(key fragment)), and unlock accepts it.

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/testenv"
)

// arTar is a small tar with a random file whose length is not a multiple of the block size.
func arTar(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	body := make([]byte, 300<<10+13)
	rand.Read(body)
	if err := tw.WriteHeader(&tar.Header{Name: "layer/big.bin", Mode: 0o644, Size: int64(len(body)), ModTime: time.Unix(0, 0)}); err != nil {
		t.Fatal(err)
	}
	tw.Write(body)
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// arFiles writes the key fragment and the tar into a fresh directory.
func arFiles(t testing.TB, fragment, plain []byte) (dir, fragPath, tarPath string) {
	t.Helper()
	dir = t.TempDir()
	fragPath, tarPath = filepath.Join(dir, "fragment.bin"), filepath.Join(dir, "images.tar")
	if err := os.WriteFile(fragPath, fragment, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tarPath, plain, 0o600); err != nil {
		t.Fatal(err)
	}
	return dir, fragPath, tarPath
}

// arRun runs the program in-process with stdin and no environment, and returns stdout,
// stderr and the error.
func arRun(t testing.TB, stdin []byte, args ...string) ([]byte, string, error) {
	t.Helper()
	return runMain(stdin, func(string) string { return "" }, args...)
}

func TestArchiveEncryptFile(t *testing.T) {
	t.Parallel()
	testenv.OpenSSL(t)
	fragment := make([]byte, 37)
	rand.Read(fragment)
	plain := arTar(t)
	dir, fragPath, tarPath := arFiles(t, fragment, plain)
	encPath := filepath.Join(dir, "images.enc")

	stdout, stderr, err := arRun(t, nil, "archive", "encrypt", "--key-fragment", fragPath, "--in", tarPath, "--out", encPath)
	if err != nil {
		t.Fatalf("archive encrypt: %v (stderr %q)", err, stderr)
	}
	if len(stdout) != 0 {
		t.Errorf("archive encrypt to a file wrote %d bytes to stdout", len(stdout))
	}
	enc, err := os.ReadFile(encPath)
	if err != nil {
		t.Fatal(err)
	}
	if want := 16 + (len(plain)/16+1)*16; len(enc) != want {
		t.Errorf("archive of %d bytes, want IV + padded blocks = %d", len(enc), want)
	}
	// The loader often runs as another user than the release step: the archive is readable.
	if fi, err := os.Stat(encPath); err != nil || fi.Mode().Perm() != 0o644 {
		t.Errorf("archive mode %v (%v), want 0644", fi.Mode().Perm(), err)
	}
	if got := ulOpenSSLDecrypt(t, fragment, enc); !bytes.Equal(got, plain) {
		t.Fatalf("openssl enc -d gave %d bytes, not the %d-byte tar", len(got), len(plain))
	}
	// Two runs use two IVs.
	enc2Path := filepath.Join(dir, "images2.enc")
	if _, _, err := arRun(t, nil, "archive", "encrypt", "--key-fragment", fragPath, "--in", tarPath, "--out", enc2Path); err != nil {
		t.Fatal(err)
	}
	if enc2, _ := os.ReadFile(enc2Path); bytes.Equal(enc2[:16], enc[:16]) {
		t.Error("two archives share an IV")
	}
	// Nothing else is left in the directory (no temp file).
	ents, _ := os.ReadDir(dir)
	var names []string
	for _, de := range ents {
		names = append(names, de.Name())
	}
	if want := []string{"fragment.bin", "images.enc", "images.tar", "images2.enc"}; !slices.Equal(names, want) {
		t.Errorf("directory holds %v, want %v", names, want)
	}
}

func TestArchiveEncryptStdinStdout(t *testing.T) {
	t.Parallel()
	testenv.OpenSSL(t)
	fragment := make([]byte, 64)
	rand.Read(fragment)
	plain := arTar(t)
	dir, fragPath, tarPath := arFiles(t, fragment, plain)

	stdout, stderr, err := arRun(t, plain, "archive", "encrypt", "--key-fragment", fragPath, "--in", "-", "--out", "-")
	if err != nil {
		t.Fatalf("archive encrypt - -: %v (stderr %q)", err, stderr)
	}
	if got := ulOpenSSLDecrypt(t, fragment, stdout); !bytes.Equal(got, plain) {
		t.Fatalf("stdin→stdout: openssl enc -d gave %d bytes, not the %d-byte tar", len(got), len(plain))
	}

	// A file in, stdout out; stdin in, a file out.
	stdout, _, err = arRun(t, nil, "archive", "encrypt", "--key-fragment", fragPath, "--in", tarPath, "--out", "-")
	if err != nil {
		t.Fatal(err)
	}
	if got := ulOpenSSLDecrypt(t, fragment, stdout); !bytes.Equal(got, plain) {
		t.Fatal("file→stdout: not the tar")
	}
	encPath := filepath.Join(dir, "from-stdin.enc")
	if _, _, err := arRun(t, plain, "archive", "encrypt", "--key-fragment", fragPath, "--in", "-", "--out", encPath); err != nil {
		t.Fatal(err)
	}
	enc, _ := os.ReadFile(encPath)
	if got := ulOpenSSLDecrypt(t, fragment, enc); !bytes.Equal(got, plain) {
		t.Fatal("stdin→file: not the tar")
	}
}

func TestArchiveEncryptUsage(t *testing.T) {
	t.Parallel()
	dir, fragPath, tarPath := arFiles(t, []byte("fragment"), []byte("tar"))
	out := filepath.Join(dir, "out.enc")
	for _, args := range [][]string{
		{"archive"},
		{"archive", "decrypt"},
		{"archive", "encrypt"},
		{"archive", "encrypt", "--in", tarPath, "--out", out},
		{"archive", "encrypt", "--key-fragment", fragPath, "--out", out},
		{"archive", "encrypt", "--key-fragment", fragPath, "--in", tarPath},
		{"archive", "encrypt", "--key-fragment", fragPath, "--in", tarPath, "--out", out, "extra"},
		{"archive", "encrypt", "--bogus"},
	} {
		_, _, err := arRun(t, nil, args...)
		var stderr bytes.Buffer
		if code := exitCode(err, &stderr); code != 2 {
			t.Errorf("%v: exit code %d (%v), want 2", args, code, err)
			continue
		}
		if !strings.HasPrefix(stderr.String(), "azaion-loader: ") || strings.Count(stderr.String(), "\n") != 1 {
			t.Errorf("%v: usage error reported as %q, want one line", args, stderr.String())
		}
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a usage error left %s behind", out)
	}
	for _, args := range [][]string{{"archive", "--help"}, {"archive", "encrypt", "--help"}} {
		stdout, _, err := arRun(t, nil, args...)
		if code := exitCode(err, &bytes.Buffer{}); code != 0 || !strings.Contains(string(stdout), "--key-fragment") && !strings.Contains(string(stdout), "-key-fragment") {
			t.Errorf("%v: exit %d, stdout %q; want 0 and the usage", args, code, stdout)
		}
	}
	_, _, err := arRun(t, nil, "archive", "encrypt", "--help")
	if !errors.Is(err, flag.ErrHelp) && err != nil {
		t.Errorf("--help: %v", err)
	}
}

func TestArchiveEncryptBadKeyFragment(t *testing.T) {
	t.Parallel()
	dir, _, tarPath := arFiles(t, []byte("x"), []byte("tar"))
	out := filepath.Join(dir, "out.enc")

	missing := filepath.Join(dir, "no-such-fragment")
	_, _, err := arRun(t, nil, "archive", "encrypt", "--key-fragment", missing, "--in", tarPath, "--out", out)
	var stderr bytes.Buffer
	if code := exitCode(err, &stderr); code != 1 {
		t.Fatalf("missing key fragment file: exit %d (%v), want 1", code, err)
	}
	msg := stderr.String()
	if !strings.Contains(msg, "key fragment") || !strings.Contains(msg, missing) || !strings.Contains(msg, "no such file") {
		t.Errorf("missing key fragment file reported as %q; want it to name the key fragment file and say it does not exist", msg)
	}

	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o600)
	if _, _, err := arRun(t, nil, "archive", "encrypt", "--key-fragment", empty, "--in", tarPath, "--out", out); err == nil || !strings.Contains(err.Error(), "empty") {
		t.Errorf("empty key fragment: %v, want an error saying it is empty", err)
	}

	if _, _, err := arRun(t, nil, "archive", "encrypt", "--key-fragment", filepath.Join(dir, "fragment.bin"), "--in", filepath.Join(dir, "no.tar"), "--out", out); err == nil {
		t.Error("missing --in file: no error")
	}
	if _, err := os.Stat(out); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a failed run left %s behind", out)
	}
}

// Our `archive encrypt` makes what the loader's unlock accepts (through the HTTP API, real dockerd).
func TestArchiveEncryptAcceptedByUnlock(t *testing.T) {
	t.Parallel()
	images := ulSpecImages[2:4]
	tag := ulTag()
	e := newTestEnv(t, envOptions{docker: true, images: images, tag: tag})
	refs := ulRefs(images, tag)
	plain := dockertest.BuildArchive(t, e.cfg.DockerHost, refs)
	fragPath := filepath.Join(t.TempDir(), "fragment")
	if err := os.WriteFile(fragPath, e.fragment, 0o600); err != nil {
		t.Fatal(err)
	}
	if _, stderr, err := arRun(t, plain, "archive", "encrypt", "--key-fragment", fragPath, "--in", "-", "--out", e.cfg.ImagesPath); err != nil {
		t.Fatalf("archive encrypt: %v (%s)", err, stderr)
	}
	if first := e.ulPost(); first != "authenticating" {
		t.Errorf("POST /unlock answered %s, want authenticating", first)
	}
	if st, trace := e.ulWait(); st.State != "ready" {
		t.Fatalf("unlock of our archive ended in %v", trace)
	}
	ulAssertLoaded(t, ulEngine(t, e.cfg.DockerHost), refs)
}
