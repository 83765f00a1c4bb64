package httpapi

import (
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"embed"
	"encoding/hex"
	"errors"
	"io"
	"io/fs"
	"mime"
	"net/http"
	"path"
	"strconv"
	"strings"
)

// docsFiles is GET /docs: the interactive API page FastAPI gave the seed's users, Swagger UI on
// GET /openapi.json, served from the binary since a device in the field has no internet. The
// Swagger UI files are vendored by scripts/vendor-swagger-ui.sh, gzipped.
//
//go:embed docs/index.html docs/init.js docs/swagger-ui
var docsFiles embed.FS

// errNoDocsFile: GET /docs/{file} of a file the page does not have (404).
var errNoDocsFile = errors.New("no such file of the API page")

// docsCSP lets the page load only its own files: no inline script, no other origin (Swagger UI
// sets inline styles and draws its icons as data: images).
const docsCSP = "default-src 'self'; script-src 'self'; style-src 'self' 'unsafe-inline'; " +
	"img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'none'"

func (s *Server) docsPage(w http.ResponseWriter, r *http.Request) error {
	return serveDocsFile(w, r, "docs/index.html")
}

func (s *Server) docsFile(w http.ResponseWriter, r *http.Request) error {
	name := r.PathValue("file")
	if name == "init.js" {
		return serveDocsFile(w, r, "docs/init.js")
	}
	return serveDocsFile(w, r, path.Join("docs/swagger-ui", path.Clean("/"+name)))
}

// serveDocsFile answers the embedded file name, or name.gz: as it is to a client that accepts
// gzip (every browser), else decompressed on the way.
func serveDocsFile(w http.ResponseWriter, r *http.Request, name string) error {
	ctype := mime.TypeByExtension(path.Ext(name))
	if ctype == "" {
		ctype = "text/plain; charset=utf-8" // LICENSE, NOTICE, VERSION
	}
	data, err := docsFiles.ReadFile(name)
	gzipped := false
	if errors.Is(err, fs.ErrNotExist) {
		data, err = docsFiles.ReadFile(name + ".gz")
		gzipped = true
	}
	if err != nil {
		return errNoDocsFile
	}
	h := w.Header()
	h.Set("Content-Type", ctype)
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Content-Security-Policy", docsCSP)
	h.Set("Cache-Control", "no-cache") // revalidated with the ETag below: a new binary, a new page
	h.Set("ETag", etag(data))
	if gzipped {
		h.Set("Vary", "Accept-Encoding")
	}
	if match := r.Header.Get("If-None-Match"); match != "" && match == h.Get("ETag") {
		w.WriteHeader(http.StatusNotModified)
		return nil
	}
	if gzipped && !acceptsGzip(r) {
		zr, err := gzip.NewReader(bytes.NewReader(data))
		if err != nil {
			return err
		}
		w.WriteHeader(http.StatusOK)
		_, err = io.Copy(w, zr)
		return err
	}
	if gzipped {
		h.Set("Content-Encoding", "gzip")
	}
	h.Set("Content-Length", strconv.Itoa(len(data)))
	w.WriteHeader(http.StatusOK)
	_, err = w.Write(data)
	return err
}

// etag names the content of an embedded file. The files are few and small: hashing one per
// request costs less than keeping a table in sync with them.
func etag(data []byte) string {
	sum := sha256.Sum256(data)
	return `"` + hex.EncodeToString(sum[:8]) + `"`
}

func acceptsGzip(r *http.Request) bool {
	for part := range strings.SplitSeq(r.Header.Get("Accept-Encoding"), ",") {
		coding, params, _ := strings.Cut(strings.TrimSpace(part), ";")
		if strings.EqualFold(strings.TrimSpace(coding), "gzip") && strings.ReplaceAll(params, " ", "") != "q=0" {
			return true
		}
	}
	return false
}
