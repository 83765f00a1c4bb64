package security

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"runtime"
	"testing"
)

// TestCBCPool checks the parallel decryption against crypto/cipher's sequential one, with
// the data cut into calls of random lengths, as the stream does, and each call into pieces
// of many sizes, down to one block per piece.
func TestCBCPool(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	ct := randomBytes(rng, 3<<20+5*BlockSize)
	iv := randomBytes(rng, BlockSize)
	block, err := aes.NewCipher(testKey)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, len(ct))
	cipher.NewCBCDecrypter(block, iv).CryptBlocks(want, ct)

	for _, k := range testKernels(t, testKey) {
		for _, workers := range []int{1, 2, 3, maxWorkers} {
			for _, part := range []int{BlockSize, 3 * BlockSize, 4096, minPart} {
				t.Run(fmt.Sprintf("%s, %d workers, %d-byte pieces", k.name, workers, part), func(t *testing.T) {
					p := newCBCPool(k.kernel, workers, part)
					got := bytes.Clone(ct)
					civ := [BlockSize]byte(iv)
					split := false
					for off := 0; off < len(got); {
						n := min(len(got)-off, BlockSize*(1+rng.IntN(decryptChunkSize/BlockSize)))
						p.decrypt(&civ, got[off:off+n])
						off += n
						split = split || p.pieces > 1
					}
					if !bytes.Equal(got, want) {
						t.Errorf("plaintext differs from crypto/cipher's at byte %d", firstDiff(got, want))
					}
					if !bytes.Equal(civ[:], ct[len(ct)-BlockSize:]) {
						t.Errorf("IV after the last call is not the last ciphertext block")
					}
					if workers > 1 && !split {
						t.Errorf("no call was split into pieces")
					}
				})
			}
		}
	}
}

// TestDecrypterParallel runs the stream with several goroutines whatever the machine, for
// sizes around the chunk boundaries and random ones, through readers that return whole
// chunks and random amounts, with io.EOF after the data or with the last of it.
func TestDecrypterParallel(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	sizes := []int{0, 1, 15, 16, 17, 2*minPart - 1, 2 * minPart,
		decryptChunkSize - BlockSize - 1, decryptChunkSize - BlockSize, decryptChunkSize - 1,
		decryptChunkSize, decryptChunkSize + 1, 4*decryptChunkSize + 7}
	for range 4 {
		sizes = append(sizes, rng.IntN(4*decryptChunkSize))
	}
	pools := []struct{ workers, part int }{{2, minPart}, {3, BlockSize}, {maxWorkers, 4096}}
	for _, n := range sizes {
		plain := plaintext(n)
		ct := encryptIV(plain, testKey, testIV)
		bad := bytes.Clone(ct)
		bad[len(bad)-1] ^= 0x10 // a bad pad: everything before the last block is still right
		keep := len(ct) - 2*BlockSize
		for _, pool := range pools {
			for _, rd := range []struct{ random, eofWithData bool }{{false, false}, {true, false}, {true, true}} {
				name := fmt.Sprintf("%d bytes, %d workers, %d-byte pieces, random reads %v, EOF with data %v",
					n, pool.workers, pool.part, rd.random, rd.eofWithData)
				reader := func(ct []byte) io.Reader {
					r := &testReader{r: bytes.NewReader(ct), eofWithData: rd.eofWithData}
					if rd.random {
						r.rng = rand.New(rand.NewPCG(uint64(n), 5))
					}
					return r
				}

				d := newDecrypter(reader(ct), testKey, pool.workers, pool.part)
				got, err := io.ReadAll(d)
				if err != nil || !bytes.Equal(got, plain) {
					t.Errorf("%s: %d bytes, %v; want %d bytes", name, len(got), err, n)
				}
				// A stream that fits the first, small chunk is decrypted in one call; a longer
				// one decrypts the first chunk, then full ones: splitting needs two pieces'
				// worth of data in one of them.
				fits := n+2*BlockSize <= firstChunkSize+BlockSize
				splits := n >= 2*pool.part && (fits || n >= firstChunkSize+2*pool.part)
				if !rd.random && splits && d.cbc.pieces < 2 {
					t.Errorf("%s: never split into pieces", name)
				}

				got, err = io.ReadAll(newDecrypter(reader(bad), testKey, pool.workers, pool.part))
				if !errors.Is(err, ErrWrongKey) || !bytes.Equal(got, plain[:keep]) {
					t.Errorf("%s, bad pad: %d bytes, %v; want the %d before the last block, ErrWrongKey",
						name, len(got), err, keep)
				}
			}
		}
	}
}

// TestDecrypterAllocs checks that what a stream allocates, in count and in bytes, does not
// grow with its length, with the parallel path forced: a 16 MiB stream allocates what a 1 MiB
// one does.
func TestDecrypterAllocs(t *testing.T) {
	if testing.Short() {
		t.Skip("decrypts 16 MiB")
	}
	measure := func(size int) (allocs, bytes float64) {
		ct := encryptIV(plaintext(size), testKey, testIV)
		buf := make([]byte, 32<<10)
		return allocated(5, func() {
			if err := drain(newDecrypter(&sliceReader{b: ct}, testKey, 3, minPart), buf); err != nil {
				t.Fatal(err)
			}
		})
	}
	if _, tinyBytes := measure(1000); tinyBytes > 2*firstChunkSize {
		t.Errorf("%.0f bytes allocated for a 1000-byte stream, want about one %d-byte first chunk", tinyBytes, firstChunkSize)
	}
	smallAllocs, smallBytes := measure(2 * decryptChunkSize)
	largeAllocs, largeBytes := measure(16 << 20)
	t.Logf("per stream: 1 MiB %.1f allocations, %.0f bytes; 16 MiB %.1f allocations, %.0f bytes",
		smallAllocs, smallBytes, largeAllocs, largeBytes)
	// A blocked WaitGroup.Wait may now and then allocate a sudog: allow one, and its bytes.
	if largeAllocs > smallAllocs+1 {
		t.Errorf("%v allocations for 16 MiB, %v for 1 MiB", largeAllocs, smallAllocs)
	}
	if smallBytes > 2*decryptChunkSize {
		t.Errorf("%.0f bytes allocated per stream, want about one %d-byte chunk buffer", smallBytes, decryptChunkSize)
	}
	if largeBytes > smallBytes+1024 {
		t.Errorf("%.0f bytes allocated for 16 MiB, %.0f for 1 MiB: the allocation grows with the length",
			largeBytes, smallBytes)
	}
}

// allocated runs f once to warm up, then runs times, and returns the average number of heap
// allocations and of heap bytes allocated per run. Like testing.AllocsPerRun it measures with
// GOMAXPROCS at 1, so that little else runs meanwhile.
func allocated(runs int, f func()) (allocs, bytes float64) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(1))
	f()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	for range runs {
		f()
	}
	runtime.ReadMemStats(&after)
	return float64(after.Mallocs-before.Mallocs) / float64(runs),
		float64(after.TotalAlloc-before.TotalAlloc) / float64(runs)
}

// testReader reads from r random amounts, from 1 byte to a little over a chunk, if rng is
// set, and returns io.EOF with the last data if eofWithData is.
type testReader struct {
	r           *bytes.Reader
	rng         *rand.Rand
	eofWithData bool
}

func (r *testReader) Read(p []byte) (int, error) {
	if r.rng != nil {
		p = p[:min(len(p), 1+r.rng.IntN(decryptChunkSize+2*BlockSize))]
	}
	n, err := r.r.Read(p)
	if r.eofWithData && r.r.Len() == 0 {
		err = io.EOF
	}
	return n, err
}

func randomBytes(rng *rand.Rand, n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(rng.Uint32())
	}
	return b
}

func firstDiff(a, b []byte) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}
