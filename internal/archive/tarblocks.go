package archive

// The bytes of a tar stream outside the entries' data, checked block by block: archive/tar
// parses the headers (and checks their checksums) but skips the padding after an entry's data
// and accepts anything after the end-of-archive blocks, so a flipped byte there would go
// unnoticed. What a tar writer writes between two entries: zeros up to the next 512-byte
// block, header blocks (PAX or GNU extension headers with their data, zero-padded), then the
// entry's header; and after the last entry, zeros to the very end.

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"strings"
)

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
