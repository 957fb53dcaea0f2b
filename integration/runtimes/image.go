package runtimes

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Media types and annotations of the OCI image spec (v1.0) and containerd's importer.
const (
	mediaTypeIndex    = "application/vnd.oci.image.index.v1+json"
	mediaTypeManifest = "application/vnd.oci.image.manifest.v1+json"
	mediaTypeConfig   = "application/vnd.oci.image.config.v1+json"
	mediaTypeLayerGz  = "application/vnd.oci.image.layer.v1.tar+gzip"
	ociLayoutVersion  = "1.0.0"
	annotationRefName = "org.opencontainers.image.ref.name"
	// annotationImageName is containerd's: `ctr images import` names the image after it.
	annotationImageName = "io.containerd.image.name"
	imageSchemaVersion  = 2
)

// File modes inside the images.
const (
	dirMode  = 0o755
	fileMode = 0o644
	execMode = 0o755
)

// epoch is the modification time of every file in a layer, so a layer's digest depends on
// its content alone.
var epoch = time.Unix(0, 0).UTC()

// BusyboxRootfs lays out a root filesystem in dir (created if missing) with the static
// busybox binary at /bin/busybox, a symlink per applet it lists, /etc/passwd and
// /etc/group for root, empty /proc, /sys, /dev and /tmp, and /www/index.html holding
// indexBody (what `busybox httpd -h /www` serves). It needs a statically linked busybox
// (Debian's busybox-static): the image has no libc.
func BusyboxRootfs(dir, busybox, indexBody string) error {
	for _, d := range []string{"bin", "etc", "proc", "sys", "dev", "tmp", "root", "www"} {
		if err := os.MkdirAll(filepath.Join(dir, d), dirMode); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	if err := copyFile(busybox, filepath.Join(dir, "bin", "busybox"), execMode); err != nil {
		return fmt.Errorf("rootfs: copying busybox %s: %w", busybox, err)
	}
	out, err := exec.Command(busybox, "--list").Output()
	if err != nil {
		return fmt.Errorf("rootfs: %s --list: %w", busybox, err)
	}
	for _, applet := range strings.Fields(string(out)) {
		if applet == "busybox" || strings.Contains(applet, "/") {
			continue
		}
		link := filepath.Join(dir, "bin", applet)
		if err := os.Symlink("busybox", link); err != nil && !os.IsExist(err) {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	files := map[string]string{
		"etc/passwd":     "root:x:0:0:root:/root:/bin/sh\n",
		"etc/group":      "root:x:0:\n",
		"www/index.html": indexBody,
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), fileMode); err != nil {
			return fmt.Errorf("rootfs: %w", err)
		}
	}
	return nil
}

// PauseRootfs lays out a root filesystem in dir holding only the static binary pause at
// /pause (the CRI sandbox image's entrypoint).
func PauseRootfs(dir, pause string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("rootfs: %w", err)
	}
	if err := copyFile(pause, filepath.Join(dir, "pause"), execMode); err != nil {
		return fmt.Errorf("rootfs: copying pause %s: %w", pause, err)
	}
	return nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	return os.WriteFile(dst, data, mode)
}

// TarDir writes dir as an uncompressed tar stream with paths relative to dir, in
// lexical order, owned by root, with a fixed modification time. It keeps directories,
// regular files and symlinks; anything else is an error.
func TarDir(dir string, w io.Writer) error {
	var paths []string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			paths = append(paths, p)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("tar %s: %w", dir, err)
	}
	sort.Strings(paths)
	tw := tar.NewWriter(w)
	for _, p := range paths {
		if err := tarEntry(tw, dir, p); err != nil {
			return fmt.Errorf("tar %s: %w", p, err)
		}
	}
	return tw.Close()
}

func tarEntry(tw *tar.Writer, root, p string) error {
	info, err := os.Lstat(p)
	if err != nil {
		return err
	}
	rel, err := filepath.Rel(root, p)
	if err != nil {
		return err
	}
	hdr := &tar.Header{Name: filepath.ToSlash(rel), ModTime: epoch, Mode: int64(info.Mode().Perm()), Format: tar.FormatPAX}
	switch {
	case info.IsDir():
		hdr.Typeflag, hdr.Name = tar.TypeDir, hdr.Name+"/"
	case info.Mode()&fs.ModeSymlink != 0:
		target, err := os.Readlink(p)
		if err != nil {
			return err
		}
		hdr.Typeflag, hdr.Linkname = tar.TypeSymlink, target
	case info.Mode().IsRegular():
		hdr.Typeflag, hdr.Size = tar.TypeReg, info.Size()
	default:
		return fmt.Errorf("unsupported file type %s", info.Mode().Type())
	}
	if err := tw.WriteHeader(hdr); err != nil {
		return err
	}
	if hdr.Typeflag != tar.TypeReg {
		return nil
	}
	f, err := os.Open(p)
	if err != nil {
		return err
	}
	defer f.Close()
	_, err = io.Copy(tw, f)
	return err
}

// Image is a single-layer image for WriteOCIArchive.
type Image struct {
	// Name is the full reference the importer gives the image, e.g.
	// "localhost/moor-pause:test".
	Name string
	// Layer is the root filesystem as an uncompressed tar (TarDir's output).
	Layer []byte
	// Entrypoint and Cmd go into the image config.
	Entrypoint []string
	Cmd        []string
}

// descriptor is an OCI content descriptor.
type descriptor struct {
	MediaType   string            `json:"mediaType"`
	Digest      string            `json:"digest"`
	Size        int64             `json:"size"`
	Annotations map[string]string `json:"annotations,omitempty"`
	Platform    *platform         `json:"platform,omitempty"`
}

type platform struct {
	Architecture string `json:"architecture"`
	OS           string `json:"os"`
}

// blob is one file under blobs/sha256/.
type blob struct {
	digest string // hex
	data   []byte
}

func newBlob(data []byte) blob {
	sum := sha256.Sum256(data)
	return blob{digest: hex.EncodeToString(sum[:]), data: data}
}

func (b blob) descriptor(mediaType string) descriptor {
	return descriptor{MediaType: mediaType, Digest: "sha256:" + b.digest, Size: int64(len(b.data))}
}

// WriteOCIArchive writes img as a tar archive of an OCI image layout (oci-layout,
// index.json, blobs/sha256/: the gzipped layer, the config with the layer's diff ID,
// the manifest), for the host's architecture, which `ctr images import` accepts. The
// index entry carries the image name in containerd's annotation and the tag in the OCI
// ref-name annotation.
func WriteOCIArchive(path string, img Image) error {
	var gz bytes.Buffer
	zw := gzip.NewWriter(&gz)
	zw.ModTime = epoch
	if _, err := zw.Write(img.Layer); err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	if err := zw.Close(); err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	layer := newBlob(gz.Bytes())
	diffID := sha256.Sum256(img.Layer)
	config, err := json.Marshal(map[string]any{
		"architecture": runtime.GOARCH,
		"os":           "linux",
		"created":      epoch.Format(time.RFC3339),
		"config":       map[string]any{"Entrypoint": img.Entrypoint, "Cmd": img.Cmd, "Env": []string{"PATH=/bin"}},
		"rootfs":       map[string]any{"type": "layers", "diff_ids": []string{"sha256:" + hex.EncodeToString(diffID[:])}},
	})
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	cfg := newBlob(config)
	manifest, err := json.Marshal(map[string]any{
		"schemaVersion": imageSchemaVersion,
		"mediaType":     mediaTypeManifest,
		"config":        cfg.descriptor(mediaTypeConfig),
		"layers":        []descriptor{layer.descriptor(mediaTypeLayerGz)},
	})
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	man := newBlob(manifest)
	manDesc := man.descriptor(mediaTypeManifest)
	manDesc.Platform = &platform{Architecture: runtime.GOARCH, OS: "linux"}
	manDesc.Annotations = map[string]string{annotationImageName: img.Name, annotationRefName: tagOf(img.Name)}
	index, err := json.Marshal(map[string]any{
		"schemaVersion": imageSchemaVersion,
		"mediaType":     mediaTypeIndex,
		"manifests":     []descriptor{manDesc},
	})
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	layout, err := json.Marshal(map[string]string{"imageLayoutVersion": ociLayoutVersion})
	if err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}

	var out bytes.Buffer
	tw := tar.NewWriter(&out)
	entries := []struct {
		name string
		data []byte
	}{
		{"oci-layout", layout},
		{"index.json", index},
		{"blobs/sha256/" + layer.digest, layer.data},
		{"blobs/sha256/" + cfg.digest, cfg.data},
		{"blobs/sha256/" + man.digest, man.data},
	}
	for _, dir := range []string{"blobs/", "blobs/sha256/"} {
		if err := tw.WriteHeader(&tar.Header{Name: dir, Typeflag: tar.TypeDir, Mode: dirMode, ModTime: epoch}); err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
	}
	for _, e := range entries {
		if err := tw.WriteHeader(&tar.Header{Name: e.name, Typeflag: tar.TypeReg, Mode: fileMode, Size: int64(len(e.data)), ModTime: epoch}); err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
		if _, err := tw.Write(e.data); err != nil {
			return fmt.Errorf("oci archive: %w", err)
		}
	}
	if err := tw.Close(); err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	if err := os.WriteFile(path, out.Bytes(), fileMode); err != nil {
		return fmt.Errorf("oci archive: %w", err)
	}
	return nil
}

// tagOf returns the tag of a reference ("latest" when it has none).
func tagOf(ref string) string {
	name := ref[strings.LastIndex(ref, "/")+1:]
	if i := strings.LastIndex(name, ":"); i >= 0 {
		return name[i+1:]
	}
	return "latest"
}
