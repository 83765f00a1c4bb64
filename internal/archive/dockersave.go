package archive

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// The docker save side of the check. Two layouts exist:
//
//   - Docker 1.10 to 24: manifest.json, repositories, <config sha256>.json, and per layer a
//     directory <v1 id>/ with VERSION, json and layer.tar (or a symlink to another layer.tar).
//   - Docker 25 and later (OCI image layout): manifest.json, repositories, index.json,
//     oci-layout and blobs/sha256/<sha256>, where every file's name is its own digest.
//
// Every file is accounted for: a blob by its name; a config by its name (its SHA-256); a
// layer by the config's rootfs.diff_ids (the SHA-256 of the layer tar, after gunzip for a
// compressed blob); a legacy layer's json by its directory name, which docker derives from
// that json, the layer's chain ID and its parent (checkV1ID); manifest.json, repositories,
// index.json and oci-layout by what they must agree on with each other and with the
// digest-checked files. Anything else is not something docker save writes.

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
		Type    string   `json:"type"`
		DiffIDs []string `json:"diff_ids"`
	} `json:"rootfs"`
}

// ociDescriptor, ociPlatform, ociIndex and ociManifest are the OCI image-spec structures
// (all their fields, so that a strict decode refuses a damaged key).
type ociDescriptor struct {
	MediaType    string            `json:"mediaType"`
	Digest       string            `json:"digest"`
	Size         int64             `json:"size"`
	URLs         []string          `json:"urls,omitempty"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	Data         []byte            `json:"data,omitempty"`
	Platform     *ociPlatform      `json:"platform,omitempty"`
	ArtifactType string            `json:"artifactType,omitempty"`
}

type ociPlatform struct {
	Architecture string   `json:"architecture"`
	OS           string   `json:"os"`
	OSVersion    string   `json:"os.version,omitempty"`
	OSFeatures   []string `json:"os.features,omitempty"`
	Variant      string   `json:"variant,omitempty"`
	Features     []string `json:"features,omitempty"`
}

type ociIndex struct {
	SchemaVersion int               `json:"schemaVersion"`
	MediaType     string            `json:"mediaType,omitempty"`
	ArtifactType  string            `json:"artifactType,omitempty"`
	Manifests     []ociDescriptor   `json:"manifests"`
	Subject       *ociDescriptor    `json:"subject,omitempty"`
	Annotations   map[string]string `json:"annotations,omitempty"`
}

type ociManifest struct {
	MediaType string        `json:"mediaType"`
	Config    ociDescriptor `json:"config"`
}

// Annotations docker writes into index.json (containerd's image name, OCI's ref name).
const (
	annotationImageName = "io.containerd.image.name"
	annotationRefName   = "org.opencontainers.image.ref.name"
)

// checker runs the docker save checks over a finished walk.
type checker struct {
	w           *walk
	items       []manifestItem
	images      []Image
	configs     map[string]*imageConfig // by image ID, "sha256:<hex>"
	itemConfigs []*imageConfig          // by manifest item
}

func checkDockerSave(w *walk) (*Report, error) {
	c := &checker{w: w, configs: make(map[string]*imageConfig)}
	m := w.entries["manifest.json"]
	if m == nil || m.typ != tar.TypeReg {
		return nil, fmt.Errorf("%w: the tar has no manifest.json", ErrNotDockerSave)
	}
	m.used = true
	if !printable(m.data) || !json.Valid(m.data) {
		return nil, fmt.Errorf("%w: manifest.json is not printable JSON", ErrCorrupt)
	}
	if err := strictJSON(m.data, &c.items); err != nil {
		return nil, fmt.Errorf("%w: manifest.json is not a list of images: %v", ErrNotDockerSave, err)
	}
	if len(c.items) == 0 {
		return nil, fmt.Errorf("%w: manifest.json lists no image", ErrNotDockerSave)
	}
	for i := range c.items {
		if err := c.checkImage(&c.items[i]); err != nil {
			return nil, err
		}
	}
	for _, step := range []func() error{c.checkParents, c.checkNamedFiles, c.checkRepositories, c.checkOCI, c.checkAllUsed} {
		if err := step(); err != nil {
			return nil, err
		}
	}
	layout := "docker (1.10 to 24)"
	if w.entries["index.json"] != nil {
		layout = "OCI (docker 25 and later)"
	}
	checked := 0
	for _, e := range w.order {
		if e.checked {
			checked++
		}
	}
	return &Report{Images: c.images, Layout: layout, Checked: checked}, nil
}

// checkImage checks one manifest.json item: its config against its name, its layers against
// the config, and the legacy json of each layer directory.
func (c *checker) checkImage(it *manifestItem) error {
	name := imageName(it)
	want, ok := digestInPath(it.Config)
	if !ok {
		return fmt.Errorf("%w: image %s: config path %q does not name a SHA-256", ErrNotDockerSave, name, it.Config)
	}
	cfgEntry, err := c.resolve(it.Config, "config of image "+name)
	if err != nil {
		return err
	}
	if hex.EncodeToString(cfgEntry.sum[:]) != want {
		return fmt.Errorf("%w: the config of image %s (%s) does not match its SHA-256", ErrCorrupt, name, it.Config)
	}
	cfgEntry.checked = true
	var cfg imageConfig
	if cfgEntry.data == nil || json.Unmarshal(cfgEntry.data, &cfg) != nil {
		return fmt.Errorf("%w: the config of image %s (%s) is not an image config", ErrNotDockerSave, name, it.Config)
	}
	c.configs["sha256:"+want] = &cfg
	c.itemConfigs = append(c.itemConfigs, &cfg)
	diffs := cfg.RootFS.DiffIDs
	if len(diffs) != len(it.Layers) {
		return fmt.Errorf("%w: manifest.json lists %d layers for image %s, its config %d", ErrCorrupt, len(it.Layers), name, len(diffs))
	}
	for d := range it.LayerSources {
		if !slices.Contains(diffs, d) {
			return fmt.Errorf("%w: manifest.json names a layer source %q that image %s does not have", ErrCorrupt, d, name)
		}
	}
	chain, parentV1 := "", ""
	for i, lp := range it.Layers {
		what := fmt.Sprintf("layer %d of image %s (%s)", i+1, name, lp)
		le, err := c.resolve(lp, what)
		if err != nil {
			return err
		}
		// A compressed blob's diff ID is that of the layer tar inside.
		if diffs[i] != sha256Digest(le.sum) && (le.unzipped == nil || diffs[i] != sha256Digest(*le.unzipped)) {
			return fmt.Errorf("%w: %s does not match the digest its config lists", ErrCorrupt, what)
		}
		le.checked = true
		chain = chainID(chain, diffs[i])
		if dir, ok := strings.CutSuffix(lp, "/layer.tar"); ok && isHex64(dir) {
			if err := c.checkV1(dir, chain, parentV1, i == len(it.Layers)-1, name); err != nil {
				return err
			}
			parentV1 = dir
		}
	}
	c.images = append(c.images, Image{RepoTags: it.RepoTags, Config: "sha256:" + want, Layers: len(it.Layers)})
	return nil
}

// checkV1 checks the legacy directory of one layer: VERSION says 1.0 and json is what the
// directory's name (its v1 ID) was derived from.
func (c *checker) checkV1(dir, chain, parent string, top bool, image string) error {
	if v := c.w.entries[dir+"/VERSION"]; v != nil {
		v.used = true
		if v.typ != tar.TypeReg || string(v.data) != "1.0" {
			return fmt.Errorf("%w: %s/VERSION is not \"1.0\"", ErrCorrupt, dir)
		}
	}
	j := c.w.entries[dir+"/json"]
	if j == nil || j.typ != tar.TypeReg {
		return fmt.Errorf("%w: the legacy layer directory %s of image %s has no json", ErrCorrupt, dir, image)
	}
	if err := checkV1ID(j.data, dir, chain, parent, top); err != nil {
		return fmt.Errorf("%w: %s/json of image %s: %v", ErrCorrupt, dir, image, err)
	}
	j.used, j.checked = true, true
	return nil
}

// checkV1ID checks that the legacy layer json data belongs to the layer directory id, as
// docker's v1.CreateID made it: the SHA-256 of the json without "id", with "parent" as a
// digest, "layer_id" the chain ID, and (below the top layer) without "os", which docker adds
// after computing the ID.
func checkV1ID(data []byte, id, chain, parent string, top bool) error {
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return fmt.Errorf("not JSON: %v", err)
	}
	var got, gotParent string
	if json.Unmarshal(m["id"], &got) != nil || got != id {
		return fmt.Errorf("its id is not the directory's name")
	}
	delete(m, "id")
	if parent != "" {
		if json.Unmarshal(m["parent"], &gotParent) != nil || gotParent != parent {
			return fmt.Errorf("its parent is not the layer below")
		}
		m["parent"] = jsonString("sha256:" + parent)
	}
	if !top {
		delete(m, "os")
	}
	m["layer_id"] = jsonString(chain)
	canon, err := json.Marshal(m)
	if err != nil {
		return err
	}
	if sum := sha256.Sum256(canon); hex.EncodeToString(sum[:]) != id {
		return fmt.Errorf("its content does not match the layer's ID")
	}
	return nil
}

// checkParents: an item's Parent, when given, is the config of another image in the archive.
func (c *checker) checkParents() error {
	for _, it := range c.items {
		if it.Parent == "" {
			continue
		}
		if _, ok := c.configs[it.Parent]; !ok {
			return fmt.Errorf("%w: manifest.json names a parent %q of image %s that the archive does not hold", ErrCorrupt, it.Parent, imageName(&it))
		}
	}
	return nil
}

// checkNamedFiles checks every file named by its digest: blobs/sha256/<hex> and <hex>.json.
func (c *checker) checkNamedFiles() error {
	for _, e := range c.w.order {
		if e.typ != tar.TypeReg {
			continue
		}
		want, ok := digestInPath(e.name)
		if !ok {
			continue
		}
		if hex.EncodeToString(e.sum[:]) != want {
			return fmt.Errorf("%w: %s does not match its SHA-256", ErrCorrupt, e.name)
		}
		e.used, e.checked = true, true
	}
	return nil
}

// checkRepositories: the legacy repositories file names exactly the images' tags, each with
// the ID of its image's top layer.
func (c *checker) checkRepositories() error {
	r := c.w.entries["repositories"]
	if r == nil {
		return nil
	}
	r.used = true
	var repos map[string]map[string]string
	if r.typ != tar.TypeReg || strictJSON(r.data, &repos) != nil {
		return fmt.Errorf("%w: repositories is not a JSON map of repositories to tags", ErrCorrupt)
	}
	// repo:tag -> the IDs its top layer may go by: its directory (legacy), its blob name
	// or its diff ID (OCI; the two differ for a compressed layer).
	top := make(map[string][2]string)
	for i, it := range c.items {
		if len(it.Layers) == 0 {
			continue
		}
		diffs := c.itemConfigs[i].RootFS.DiffIDs
		ids := [2]string{topLayerID(it.Layers[len(it.Layers)-1]), strings.TrimPrefix(diffs[len(diffs)-1], "sha256:")}
		for _, t := range it.RepoTags {
			top[t] = ids
		}
	}
	seen := 0
	for repo, tags := range repos {
		for tag, id := range tags {
			want, ok := top[repo+":"+tag]
			if !ok {
				return fmt.Errorf("%w: repositories names %s:%s, which manifest.json does not", ErrCorrupt, repo, tag)
			}
			if id != want[0] && id != want[1] {
				return fmt.Errorf("%w: repositories gives %s:%s another top layer than manifest.json", ErrCorrupt, repo, tag)
			}
			seen++
		}
	}
	if seen != len(top) {
		return fmt.Errorf("%w: manifest.json names %d tags, repositories %d", ErrCorrupt, len(top), seen)
	}
	return nil
}

// checkOCI checks oci-layout and index.json, when present: each manifest index.json lists is
// a blob of the size it says, and the names and platforms it gives agree with the images.
func (c *checker) checkOCI() error {
	if l := c.w.entries["oci-layout"]; l != nil {
		l.used = true
		var layout struct {
			ImageLayoutVersion string `json:"imageLayoutVersion"`
		}
		if l.typ != tar.TypeReg || strictJSON(l.data, &layout) != nil || layout.ImageLayoutVersion != "1.0.0" {
			return fmt.Errorf("%w: oci-layout is not {\"imageLayoutVersion\": \"1.0.0\"}", ErrCorrupt)
		}
	}
	ie := c.w.entries["index.json"]
	if ie == nil {
		return nil
	}
	ie.used = true
	var idx ociIndex
	if ie.typ != tar.TypeReg || strictJSON(ie.data, &idx) != nil || idx.SchemaVersion != 2 ||
		idx.MediaType != "" && idx.MediaType != "application/vnd.oci.image.index.v1+json" {
		return fmt.Errorf("%w: index.json is not an OCI image index", ErrCorrupt)
	}
	tags := make(map[string]bool)
	for _, it := range c.items {
		for _, t := range it.RepoTags {
			tags[t] = true
		}
	}
	for _, d := range idx.Manifests {
		hexd, ok := strings.CutPrefix(d.Digest, "sha256:")
		b := c.w.entries["blobs/sha256/"+hexd]
		if !ok || !isHex64(hexd) || b == nil || b.typ != tar.TypeReg || b.size != d.Size {
			return fmt.Errorf("%w: index.json lists a manifest %s of %d bytes that the archive does not hold", ErrCorrupt, d.Digest, d.Size)
		}
		if name := d.Annotations[annotationImageName]; name != "" {
			short := familiar(name)
			if !tags[short] {
				return fmt.Errorf("%w: index.json names an image %s that manifest.json does not", ErrCorrupt, name)
			}
			if ref, ok := d.Annotations[annotationRefName]; ok && !strings.HasSuffix(short, ":"+ref) {
				return fmt.Errorf("%w: index.json gives image %s the tag %q", ErrCorrupt, name, ref)
			}
		}
		var m ociManifest
		if b.data == nil || json.Unmarshal(b.data, &m) != nil || m.MediaType != "" && m.MediaType != d.MediaType {
			return fmt.Errorf("%w: index.json lists %s as a %q, which it is not", ErrCorrupt, d.Digest, d.MediaType)
		}
		if cfg := c.configs[m.Config.Digest]; cfg != nil && d.Platform != nil &&
			(cfg.Architecture != d.Platform.Architecture || cfg.OS != d.Platform.OS || cfg.Variant != d.Platform.Variant) {
			return fmt.Errorf("%w: index.json gives manifest %s another platform than its image's config", ErrCorrupt, d.Digest)
		}
	}
	return nil
}

// checkAllUsed: every file and link was checked by something above, every directory is one
// docker save makes.
func (c *checker) checkAllUsed() error {
	for _, e := range c.w.order {
		if e.typ == tar.TypeDir {
			if e.name == "blobs" || e.name == "blobs/sha256" || isHex64(e.name) {
				continue
			}
		} else if e.used {
			continue
		}
		return fmt.Errorf("%w: %s is not something docker save writes or no image uses it", ErrNotDockerSave, e.name)
	}
	return nil
}

// resolve returns the regular file at name, following symbolic and hard links inside the
// archive, and marks everything on the way as used.
func (c *checker) resolve(name, what string) (*entry, error) {
	for range 8 {
		e := c.w.entries[name]
		if e == nil {
			return nil, fmt.Errorf("%w: the %s is not in the archive", ErrCorrupt, what)
		}
		e.used = true
		switch e.typ {
		case tar.TypeReg:
			return e, nil
		case tar.TypeSymlink:
			name = path.Join(path.Dir(e.name), e.link)
		case tar.TypeLink:
			name = path.Clean(e.link)
		default:
			return nil, fmt.Errorf("%w: the %s is a directory", ErrCorrupt, what)
		}
		if strings.HasPrefix(e.link, "/") || !localPath(name) {
			return nil, fmt.Errorf("%w: the %s links outside the archive", ErrNotDockerSave, what)
		}
	}
	return nil, fmt.Errorf("%w: the %s is a chain of too many links", ErrNotDockerSave, what)
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
