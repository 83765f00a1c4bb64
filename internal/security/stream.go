package security

import (
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
)

// maxEmptyReads bounds how often a reader may return no data and no error before the streams
// give up with io.ErrNoProgress, as bufio does.
const maxEmptyReads = 100

// NewEncrypter returns a writer that encrypts what is written to it with key and writes
// IV ‖ CBC blocks to w as whole chunks fill up. Close pads and writes the final block; it
// does not close w. The IV is written with the first output, so nothing reaches w before the
// first chunk fills or Close is called. Errors from w are returned as they are.
func NewEncrypter(w io.Writer, key []byte) (io.WriteCloser, error) {
	block, err := newBlock(key)
	if err != nil {
		return nil, err
	}
	buf := make([]byte, BlockSize+chunkSize)
	if _, err := rand.Read(buf[:BlockSize]); err != nil {
		return nil, fmt.Errorf("security: random IV: %w", err)
	}
	return &encrypter{
		w:    w,
		mode: cipher.NewCBCEncrypter(block, buf[:BlockSize]),
		buf:  buf,
		data: buf[BlockSize:],
		head: BlockSize,
	}, nil
}

type encrypter struct {
	w    io.Writer
	mode cipher.BlockMode
	buf  []byte // IV ‖ data
	data []byte // buf[BlockSize:]: plaintext waiting for a whole chunk, encrypted in place
	n    int    // bytes of plaintext in data
	head int    // bytes before data still to be written: the IV until the first flush
	err  error  // sticky; errClosed after Close
}

var errClosed = errors.New("security: write to a closed encrypter")

func (e *encrypter) Write(p []byte) (int, error) {
	var nn int
	for len(p) > 0 && e.err == nil {
		if e.n == 0 && len(p) >= BlockSize {
			// Encrypt straight from p: saves a copy on large writes.
			k := min(len(p), chunkSize) &^ (BlockSize - 1)
			e.mode.CryptBlocks(e.data[:k], p[:k])
			e.flush(k)
			nn += k
			p = p[k:]
			continue
		}
		c := copy(e.data[e.n:], p)
		e.n += c
		nn += c
		p = p[c:]
		if e.n == len(e.data) {
			e.mode.CryptBlocks(e.data, e.data)
			e.flush(e.n)
			e.n = 0
		}
	}
	return nn, e.err
}

// flush writes the first k bytes of data, preceded by the IV the first time.
func (e *encrypter) flush(k int) {
	out := e.buf[BlockSize-e.head : BlockSize+k]
	if _, err := e.w.Write(out); err != nil {
		e.err = err
		return
	}
	e.head = 0
}

// Close pads the plaintext written so far and writes the last blocks. It does not close the
// underlying writer.
func (e *encrypter) Close() error {
	if e.err == errClosed {
		return nil
	}
	if e.err != nil {
		return e.err
	}
	// n < len(data) and len(data) is a multiple of BlockSize, so the padding fits.
	k := (e.n/BlockSize + 1) * BlockSize
	pad(e.data[e.n:k])
	e.mode.CryptBlocks(e.data[:k], e.data[:k])
	e.flush(k)
	clear(e.data)
	if e.err != nil {
		return e.err
	}
	e.err = errClosed
	return nil
}

// NewEncryptReader returns a reader of IV ‖ AES-256-CBC(PKCS#7(all of r)), encrypting as it is
// read, for streaming an upload of unknown length. Errors from r are returned as they are.
func NewEncryptReader(r io.Reader, key []byte) (io.Reader, error) {
	block, err := newBlock(key)
	if err != nil {
		return nil, err
	}
	// IV ‖ data, with a block to spare in data for the padding.
	buf := make([]byte, BlockSize+chunkSize+BlockSize)
	iv := buf[:BlockSize]
	if _, err := rand.Read(iv); err != nil {
		return nil, fmt.Errorf("security: random IV: %w", err)
	}
	return &encryptReader{
		r:    r,
		mode: cipher.NewCBCEncrypter(block, iv),
		data: buf[BlockSize:],
		out:  iv,
	}, nil
}

type encryptReader struct {
	r    io.Reader
	mode cipher.BlockMode
	data []byte // plaintext read, encrypted in place
	n    int    // bytes of data filled
	done int    // data[:done] is ciphertext (out is its unread tail); data[done:n] a partial block
	out  []byte // ciphertext not yet handed out
	err  error  // sticky; io.EOF after the last block
}

func (e *encryptReader) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(e.out) == 0 {
		if e.err != nil {
			return 0, e.err
		}
		e.fill()
	}
	n := copy(p, e.out)
	e.out = e.out[n:]
	return n, nil
}

// fill reads more plaintext and encrypts the whole blocks it completes.
func (e *encryptReader) fill() {
	e.n = copy(e.data, e.data[e.done:e.n])
	e.done = 0
	limit := len(e.data) - BlockSize
	for empty := 0; e.n < BlockSize || e.n < limit; {
		m, err := e.r.Read(e.data[e.n:limit])
		e.n += m
		if err == io.EOF {
			k := (e.n/BlockSize + 1) * BlockSize
			pad(e.data[e.n:k])
			e.encrypt(k)
			e.err = io.EOF
			return
		}
		if err != nil {
			e.err = err
			return
		}
		if m > 0 && e.n >= BlockSize {
			break // hand out what we have rather than wait for a full chunk
		}
		if m == 0 {
			if empty++; empty >= maxEmptyReads {
				e.err = io.ErrNoProgress
				return
			}
		}
	}
	e.encrypt(e.n &^ (BlockSize - 1))
}

func (e *encryptReader) encrypt(k int) {
	e.mode.CryptBlocks(e.data[:k], e.data[:k])
	e.done = k
	e.out = e.data[:k]
	if k > e.n {
		e.n = k
	}
}

// NewDecrypter returns a reader of the plaintext of IV ‖ AES-256-CBC(PKCS#7(plaintext)) read
// from r. It holds back the last block until r reports io.EOF and hands out none of it unless
// every padding byte is right. Errors wrap ErrTruncated (not IV plus whole blocks) or
// ErrWrongKey (bad padding); errors from r are returned as they are.
//
// Bytes before the last block are handed out as they are decrypted, before the padding can
// be checked: a consumer must not act on them until it has read to io.EOF.
//
// A large read from r is decrypted by up to GOMAXPROCS goroutines at once (CBC decryption
// has no chaining state, SPEC §4); they have all ended when the Read that started them
// returns, so an abandoned decrypter leaves nothing running. It keeps a buffer of about
// 512 KiB whatever the length of the data (64 KiB while the data is shorter).
func NewDecrypter(r io.Reader, key []byte) io.Reader {
	return newDecrypter(r, key, workers(), minPart)
}

// newDecrypter is NewDecrypter with the parallelism of cbcPool given, for tests.
func newDecrypter(r io.Reader, key []byte, workers, minPart int) *decrypter {
	kernel, err := newKernel(key, true)
	if err != nil {
		return &decrypter{err: err}
	}
	return &decrypter{r: r, kernel: kernel, workers: workers, minPart: minPart}
}

type decrypter struct {
	r       io.Reader
	kernel  *cbcKernel
	workers int             // for cbc
	minPart int             // for cbc
	cbc     *cbcPool        // allocated on first Read, with buf
	iv      [BlockSize]byte // the ciphertext block before buf[0]
	haveIV  bool
	buf     []byte // ciphertext, decrypted in place
	filled  bool   // a read filled buf: the stream is long enough for a full chunk
	n       int    // bytes of buf filled
	done    int    // buf[:done] is plaintext (out is its unread tail); buf[done:n] ciphertext
	total   int64  // bytes read from r, for the error message
	out     []byte // plaintext not yet handed out
	err     error  // sticky; io.EOF after the last block
}

func (d *decrypter) Read(p []byte) (int, error) {
	if len(p) == 0 {
		return 0, nil
	}
	for len(d.out) == 0 {
		if d.err != nil {
			return 0, d.err
		}
		d.fill()
	}
	n := copy(p, d.out)
	d.out = d.out[n:]
	return n, nil
}

// fill reads more ciphertext and decrypts all whole blocks but the last one read, which may
// be the final, padded block. A large read is decrypted by several goroutines at once (see
// cbcPool), all of which have ended when fill returns.
func (d *decrypter) fill() {
	switch {
	case d.buf == nil:
		// A short stream (a small file, a check of a small archive) should not cost a
		// full chunk: start small, and grow once the stream shows it is long.
		d.buf = make([]byte, firstChunkSize+BlockSize)
		d.cbc = newCBCPool(d.kernel, d.workers, d.minPart)
	case d.filled && len(d.buf) < decryptChunkSize+BlockSize:
		buf := make([]byte, decryptChunkSize+BlockSize)
		d.n = copy(buf, d.buf[d.done:d.n])
		d.buf, d.done = buf, 0
	}
	d.n = copy(d.buf, d.buf[d.done:d.n])
	d.done = 0
	for empty := 0; ; {
		m, err := d.r.Read(d.buf[d.n:])
		d.n += m
		d.total += int64(m)
		d.filled = d.filled || d.n == len(d.buf)
		if !d.haveIV && d.n >= BlockSize {
			copy(d.iv[:], d.buf)
			d.haveIV = true
			d.n = copy(d.buf, d.buf[BlockSize:d.n])
		}
		if err == io.EOF {
			d.finish()
			return
		}
		if k := (d.n/BlockSize - 1) * BlockSize; k > 0 && d.haveIV {
			d.cbc.decrypt(&d.iv, d.buf[:k])
			d.done = k
			d.out = d.buf[:k]
		}
		if err != nil {
			d.err = err
			return
		}
		if d.done > 0 {
			return
		}
		if m == 0 {
			if empty++; empty >= maxEmptyReads {
				d.err = io.ErrNoProgress
				return
			}
		}
	}
}

// finish decrypts what is left at EOF and checks the padding of the last block.
func (d *decrypter) finish() {
	if err := checkLength(d.total); err != nil {
		d.err = err
		return
	}
	d.cbc.decrypt(&d.iv, d.buf[:d.n])
	last := d.n - BlockSize
	n, ok := unpad(d.buf[last:d.n])
	if !ok {
		// The blocks before the last are handed out as usual; the bad one never is.
		clear(d.buf[last:d.n])
		d.out = d.buf[:last]
		d.err = errPadding
		return
	}
	d.out = d.buf[:d.n-n]
	d.err = io.EOF
}

// PlaintextSize returns the exact plaintext length of the size bytes of ciphertext in ra,
// reading and decrypting only the last two blocks. Like Decrypt it checks every padding byte.
func PlaintextSize(ra io.ReaderAt, size int64, key []byte) (int64, error) {
	kernel, err := newKernel(key, true)
	if err != nil {
		return 0, err
	}
	if err := checkLength(size); err != nil {
		return 0, err
	}
	var tail [2 * BlockSize]byte
	m, err := ra.ReadAt(tail[:], size-2*BlockSize)
	if m < len(tail) {
		if err == io.EOF || err == nil {
			return 0, fmt.Errorf("security: ciphertext ends before its stated %d bytes: %w", size, ErrTruncated)
		}
		return 0, fmt.Errorf("security: read last blocks: %w", err)
	}
	prev, last := [BlockSize]byte(tail[:BlockSize]), tail[BlockSize:]
	dec := kernel.decrypter()
	dec.decrypt(&prev, last, last)
	n, ok := unpad(last)
	clear(last)
	if !ok {
		return 0, errPadding
	}
	return size - BlockSize - int64(n), nil
}
