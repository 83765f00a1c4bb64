package archive

// The files the OCI image layout adds to a docker save archive (docker 25 and later):
// oci-layout, and index.json with the manifests it lists.

import (
	"archive/tar"
	"encoding/json"
	"fmt"
	"strings"
)

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
