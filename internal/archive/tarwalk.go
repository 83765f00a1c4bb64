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

// The tar side of the check: every byte of the stream is accounted for. archive/tar parses
// the headers (and checks their checksums) but skips the padding after an entry's data and
// accepts anything after the end-of-archive blocks; a flipped byte there would go unnoticed.
// So the walker tracks where each entry's data ends, records the bytes archive/tar reads
// between two entries and checks that they are what a tar writer writes there: zeros up to
// the next 512-byte block, header blocks (PAX or GNU extension headers with their data,
// zero-padded), then the entry's header; and after the last entry, zeros to the very end.

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

// headerError explains why archive/tar refused the header after offset at.
func (w *walk) headerError(at int64, err error) error {
	tarErr := errors.Is(err, tar.ErrHeader) || errors.Is(err, tar.ErrFieldTooLong) || errors.Is(err, tar.ErrInsecurePath)
	if !tarErr && !isTruncation(err) {
		return err // a read error (the decrypter's, the context's) as it is
	}
	if len(w.order) == 0 && !plausibleHeader(w.pr.rec) {
		return errNoTar
	}
	if isTruncation(err) {
		return fmt.Errorf("%w: the tar ends inside the header after offset %d", ErrTruncated, at)
	}
	if pad := int(-at & (blockSize - 1)); len(w.pr.rec) >= pad+blockSize {
		// A block of nearly all zeros where a header should be is a damaged end-of-archive
		// block (a header has far fewer zeros); so is a zero block followed by a bad one.
		first := w.pr.rec[pad : pad+blockSize]
		if bytes.Count(first, []byte{0}) > 400 || allZero(first) {
			return fmt.Errorf("%w: the tar's end-of-archive blocks (offset %d) are not all zero", ErrCorrupt, at+int64(pad))
		}
	}
	return fmt.Errorf("%w: invalid tar header after offset %d: %v", ErrCorrupt, at, err)
}

// errNoTar: the data does not start with a tar header, not even a damaged one.
var errNoTar = fmt.Errorf("%w: the data does not start with a tar header", ErrNotDockerSave)

// plausibleHeader reports whether the block b looks like a tar header that was damaged
// rather than like no tar at all: a flipped byte of the archive garbles 16 bytes of it, and
// leaves at least one of these intact, which random data has no chance of matching.
// A tar cut short keeps what it has of them.
func plausibleHeader(b []byte) bool {
	if len(b) >= 262 && bytes.Equal(b[257:262], []byte("ustar")) {
		return true
	}
	for _, f := range [][2]int{{100, 108}, {124, 136}, {136, 148}, {148, 156}} { // mode, size, mtime, checksum
		if len(b) < f[1] {
			break
		}
		field := b[f[0]:f[1]]
		if _, ok := octal(field); ok && field[0] != 0 && (field[len(field)-1] == 0 || field[len(field)-1] == ' ') {
			return true
		}
	}
	return false
}

// isTruncation reports whether a read error means the stream ended early.
func isTruncation(err error) bool {
	return errors.Is(err, io.ErrUnexpectedEOF)
}

// checkWindow checks the bytes archive/tar read from dataEnd up to the data of hdr: the
// previous entry's padding, then extension headers, then hdr's own header block.
func (w *walk) checkWindow(dataEnd int64, hdr *tar.Header) error {
	win := w.pr.rec
	pad := int(-dataEnd & (blockSize - 1))
	if len(win) < pad+blockSize || (len(win)-pad)%blockSize != 0 {
		return fmt.Errorf("%w: tar headers after offset %d are not whole blocks", ErrCorrupt, dataEnd)
	}
	if !allZero(win[:pad]) {
		return fmt.Errorf("%w: the padding after the tar entry ending at offset %d is not zero", ErrCorrupt, dataEnd)
	}
	at := dataEnd + int64(pad)
	for blocks := win[pad:]; ; {
		h := blocks[:blockSize]
		blocks = blocks[blockSize:]
		if !checksumOK(h) || !fieldsOK(h) {
			return fmt.Errorf("%w: the tar header at offset %d is damaged", ErrCorrupt, at)
		}
		switch h[156] {
		case tar.TypeXHeader, tar.TypeXGlobalHeader, tar.TypeGNULongName, tar.TypeGNULongLink:
			size, ok := octal(h[124:136])
			if !ok || size > int64(len(blocks)) {
				return fmt.Errorf("%w: extension header at offset %d has a bad size", ErrCorrupt, at)
			}
			data := (size + blockSize - 1) / blockSize * blockSize
			if int64(len(blocks)) < data || !allZero(blocks[size:data]) {
				return fmt.Errorf("%w: the padding of the extension header at offset %d is not zero", ErrCorrupt, at)
			}
			// No checksum covers an extension header's data; docker writes it in printable
			// ASCII, which a damaged block of 16 random bytes is not.
			if h[156] == tar.TypeXHeader || h[156] == tar.TypeXGlobalHeader {
				if !printable(blocks[:size]) {
					return fmt.Errorf("%w: the PAX header at offset %d is not printable ASCII", ErrCorrupt, at)
				}
			}
			blocks = blocks[data:]
			at += blockSize + data
			if len(blocks) == 0 {
				return fmt.Errorf("%w: extension header at offset %d is not followed by an entry", ErrCorrupt, at)
			}
		default:
			if len(blocks) != 0 {
				// e.g. old GNU sparse maps: no docker save writes them.
				return fmt.Errorf("%w: entry %q at offset %d has header blocks this check does not know", ErrNotDockerSave, hdr.Name, at)
			}
			return nil
		}
	}
}

// checksumOK checks a header block's checksum as POSIX defines it and Go writes it: the
// unsigned sum of its bytes, the checksum field counted as spaces. archive/tar also accepts
// the signed sum that some old tars wrote, which lets one garbled block in 740 or so through.
func checksumOK(h []byte) bool {
	want, ok := octal(h[148:156])
	if !ok {
		return false
	}
	var sum int64
	for i, c := range h {
		if i >= 148 && i < 156 {
			c = ' '
		}
		sum += int64(c)
	}
	return sum == want
}

// fieldsOK checks the parts of a header block that archive/tar reads loosely or not at all:
// the magic, and the text fields (name, link name, user and group names, USTAR's prefix),
// which a tar writer fills with printable ASCII (for docker's names) and then NULs. A garbled
// block could otherwise hide in a field archive/tar ignores and only the checksum, a plain
// sum, would stand in its way.
func fieldsOK(h []byte) bool {
	text := func(f []byte) bool {
		n := bytes.IndexByte(f, 0)
		if n < 0 {
			n = len(f)
		}
		return printableASCII(f[:n]) && allZero(f[n:])
	}
	ok := text(h[0:100]) && text(h[157:257]) && text(h[265:297]) && text(h[297:329]) &&
		(h[156] == 0 || printableASCII(h[156:157]))
	switch string(h[257:265]) {
	case "ustar\x0000": // USTAR and PAX
		return ok && text(h[345:500]) && allZero(h[500:])
	case "ustar  \x00": // GNU: the rest holds GNU fields
		return ok
	}
	return false
}

// checkEnd checks what archive/tar read after the last entry's data: its padding and the
// two zero blocks that end a tar.
func (w *walk) checkEnd(dataEnd int64) error {
	win := w.pr.rec
	pad := int(-dataEnd & (blockSize - 1))
	if !allZero(win) {
		return fmt.Errorf("%w: non-zero bytes after the tar's last entry (offset %d)", ErrCorrupt, dataEnd)
	}
	if len(win) < pad+2*blockSize {
		return fmt.Errorf("%w: the tar lacks its end-of-archive blocks (it ends at offset %d)", ErrTruncated, dataEnd+int64(len(win)))
	}
	return nil
}

// drainZeros reads the rest of the stream, which a tar writer fills with zeros if anything.
func (w *walk) drainZeros() error {
	for {
		start := w.pr.pos
		n, err := w.pr.Read(w.buf)
		if !allZero(w.buf[:n]) {
			i := bytes.IndexFunc(w.buf[:n], func(r rune) bool { return r != 0 })
			return fmt.Errorf("%w: non-zero byte after the tar's end-of-archive blocks (offset %d)", ErrCorrupt, start+int64(max(i, 0)))
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
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

// printable reports whether b is printable ASCII and newlines, as the JSON and PAX data
// docker writes are.
func printable(b []byte) bool {
	for _, c := range b {
		if (c < 0x20 || c > 0x7e) && c != '\n' {
			return false
		}
	}
	return true
}

// printableASCII reports whether b is printable ASCII, without newlines.
func printableASCII(b []byte) bool {
	for _, c := range b {
		if c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// onlyReader hides a reader's WriteTo, so io.CopyBuffer uses the buffer given.
type onlyReader struct{ io.Reader }

func allZero(b []byte) bool {
	for len(b) >= 8 {
		if b[0]|b[1]|b[2]|b[3]|b[4]|b[5]|b[6]|b[7] != 0 {
			return false
		}
		b = b[8:]
	}
	for _, c := range b {
		if c != 0 {
			return false
		}
	}
	return true
}

// octal parses a tar numeric field: octal digits, padded with spaces or NULs.
func octal(f []byte) (int64, bool) {
	s := strings.Trim(string(f), " \x00")
	if s == "" {
		return 0, true
	}
	var n int64
	for _, c := range []byte(s) {
		if c < '0' || c > '7' || n > 1<<40 {
			return 0, false
		}
		n = n*8 + int64(c-'0')
	}
	return n, true
}

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
