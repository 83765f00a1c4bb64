package archive

import (
	"archive/tar"
	"bufio"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"path"
	"strings"

	"github.com/azaion/loader/internal/streams"
)

// The tar side of the check: every byte of the stream is accounted for. The walker hashes
// every regular file, keeps the JSON files the docker save checks read, tracks where each
// entry's data ends and records the bytes archive/tar reads between two entries, which
// tarblocks.go checks are what a tar writer writes there.

const blockSize = 512

// Limits that keep the memory bounded whatever the archive holds.
const (
	maxWindow   = 2<<20 + blockSize // extension headers between two entries (archive/tar allows 1 MiB each)
	maxMetaFile = 16 << 20          // one JSON file kept for the docker save checks
	maxMetaAll  = 64 << 20          // all of them together
)

// entry is what the walk keeps of one tar entry.
type entry struct {
	name     string // cleaned, no trailing slash
	typ      byte   // tar.TypeReg, TypeDir, TypeSymlink or TypeLink
	link     string // symlink or hard link target as written
	size     int64
	offset   int64     // of its data in the tar, for messages
	sum      [32]byte  // SHA-256 of the data
	unzipped *[32]byte // SHA-256 of the data gunzipped, when it is gzip (a compressed layer)
	data     []byte    // the data, kept for the JSON files the docker save checks read
	used     bool      // read or checked by a docker save check
	checked  bool      // checked against a digest
}

// walk is the state of one walk through a tar stream.
type walk struct {
	pr       posReader
	entries  map[string]*entry
	order    []*entry
	metaSize int
	buf      []byte        // for hashing
	br       *bufio.Reader // over the current entry's data
	ended    bool          // the end-of-archive blocks were read
}

// posReader counts what is read through it and, while recording, keeps a copy.
type posReader struct {
	r         io.Reader
	pos       int64
	recording bool
	rec       []byte
	overflow  bool
}

func (p *posReader) Read(b []byte) (int, error) {
	n, err := p.r.Read(b)
	if p.recording && n > 0 {
		if len(p.rec)+n > maxWindow {
			p.overflow = true
		} else {
			p.rec = append(p.rec, b[:n]...)
		}
	}
	p.pos += int64(n)
	return n, err
}

// readTar walks the tar stream read from r to its end, hashing every regular file.
func readTar(r io.Reader) (*walk, error) {
	w := &walk{pr: posReader{r: r}, entries: make(map[string]*entry), buf: make([]byte, 64<<10), br: bufio.NewReaderSize(nil, 16<<10)}
	tr := tar.NewReader(&w.pr)
	var dataEnd int64
	for {
		w.pr.recording, w.pr.rec, w.pr.overflow = true, w.pr.rec[:0], false
		hdr, err := tr.Next()
		w.pr.recording = false
		if w.pr.overflow {
			return w, fmt.Errorf("%w: more than %d bytes of tar headers before the entry at offset %d", ErrNotDockerSave, maxWindow, dataEnd)
		}
		if err == io.EOF {
			if err := w.checkEnd(dataEnd); err != nil {
				return w, err
			}
			w.ended = true
			return w, w.drainZeros()
		}
		if err != nil {
			return w, w.headerError(dataEnd, err)
		}
		if err := w.checkWindow(dataEnd, hdr); err != nil {
			return w, err
		}
		e, err := w.add(hdr)
		if err != nil {
			return w, err
		}
		if hdr.Typeflag == tar.TypeReg {
			if err := w.readData(tr, e); err != nil {
				return w, err
			}
		}
		dataEnd = w.pr.pos
	}
}

// isTruncation reports whether a read error means the stream ended early.
func isTruncation(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF)
}

// add records the entry of hdr; only what docker save writes is accepted.
func (w *walk) add(hdr *tar.Header) (*entry, error) {
	if !printableASCII([]byte(hdr.Name)) || !printableASCII([]byte(hdr.Linkname)) {
		// docker names everything in ASCII; a garbled block of a header is not.
		return nil, fmt.Errorf("%w: the tar header of the entry at offset %d names %q", ErrCorrupt, w.pr.pos, hdr.Name)
	}
	name := strings.TrimSuffix(hdr.Name, "/")
	if name == "" || !localPath(name) || name != path.Clean(name) {
		return nil, fmt.Errorf("%w: entry name %q", ErrNotDockerSave, hdr.Name)
	}
	switch hdr.Typeflag {
	case tar.TypeReg, tar.TypeDir, tar.TypeSymlink, tar.TypeLink:
	default:
		return nil, fmt.Errorf("%w: entry %q is of tar type %q", ErrNotDockerSave, hdr.Name, hdr.Typeflag)
	}
	if _, dup := w.entries[name]; dup {
		return nil, fmt.Errorf("%w: entry %q appears twice", ErrNotDockerSave, name)
	}
	e := &entry{name: name, typ: hdr.Typeflag, link: hdr.Linkname, size: hdr.Size, offset: w.pr.pos}
	w.entries[name] = e
	w.order = append(w.order, e)
	return e, nil
}

// readData reads the data of a regular file into its SHA-256 (and, when it is gzip, the
// SHA-256 of what it inflates to), keeping the data of the JSON files the checks read: the
// metadata files docker save writes by name, and blobs that start like JSON (configs, OCI
// manifests, legacy layer JSON), within the memory limits.
func (w *walk) readData(tr *tar.Reader, e *entry) error {
	h := sha256.New()
	src := streams.RecordErr(tr)
	br := w.br
	br.Reset(io.TeeReader(src, h))
	magic, _ := br.Peek(3)
	keep := metaFile(e.name)
	if keep && e.size > maxMetaFile {
		return fmt.Errorf("%w: %s is %d bytes, too large for a docker save metadata file", ErrNotDockerSave, e.name, e.size)
	}
	if !keep && isBlob(e.name) && len(magic) > 0 && magic[0] == '{' && e.size <= maxMetaFile {
		keep = true
	}
	if keep && w.metaSize+int(e.size) > maxMetaAll {
		return fmt.Errorf("%w: more than %d bytes of JSON files", ErrNotDockerSave, maxMetaAll)
	}
	var err error
	switch {
	case keep:
		var data bytes.Buffer
		data.Grow(int(e.size))
		_, err = io.CopyBuffer(&data, onlyReader{br}, w.buf)
		e.data = data.Bytes()
		w.metaSize += len(e.data)
	case bytes.Equal(magic, []byte{0x1f, 0x8b, 8}):
		w.gunzipSum(br, e)
		_, err = io.CopyBuffer(io.Discard, onlyReader{br}, w.buf) // what did not inflate
	default:
		_, err = io.CopyBuffer(io.Discard, onlyReader{br}, w.buf)
	}
	if src.Err() != nil {
		err = src.Err() // the tar's or the decrypter's, not a gzip format error
	}
	if err != nil {
		if isTruncation(err) {
			return fmt.Errorf("%w: the tar ends inside %s (%d bytes at offset %d)", ErrTruncated, e.name, e.size, e.offset)
		}
		return err
	}
	copy(e.sum[:], h.Sum(nil))
	return nil
}

// gunzipSum records in e the SHA-256 of what the gzip data in br inflates to, if it
// inflates cleanly. A read error from below is left for readData to find in its error record.
func (w *walk) gunzipSum(br *bufio.Reader, e *entry) {
	zr, err := gzip.NewReader(br)
	if err != nil {
		return
	}
	dh := sha256.New()
	if _, err := io.CopyBuffer(dh, zr, w.buf); err == nil {
		e.unzipped = new([32]byte)
		copy(e.unzipped[:], dh.Sum(nil))
	}
}

// onlyReader hides a reader's WriteTo, so io.CopyBuffer uses the buffer given.
type onlyReader struct{ io.Reader }

// localPath reports whether name stays inside the archive's root.
func localPath(name string) bool {
	if strings.HasPrefix(name, "/") || strings.Contains(name, "\\") {
		return false
	}
	for _, part := range strings.Split(name, "/") {
		if part == ".." || part == "." || part == "" {
			return false
		}
	}
	return true
}
