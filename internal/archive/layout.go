package archive

// What docker save writes, and how the names of its files come from their digests. Two
// layouts exist:
//
//   - Docker 1.10 to 24: manifest.json, repositories, <config sha256>.json, and per layer a
//     directory <v1 id>/ with VERSION, json and layer.tar (or a symlink to another layer.tar).
//   - Docker 25 and later (OCI image layout): manifest.json, repositories, index.json,
//     oci-layout and blobs/sha256/<sha256>, where every file's name is its own digest
//     (oci.go checks the files of the OCI layout).

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"strings"
)

// manifestItem is one image in manifest.json.
type manifestItem struct {
	Config       string
	RepoTags     []string
	Layers       []string
	Parent       string                     `json:",omitempty"`
	LayerSources map[string]json.RawMessage `json:",omitempty"`
}

// imageConfig is what the checks read of an image config.
type imageConfig struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
	Variant      string `json:"variant"`
	RootFS       struct {
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// strictJSON decodes data into v refusing unknown fields and anything after the value. It is
// used for the files no digest covers (manifest.json, repositories, index.json, oci-layout),
// which docker writes in printable ASCII: a damaged block of 16 random bytes is not.
func strictJSON(data []byte, v any) error {
	if data == nil {
		return fmt.Errorf("not JSON")
	}
	if !printable(data) {
		return fmt.Errorf("not printable ASCII")
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return err
	}
	if rest := bytes.TrimSpace(data[dec.InputOffset():]); len(rest) > 0 {
		return fmt.Errorf("%d bytes after the JSON value", len(rest))
	}
	return nil
}

// metaFile reports whether name is a docker save file the checks read by its name.
func metaFile(name string) bool {
	switch name {
	case "manifest.json", "repositories", "index.json", "oci-layout":
		return true
	}
	if h, ok := strings.CutSuffix(name, ".json"); ok && isHex64(h) {
		return true
	}
	dir, file := path.Split(name)
	return isHex64(strings.TrimSuffix(dir, "/")) && (file == "json" || file == "VERSION")
}

// isBlob reports whether name is an OCI layout blob, blobs/sha256/<hex>.
func isBlob(name string) bool {
	h, ok := strings.CutPrefix(name, "blobs/sha256/")
	return ok && isHex64(h)
}

// digestInPath returns the SHA-256 a file's path names: blobs/sha256/<hex> or <hex>.json.
func digestInPath(p string) (string, bool) {
	if h, ok := strings.CutPrefix(p, "blobs/sha256/"); ok && isHex64(h) {
		return h, true
	}
	if h, ok := strings.CutSuffix(p, ".json"); ok && isHex64(h) {
		return h, true
	}
	return "", false
}

// topLayerID is the ID repositories gives an image: its top layer's directory (legacy) or
// blob name (OCI).
func topLayerID(layer string) string {
	if dir, ok := strings.CutSuffix(layer, "/layer.tar"); ok {
		return dir
	}
	return path.Base(layer)
}

// chainID is the chain ID of a layer with diff ID diff on top of the chain parent (OCI
// image-spec: the first layer's is its diff ID).
func chainID(parent, diff string) string {
	if parent == "" {
		return diff
	}
	sum := sha256.Sum256([]byte(parent + " " + diff))
	return "sha256:" + hex.EncodeToString(sum[:])
}

// familiar shortens a full image name as docker shows it: docker.io/library/x:t is x:t.
func familiar(name string) string {
	if rest, ok := strings.CutPrefix(name, "docker.io/"); ok {
		if short, ok := strings.CutPrefix(rest, "library/"); ok && !strings.Contains(short, "/") {
			return short
		}
		return rest
	}
	return name
}

// imageName names an image in messages: its first tag, or its config.
func imageName(it *manifestItem) string {
	if len(it.RepoTags) > 0 {
		return it.RepoTags[0]
	}
	return it.Config
}

func isHex64(s string) bool {
	if len(s) != 64 {
		return false
	}
	for _, c := range []byte(s) {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

func sha256Digest(sum [32]byte) string { return "sha256:" + hex.EncodeToString(sum[:]) }

func jsonString(s string) json.RawMessage {
	b, _ := json.Marshal(s)
	return b
}
