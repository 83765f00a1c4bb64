package archive

import (
	"archive/tar"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"path"
	"slices"
	"strings"
)

// The docker save side of the check, for both layouts (layout.go). Every file is accounted for: a blob by its name; a config by its name (its SHA-256); a
// layer by the config's rootfs.diff_ids (the SHA-256 of the layer tar, after gunzip for a
// compressed blob); a legacy layer's json by its directory name, which docker derives from
// that json, the layer's chain ID and its parent (checkV1ID); manifest.json, repositories,
// index.json and oci-layout by what they must agree on with each other and with the
// digest-checked files. Anything else is not something docker save writes.

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
