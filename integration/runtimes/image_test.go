package runtimes

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"testing"
)

// readArchive returns the files of a tar archive by name.
func readArchive(t *testing.T, path string) map[string][]byte {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	files := map[string][]byte{}
	tr := tar.NewReader(f)
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			return files
		}
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[hdr.Name] = data
	}
}

// blobOf returns the blob a descriptor names, after checking its digest and size.
func blobOf(t *testing.T, files map[string][]byte, d descriptor) []byte {
	t.Helper()
	data, ok := files["blobs/sha256/"+d.Digest[len("sha256:"):]]
	if !ok {
		t.Fatalf("blob %s missing", d.Digest)
	}
	sum := sha256.Sum256(data)
	if "sha256:"+hex.EncodeToString(sum[:]) != d.Digest || int64(len(data)) != d.Size {
		t.Fatalf("blob %s: content digest %x, size %d (descriptor says %d)", d.Digest, sum, len(data), d.Size)
	}
	return data
}

// The archive is a consistent OCI layout: every descriptor's digest and size match its
// blob, the config's diff ID is the uncompressed layer's digest, the layer holds the
// rootfs, and the index names the image.
func TestWriteOCIArchive(t *testing.T) {
	dir := t.TempDir()
	root := filepath.Join(dir, "rootfs")
	if err := os.MkdirAll(filepath.Join(root, "bin"), dirMode); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(root, "bin", "hello"), []byte("hi\n"), execMode); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink("hello", filepath.Join(root, "bin", "hi")); err != nil {
		t.Fatal(err)
	}
	var layer bytes.Buffer
	if err := TarDir(root, &layer); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "img.tar")
	if err := WriteOCIArchive(archive, Image{Name: "localhost/x:v1", Layer: layer.Bytes(), Entrypoint: []string{"/bin/hello"}}); err != nil {
		t.Fatal(err)
	}
	files := readArchive(t, archive)
	var layout map[string]string
	if err := json.Unmarshal(files["oci-layout"], &layout); err != nil || layout["imageLayoutVersion"] != ociLayoutVersion {
		t.Fatalf("oci-layout %s (%v)", files["oci-layout"], err)
	}
	var index struct{ Manifests []descriptor }
	if err := json.Unmarshal(files["index.json"], &index); err != nil || len(index.Manifests) != 1 {
		t.Fatalf("index.json %s (%v)", files["index.json"], err)
	}
	if a := index.Manifests[0].Annotations; a[annotationImageName] != "localhost/x:v1" || a[annotationRefName] != "v1" {
		t.Errorf("index annotations %v", a)
	}
	var manifest struct {
		Config descriptor
		Layers []descriptor
	}
	if err := json.Unmarshal(blobOf(t, files, index.Manifests[0]), &manifest); err != nil || len(manifest.Layers) != 1 {
		t.Fatalf("manifest: %v", err)
	}
	var config struct {
		Config struct{ Entrypoint []string }
		RootFS struct {
			DiffIDs []string `json:"diff_ids"`
		} `json:"rootfs"`
	}
	if err := json.Unmarshal(blobOf(t, files, manifest.Config), &config); err != nil {
		t.Fatal(err)
	}
	zr, err := gzip.NewReader(bytes.NewReader(blobOf(t, files, manifest.Layers[0])))
	if err != nil {
		t.Fatal(err)
	}
	plain, err := io.ReadAll(zr)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(plain)
	if len(config.RootFS.DiffIDs) != 1 || config.RootFS.DiffIDs[0] != "sha256:"+hex.EncodeToString(sum[:]) {
		t.Errorf("diff_ids %v, want the uncompressed layer's digest %x", config.RootFS.DiffIDs, sum)
	}
	if len(config.Config.Entrypoint) != 1 || config.Config.Entrypoint[0] != "/bin/hello" {
		t.Errorf("entrypoint %v", config.Config.Entrypoint)
	}
	tr := tar.NewReader(bytes.NewReader(plain))
	got := map[string]string{}
	for {
		hdr, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got[hdr.Name] = hdr.Linkname
		if hdr.Uid != 0 || !hdr.ModTime.Equal(epoch) {
			t.Errorf("%s: uid %d mtime %v, want root and the epoch", hdr.Name, hdr.Uid, hdr.ModTime)
		}
	}
	if _, ok := got["bin/"]; !ok || got["bin/hi"] != "hello" {
		t.Errorf("layer entries %v, want bin/, bin/hello and the symlink bin/hi -> hello", got)
	}
}
