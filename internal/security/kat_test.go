package security

import (
	"bufio"
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"encoding/hex"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"runtime"
	"strconv"
	"strings"
	"testing"

	"golang.org/x/sys/cpu"
)

// Known answers: what `openssl enc -aes-256-cbc` made, for every plaintext length from 0 to
// 4 KiB + 3 (testdata/kat-openssl.txt, written by testdata/gen-kat.sh), decrypted by every
// kernel from and to every alignment.

const katFile = "testdata/kat-openssl.txt"

// kat is the content of katFile.
type kat struct {
	key, iv, plain, full []byte
	last                 [][]byte // last[n]: the final ciphertext block of plain[:n]
}

// ciphertext returns the ciphertext of plain[:n], without the IV.
func (k *kat) ciphertext(n int) []byte {
	whole := n / BlockSize * BlockSize
	return append(bytes.Clone(k.full[:whole]), k.last[n]...)
}

func readKAT(t testing.TB) *kat {
	t.Helper()
	f, err := os.Open(katFile)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	k := &kat{}
	sc := bufio.NewScanner(f)
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") || line == "" {
			continue
		}
		fields := strings.Fields(line)
		val := func(i int) []byte {
			b, err := hex.DecodeString(fields[i])
			if err != nil {
				t.Fatalf("%s: %q: %v", katFile, fields[0], err)
			}
			return b
		}
		switch fields[0] {
		case "key":
			k.key = val(1)
		case "iv":
			k.iv = val(1)
		case "plain":
			k.plain = val(1)
		case "full":
			k.full = val(1)
		case "last":
			n, err := strconv.Atoi(fields[1])
			if err != nil || n != len(k.last) {
				t.Fatalf("%s: line %q out of order", katFile, line)
			}
			k.last = append(k.last, val(2))
		default:
			t.Fatalf("%s: unknown line %q", katFile, line)
		}
	}
	if err := sc.Err(); err != nil {
		t.Fatal(err)
	}
	if len(k.key) != KeySize || len(k.iv) != BlockSize || len(k.last) != len(k.plain)+1 ||
		len(k.full) != (len(k.plain)/BlockSize+1)*BlockSize || len(k.plain) != 4<<10+3 {
		t.Fatalf("%s is incomplete: key %d, iv %d, plain %d, full %d bytes, %d last blocks",
			katFile, len(k.key), len(k.iv), len(k.plain), len(k.full), len(k.last))
	}
	return k
}

// canary is what the test buffers hold around the bytes a kernel may touch.
const canary = 0xA5

// TestKnownAnswers decrypts openssl's ciphertext of every length with each kernel, into a
// separate buffer and in place, at source and destination alignments of 0 to 15 bytes past
// the start of a buffer (which the allocator aligns to 16 bytes). It checks the plaintext and
// its padding, that nothing next to the destination changed and the source did not, and that
// the IV passed on is the last ciphertext block.
//
// A kernel sees only the ciphertext, whose length is one of 257 block counts: for each block
// count one plaintext length is tried at all 256 pairs of alignments and in place at all 16,
// the other fifteen at one pair and in place at one alignment, both changing with the length.
// crypto/cipher, which has its own tests, is tried at one alignment.
func TestKnownAnswers(t *testing.T) {
	k := readKAT(t)
	for _, tk := range testKernels(t, k.key) {
		t.Run(tk.name, func(t *testing.T) {
			aligns := BlockSize
			if !tk.kernel.asm() {
				aligns = 1
			}
			dec := tk.kernel.decrypter()
			// Buffers with room for the largest ciphertext at any alignment and a margin of
			// canaries; only what a call may touch is reset (with copy, which the race
			// detector checks as one range rather than byte by byte).
			const margin = 2 * BlockSize
			canaries := bytes.Repeat([]byte{canary}, margin+BlockSize+len(k.full)+margin)
			srcBuf := make([]byte, len(canaries))
			dstBuf := bytes.Clone(canaries)
			for n := 0; n <= len(k.plain); n++ {
				ct := k.ciphertext(n)
				check := func(what string, out []byte, iv [BlockSize]byte) {
					t.Helper()
					pad, ok := unpad(out[len(out)-BlockSize:])
					if !ok {
						t.Fatalf("%d bytes, %s: the padding is wrong", n, what)
					}
					if !bytes.Equal(out[:len(out)-pad], k.plain[:n]) {
						t.Fatalf("%d bytes, %s: plaintext differs from openssl's at byte %d",
							n, what, firstDiff(out[:len(out)-pad], k.plain[:n]))
					}
					if !bytes.Equal(iv[:], ct[len(ct)-BlockSize:]) {
						t.Fatalf("%d bytes, %s: the IV passed on is not the last ciphertext block", n, what)
					}
				}
				// intact reports whether the margins around buf[off:off+len(ct)] hold canaries.
				intact := func(buf []byte, off int) bool {
					return allByte(buf[off:off+margin], canary) && allByte(buf[off+margin+len(ct):off+2*margin+len(ct)], canary)
				}
				srcAligns, dstAligns := []int{n % aligns}, []int{(n/BlockSize + 3*n) % aligns}
				if n%BlockSize == (n/BlockSize)%BlockSize {
					srcAligns, dstAligns = seq(aligns), seq(aligns)
				}
				for _, so := range srcAligns {
					copy(srcBuf, canaries)
					src := srcBuf[margin+so : margin+so+len(ct)]
					copy(src, ct)
					for _, do := range dstAligns {
						dst := dstBuf[margin+do : margin+do+len(ct)]
						iv := [BlockSize]byte(k.iv)
						dec.decrypt(&iv, dst, src)
						what := fmt.Sprintf("source at +%d, destination at +%d", so, do)
						check(what, dst, iv)
						if !intact(dstBuf, do) {
							t.Fatalf("%d bytes, %s: bytes next to the destination changed", n, what)
						}
						copy(dst, canaries)
					}
					if !bytes.Equal(src, ct) || !intact(srcBuf, so) {
						t.Fatalf("%d bytes, source at +%d: the source buffer changed", n, so)
					}
					iv := [BlockSize]byte(k.iv)
					dec.decrypt(&iv, src, src)
					check(fmt.Sprintf("in place at +%d", so), src, iv)
					if !intact(srcBuf, so) {
						t.Fatalf("%d bytes, in place at +%d: bytes next to the buffer changed", n, so)
					}
				}
			}
		})
	}
}

// TestKnownAnswersStreams decrypts openssl's ciphertext of every length with Decrypt,
// PlaintextSize and NewDecrypter (read into buffers at odd offsets and of odd sizes), on
// whatever kernel they pick.
func TestKnownAnswersStreams(t *testing.T) {
	k := readKAT(t)
	buf := make([]byte, 1000)
	for n := 0; n <= len(k.plain); n++ {
		ct := append(bytes.Clone(k.iv), k.ciphertext(n)...)
		got, err := Decrypt(ct, k.key)
		if err != nil || !bytes.Equal(got, k.plain[:n]) {
			t.Fatalf("Decrypt of %d bytes: %d bytes, %v", n, len(got), err)
		}
		size, err := PlaintextSize(bytes.NewReader(ct), int64(len(ct)), k.key)
		if err != nil || size != int64(n) {
			t.Fatalf("PlaintextSize of %d bytes = %d, %v", n, size, err)
		}
		d := NewDecrypter(bytes.NewReader(ct), k.key)
		var out []byte
		for i := 0; ; i++ {
			off := i % BlockSize
			m, err := d.Read(buf[off : off+1+(i*37)%(len(buf)-BlockSize)])
			out = append(out, buf[off:off+m]...)
			if err == io.EOF {
				break
			}
			if err != nil {
				t.Fatalf("NewDecrypter of %d bytes: %v", n, err)
			}
		}
		if !bytes.Equal(out, k.plain[:n]) {
			t.Fatalf("NewDecrypter of %d bytes: %d bytes that differ at %d", n, len(out), firstDiff(out, k.plain[:n]))
		}
	}
}

// TestKnownAnswersAreOpenSSLs checks the stored answers against the openssl command run now:
// the whole ciphertext, and the last block of the lengths around the block and file edges
// and of random ones. (Under qemu this runs the host's openssl, if there is one.)
func TestKnownAnswersAreOpenSSLs(t *testing.T) {
	k := readKAT(t)
	if full := opensslEnc(t, k.plain, k.key, k.iv); !bytes.Equal(full[BlockSize:], k.full) {
		t.Fatalf("openssl's ciphertext of the %d-byte plaintext is not the stored one", len(k.plain))
	}
	lengths := []int{0, 1, 15, 16, 17, 31, 32, 33, 4095, 4096, 4097, 4098, 4099}
	rng := rand.New(rand.NewPCG(7, 8))
	for range 20 {
		lengths = append(lengths, rng.IntN(len(k.plain)+1))
	}
	for _, n := range lengths {
		ct := opensslEnc(t, k.plain[:n], k.key, k.iv)[BlockSize:]
		if !bytes.Equal(ct, k.ciphertext(n)) {
			t.Errorf("%d bytes: openssl now gives another ciphertext than the stored one", n)
		}
	}
}

// TestAsmKernelInUse fails when the assembly kernel silently falls back to crypto/cipher:
// on amd64 (every CPU the tests run on has AES-NI), and on arm64 when
// AZAION_TEST_ARM64_AES=1 says the CPU (or qemu) has the AES instructions. Under the purego
// tag it checks the opposite.
func TestAsmKernelInUse(t *testing.T) {
	want := false
	switch {
	case testPurego:
	case runtime.GOARCH == "amd64":
		want = true
	case runtime.GOARCH == "arm64":
		want = os.Getenv("AZAION_TEST_ARM64_AES") == "1" || cpu.ARM64.HasAES
	}
	t.Logf("GOARCH %s, purego %v: kernel %q", runtime.GOARCH, testPurego, Kernel())
	if strings.Contains(Kernel(), "assembly") != want {
		t.Errorf("Kernel() = %q; want the assembly kernel: %v", Kernel(), want)
	}
	d := NewDecrypter(bytes.NewReader(encryptIV(plaintext(100), testKey, testIV)), testKey).(*decrypter)
	if d.kernel.asm() != want {
		t.Errorf("NewDecrypter uses the assembly kernel: %v, want %v", d.kernel.asm(), want)
	}
	if got, err := io.ReadAll(d); err != nil || !bytes.Equal(got, plaintext(100)) {
		t.Errorf("NewDecrypter: %d bytes, %v", len(got), err)
	}
}

// TestKernelRandom decrypts random ciphertexts (made by crypto/cipher from random plaintext,
// and random bytes that were never encrypted) under random keys and IVs, of random lengths
// up to 64 KiB at random offsets, and compares every kernel with crypto/cipher.
func TestKernelRandom(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	for i := range 300 {
		key, iv := randomBytes(rng, KeySize), randomBytes(rng, BlockSize)
		n := rng.IntN(64<<10/BlockSize+1) * BlockSize
		block, err := aes.NewCipher(key)
		if err != nil {
			t.Fatal(err)
		}
		ct := randomBytes(rng, n)
		var plain []byte
		if i%2 == 0 {
			plain = randomBytes(rng, n)
			cipher.NewCBCEncrypter(block, iv).CryptBlocks(ct, plain)
		} else {
			plain = make([]byte, n)
			cipher.NewCBCDecrypter(block, iv).CryptBlocks(plain, ct)
		}
		for _, tk := range testKernels(t, key) {
			dec := tk.kernel.decrypter()
			so, do := rng.IntN(64), rng.IntN(64)
			src := append(make([]byte, so), ct...)[so:]
			dst := make([]byte, do+n)[do:]
			civ := [BlockSize]byte(iv)
			dec.decrypt(&civ, dst, src)
			if !bytes.Equal(dst, plain) {
				t.Fatalf("%s, %d bytes: plaintext differs from crypto/cipher's at byte %d", tk.name, n, firstDiff(dst, plain))
			}
			if n > 0 && !bytes.Equal(civ[:], ct[n-BlockSize:]) {
				t.Fatalf("%s, %d bytes: the IV passed on is not the last ciphertext block", tk.name, n)
			}
		}
		// The exported BlockMode, in two calls: the second continues where the first ended.
		mode, err := NewCBCDecrypter(key, iv)
		if err != nil {
			t.Fatal(err)
		}
		got := make([]byte, n)
		half := n / 2 / BlockSize * BlockSize
		mode.CryptBlocks(got[:half], ct[:half])
		mode.CryptBlocks(got[half:], ct[half:])
		if !bytes.Equal(got, plain) || mode.BlockSize() != BlockSize {
			t.Fatalf("NewCBCDecrypter, %d bytes in two calls: plaintext differs at byte %d", n, firstDiff(got, plain))
		}
	}
}

// TestKernelMisuse: a partial block, a short destination and a shifted overlap panic, as in
// crypto/cipher, rather than read or write out of bounds.
func TestKernelMisuse(t *testing.T) {
	for _, tk := range testKernels(t, testKey) {
		dec := tk.kernel.decrypter()
		buf := make([]byte, 20*BlockSize)
		for _, c := range []struct {
			name     string
			dst, src []byte
		}{
			{"partial block", buf[:BlockSize+1], buf[:BlockSize+1]},
			{"short destination", make([]byte, BlockSize), buf[:2*BlockSize]},
			{"destination one block ahead", buf[BlockSize : 10*BlockSize], buf[:9*BlockSize]},
			{"destination one byte behind", buf[:9*BlockSize], buf[1 : 9*BlockSize+1]},
		} {
			func() {
				defer func() {
					if recover() == nil {
						t.Errorf("%s: %s did not panic", tk.name, c.name)
					}
				}()
				var iv [BlockSize]byte
				dec.decrypt(&iv, c.dst, c.src)
			}()
		}
	}
}

// seq returns 0, 1, ..., n-1.
func seq(n int) []int {
	s := make([]int, n)
	for i := range s {
		s[i] = i
	}
	return s
}

func allByte(b []byte, v byte) bool {
	return bytes.Count(b, []byte{v}) == len(b)
}
