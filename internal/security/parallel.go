package security

import (
	"runtime"
	"sync"
	"sync/atomic"
)

// Parallel CBC decryption (SPEC §4): plaintext block i is AES-decrypt(C[i]) XOR C[i-1], with
// no state carried from one block to the next, so a run of blocks can be cut into parts that
// are decrypted at the same time, each with the ciphertext block before it as its IV.
// The kernel (kernel.go) keeps several blocks in flight on one core; the pool multiplies it
// by the cores.

// decryptChunkSize is how much ciphertext NewDecrypter reads and decrypts per step: large
// enough to split among maxWorkers cores with every part well above minPart.
const decryptChunkSize = 512 << 10

// firstChunkSize is the chunk a decryption starts with, until a read fills it.
const firstChunkSize = 64 << 10

// maxWorkers caps how many goroutines decrypt one chunk.
const maxWorkers = 8

// minPart is the least ciphertext worth a piece of its own (see cbcPool); below it, handing
// out pieces and waking goroutines is no longer negligible against the AES work.
const minPart = 32 << 10

// workers is how many goroutines a decryption may use.
func workers() int {
	return max(1, min(runtime.GOMAXPROCS(0), maxWorkers))
}

// maxPieces bounds how many pieces one decrypt call is cut into.
const maxPieces = 64

// cbcPool decrypts CBC ciphertext in place with up to len(workers) goroutines. The data is
// cut into pieces of at least minPart bytes (at most maxPieces of them) that the goroutines
// take in turn, so a goroutine that starts late, or a core that is busy with something else,
// only means fewer pieces for it rather than everyone waiting for its fixed share. The goroutines live only for one call
// of decrypt, so nothing outlives the Read that calls it and nothing needs stopping.
// Everything is allocated up front: a call allocates nothing.
type cbcPool struct {
	minPart int // minPart but in tests, which cut small inputs into many pieces
	wg      sync.WaitGroup
	workers []cbcWorker

	// Set up by decrypt before any goroutine starts, read-only while they run.
	data     []byte
	pieceLen int // bytes; a multiple of BlockSize, the last piece may be shorter
	pieces   int
	ivs      [maxPieces][BlockSize]byte // ivs[i] is the ciphertext block before piece i
	next     atomic.Int32               // the next piece to take
}

// cbcWorker is what one goroutine of a cbcPool needs.
type cbcWorker struct {
	dec cbcDecrypter
	// run is the body of the goroutine, made once: `go w.run()` then allocates nothing,
	// where a fresh closure per chunk would make allocations grow with the input.
	run func()
}

func newCBCPool(kernel *cbcKernel, workers, minPart int) *cbcPool {
	p := &cbcPool{minPart: max(minPart, BlockSize), workers: make([]cbcWorker, max(workers, 1))}
	for i := range p.workers {
		w := &p.workers[i]
		w.dec = kernel.decrypter()
		w.run = func() {
			defer p.wg.Done()
			p.work(w)
		}
	}
	return p
}

// work decrypts pieces until none is left.
func (p *cbcPool) work(w *cbcWorker) {
	for {
		i := int(p.next.Add(1)) - 1
		if i >= p.pieces {
			return
		}
		start := i * p.pieceLen
		piece := p.data[start:min(start+p.pieceLen, len(p.data))]
		w.dec.decrypt(&p.ivs[i], piece, piece)
	}
}

// decrypt decrypts data, whole blocks that follow the ciphertext block iv, in place and sets
// iv to the last ciphertext block of data, the IV of whatever follows.
func (p *cbcPool) decrypt(iv *[BlockSize]byte, data []byte) {
	if len(data) == 0 {
		return
	}
	pieces := min(maxPieces, len(data)/p.minPart)
	n := min(len(p.workers), pieces)
	if n <= 1 {
		p.workers[0].dec.decrypt(iv, data, data)
		return
	}
	blocks := len(data) / BlockSize
	p.pieceLen = (blocks + pieces - 1) / pieces * BlockSize
	p.pieces = (len(data) + p.pieceLen - 1) / p.pieceLen
	p.data = data
	p.next.Store(0)
	// Every piece's IV is ciphertext that the piece before it overwrites: copy them all first.
	p.ivs[0] = *iv
	for i := 1; i < p.pieces; i++ {
		copy(p.ivs[i][:], data[i*p.pieceLen-BlockSize:])
	}
	copy(iv[:], data[len(data)-BlockSize:])
	p.wg.Add(n - 1)
	for i := 1; i < n; i++ {
		go p.workers[i].run()
	}
	p.work(&p.workers[0])
	p.wg.Wait()
	p.data = nil
}
