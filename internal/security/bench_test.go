package security

import (
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/azaion/loader/internal/testenv"
)

// benchCiphertext returns IV ‖ ciphertext of size bytes of random plaintext.
func benchCiphertext(b *testing.B, size int) []byte {
	b.Helper()
	plain := make([]byte, size)
	rand.Read(plain)
	ct, err := Encrypt(plain, testKey)
	if err != nil {
		b.Fatal(err)
	}
	return ct
}

// BenchmarkDecrypt streams ciphertext held in memory through NewDecrypter. allocs/op and
// B/op must not depend on the size.
func BenchmarkDecrypt(b *testing.B) {
	for _, size := range []int{16 << 20, 256 << 20} {
		b.Run(fmt.Sprintf("%dMiB", size>>20), func(b *testing.B) {
			ct := benchCiphertext(b, size)
			buf := make([]byte, 32<<10)
			b.SetBytes(int64(size))
			b.ReportAllocs()
			for b.Loop() {
				if err := drain(NewDecrypter(&sliceReader{b: ct}, testKey), buf); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// drain reads r to the end through buf. Unlike io.Copy to io.Discard it allocates nothing,
// whose pooled buffers would otherwise show in B/op.
func drain(r io.Reader, buf []byte) error {
	for {
		if _, err := r.Read(buf); err != nil {
			if err == io.EOF {
				return nil
			}
			return err
		}
	}
}

// sliceReader is a bytes.Reader without WriterTo, so the benchmark goes through Read
// as a network body would.
type sliceReader struct{ b []byte }

func (r *sliceReader) Read(p []byte) (int, error) {
	if len(r.b) == 0 {
		return 0, io.EOF
	}
	n := copy(p, r.b)
	r.b = r.b[n:]
	return n, nil
}

// BenchmarkDecryptVsOpenSSL decrypts the same 256 MiB file with `openssl enc -d` and with
// NewDecrypter and reports both rates and their ratio (x-openssl above 1 means faster than
// openssl). openssl's figure is the best of three runs and includes its process start,
// about a millisecond against the ~100 ms the file takes.
func BenchmarkDecryptVsOpenSSL(b *testing.B) {
	const size = 256 << 20
	openssl := testenv.OpenSSL(b)
	ct := benchCiphertext(b, size)
	dir := b.TempDir()
	full, body := filepath.Join(dir, "full.enc"), filepath.Join(dir, "body.enc")
	writeFile(b, full, ct)
	writeFile(b, body, ct[BlockSize:]) // openssl takes the IV on the command line

	args := []string{"enc", "-d", "-aes-256-cbc", "-K", hex.EncodeToString(testKey),
		"-iv", hex.EncodeToString(ct[:BlockSize]), "-in", body, "-out", os.DevNull}
	best := time.Duration(1<<63 - 1)
	for range 3 {
		start := time.Now()
		if out, err := exec.Command(openssl, args...).CombinedOutput(); err != nil {
			b.Fatalf("openssl: %v\n%s", err, out)
		}
		best = min(best, time.Since(start))
	}

	buf := make([]byte, 32<<10)
	b.SetBytes(size)
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		f, err := os.Open(full)
		if err != nil {
			b.Fatal(err)
		}
		err = drain(NewDecrypter(f, testKey), buf)
		f.Close()
		if err != nil {
			b.Fatal(err)
		}
	}
	ours := float64(size) / 1e6 / (b.Elapsed().Seconds() / float64(b.N))
	theirs := float64(size) / 1e6 / best.Seconds()
	b.ReportMetric(ours, "MB/s-ours")
	b.ReportMetric(theirs, "MB/s-openssl")
	b.ReportMetric(ours/theirs, "x-openssl")
}

// BenchmarkKernel decrypts a 16 KiB buffer in place with each kernel on one goroutine: the
// figure to set next to `openssl speed -evp aes-256-cbc -decrypt`'s 16384-byte column.
func BenchmarkKernel(b *testing.B) {
	buf := benchCiphertext(b, 16<<10)[BlockSize:]
	for _, k := range testKernels(b, testKey) {
		b.Run(k.name, func(b *testing.B) {
			dec := k.kernel.decrypter()
			var iv [BlockSize]byte
			b.SetBytes(int64(len(buf)))
			for b.Loop() {
				dec.decrypt(&iv, buf, buf)
			}
		})
	}
}
