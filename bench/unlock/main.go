// Command unlock benchmarks the unlock workflow (SPEC §6) against the seed's way of doing it, on a
// real dockerd, in one run:
//
//	go run ./bench/unlock -size 1GiB -docker-host unix:///tmp/x/docker.sock
//
// It makes an image with one large random layer (Engine API ImageImport of a streamed rootfs,
// dockertest.ImportRandom), saves it straight into `openssl enc` to get an encrypted archive
// (IV ‖ AES-256-CBC, key SHA-256(fragment)), removes the image, and then measures
//
//	(a) ours: the Unlocker (fake upstream serving the fragment, the real Engine client) in a child
//	    process of this program, so that its peak RSS can be read (VmHWM, and getrusage maxrss);
//	(b) the seed's way: `openssl enc -d` into a tar file, then `docker load -i` of that file (the
//	    docker CLI with DOCKER_HOST; the Engine API's ImageLoad of the file when there is no CLI).
//
// It prints one Markdown section on stdout (DEVELOPERS.md, "Benchmarks"): our wall time next to
// (b), and next to the `docker load -i` of (b) alone, the floor set by dockerd; and our peak
// RSS. It exits 1 when that exceeds -max-rss. Progress goes to stderr. It needs disk for the
// archive, the tar and dockerd's copies (about 4× -size with vfs).
package main

import (
	"cmp"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/moby/moby/client"

	"github.com/azaion/loader/bench/internal/bytesize"
	"github.com/azaion/loader/bench/internal/report"
	"github.com/azaion/loader/internal/docker"
	"github.com/azaion/loader/internal/docker/dockertest"
	"github.com/azaion/loader/internal/unlock"
)

// Environment of the child process that runs our unlock.
const (
	envChild    = "AZAION_BENCH_CHILD"
	envArchive  = "AZAION_BENCH_ARCHIVE"
	envFragment = "AZAION_BENCH_FRAGMENT_FILE"
	envImage    = "AZAION_BENCH_IMAGE"
	envTag      = "AZAION_BENCH_TAG"
	envHost     = "AZAION_BENCH_DOCKER_HOST"
)

const benchImage = "azaion/bench-unlock"

func main() {
	if os.Getenv(envChild) == "1" {
		if err := child(); err != nil {
			json.NewEncoder(os.Stdout).Encode(childResult{Err: err.Error()})
			os.Exit(1)
		}
		return
	}
	if err := parent(); err != nil {
		fmt.Fprintln(os.Stderr, "bench/unlock:", err)
		os.Exit(1)
	}
}

type childResult struct {
	Err      string `json:"err,omitempty"`
	VmHWMKiB int64  `json:"vmhwmKiB"`
	Millis   int64  `json:"millis"`
}

// child runs our unlock once and reports its peak RSS as the kernel counted it.
func child() error {
	fragment, err := os.ReadFile(os.Getenv(envFragment))
	if err != nil {
		return err
	}
	eng, err := docker.New(os.Getenv(envHost))
	if err != nil {
		return err
	}
	defer eng.Close()
	u := unlock.New(unlock.Config{
		ArchivePath: os.Getenv(envArchive),
		Images:      []string{os.Getenv(envImage)},
		Tag:         os.Getenv(envTag),
	}, fakeUpstream{fragment}, eng)
	defer u.Close()
	start := time.Now()
	if err := u.Run(context.Background(), "bench@azaion.local", "bench"); err != nil {
		return err
	}
	return json.NewEncoder(os.Stdout).Encode(childResult{VmHWMKiB: vmHWM(), Millis: time.Since(start).Milliseconds()})
}

type fakeUpstream struct{ fragment []byte }

func (f fakeUpstream) Login(context.Context, string, string) error { return nil }
func (f fakeUpstream) KeyFragment(context.Context) ([]byte, error) {
	return append([]byte(nil), f.fragment...), nil
}

func vmHWM() int64 {
	b, _ := os.ReadFile("/proc/self/status")
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			n, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return n
		}
	}
	return -1
}

func parent() error {
	sizeFlag := flag.String("size", "1GiB", "size of the random layer: bytes or a number with KiB, MiB or GiB")
	host := flag.String("docker-host", cmp.Or(os.Getenv("AZAION_BENCH_DOCKER_HOST"), os.Getenv("DOCKER_HOST")), "dockerd to use (default $AZAION_BENCH_DOCKER_HOST, set by scripts/bench.sh, else $DOCKER_HOST)")
	workDir := flag.String("dir", os.Getenv("AZAION_BENCH_DIR"), "directory under which the archive and the seed's tar go (default: the system's temp dir)")
	maxRSS := flag.String("max-rss", "64MiB", "fail when our peak RSS exceeds this")
	flag.Parse()
	loadBefore := report.LoadAverage()
	size, err := bytesize.Parse(*sizeFlag)
	if err != nil {
		return fmt.Errorf("-size: %w", err)
	}
	limit, err := bytesize.Parse(*maxRSS)
	if err != nil {
		return fmt.Errorf("-max-rss: %w", err)
	}
	if *host == "" {
		return errors.New("no dockerd: set -docker-host or DOCKER_HOST")
	}
	openssl, err := exec.LookPath("openssl")
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp(*workDir, "azaion-bench-unlock-*")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	ctx := context.Background()
	cli, err := client.New(client.WithHost(*host))
	if err != nil {
		return err
	}
	defer cli.Close()
	if _, err := cli.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true}); err != nil {
		return fmt.Errorf("dockerd at %s: %w", *host, err)
	}

	tagBytes := make([]byte, 4)
	rand.Read(tagBytes)
	tag := "bench" + hex.EncodeToString(tagBytes)
	ref := benchImage + ":" + tag
	defer removeImage(cli, ref)

	report.Progress("bench/unlock: dockerd %s; layer %s; work dir %s", *host, bytesize.Format(size), dir)

	// The image and its encrypted archive.
	t0 := time.Now()
	if err := dockertest.ImportRandom(ctx, cli, ref, size); err != nil {
		return fmt.Errorf("import: %w", err)
	}
	report.Progress("bench/unlock: image imported in %v", time.Since(t0).Round(time.Millisecond))
	fragment := make([]byte, 64)
	rand.Read(fragment)
	fragPath := filepath.Join(dir, "fragment")
	if err := os.WriteFile(fragPath, fragment, 0o600); err != nil {
		return err
	}
	key := sha256.Sum256(fragment)
	encPath := filepath.Join(dir, "images.enc")
	t0 = time.Now()
	if err := saveEncrypted(ctx, cli, openssl, ref, key[:], encPath); err != nil {
		return fmt.Errorf("save+encrypt: %w", err)
	}
	fi, err := os.Stat(encPath)
	if err != nil {
		return err
	}
	report.Progress("bench/unlock: archive of %s saved and encrypted by openssl in %v", bytesize.Format(fi.Size()), time.Since(t0).Round(time.Millisecond))
	if err := removeImage(cli, ref); err != nil {
		return err
	}

	// (a) ours, in a child process.
	self, err := os.Executable()
	if err != nil {
		return err
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), envChild+"=1", envArchive+"="+encPath, envFragment+"="+fragPath,
		envImage+"="+benchImage, envTag+"="+tag, envHost+"="+*host)
	cmd.Stderr = os.Stderr
	t0 = time.Now()
	out, runErr := cmd.Output()
	ours := time.Since(t0)
	var res childResult
	if err := json.Unmarshal(out, &res); err != nil && runErr == nil {
		runErr = fmt.Errorf("child said %q: %w", out, err)
	}
	if runErr != nil || res.Err != "" {
		return fmt.Errorf("our unlock: %v %s", runErr, res.Err)
	}
	maxrssKiB := int64(-1)
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		maxrssKiB = ru.Maxrss // KiB on Linux
	}
	if ok, err := exists(cli, ref); err != nil || !ok {
		return fmt.Errorf("our unlock: image %s not there afterwards (%v)", ref, err)
	}
	if err := removeImage(cli, ref); err != nil {
		return err
	}

	// (b) the seed's way: decrypt to a tar file, then load that file.
	tarPath := filepath.Join(dir, "images.tar")
	t0 = time.Now()
	dec := exec.Command("sh", "-c", `tail -c +17 "$1" | "$2" enc -d -aes-256-cbc -K "$3" -iv "$4" -out "$5"`, "sh",
		encPath, openssl, hex.EncodeToString(key[:]), ivHex(encPath), tarPath)
	dec.Stderr = os.Stderr
	if err := dec.Run(); err != nil {
		return fmt.Errorf("openssl enc -d: %w", err)
	}
	seedDecrypt := time.Since(t0)
	t1 := time.Now()
	how, err := seedLoad(ctx, cli, *host, tarPath)
	if err != nil {
		return fmt.Errorf("seed load: %w", err)
	}
	seedLoadTime := time.Since(t1)
	seed := time.Since(t0)
	os.Remove(tarPath)
	if ok, err := exists(cli, ref); err != nil || !ok {
		return fmt.Errorf("seed way: image %s not there afterwards (%v)", ref, err)
	}

	ver, _ := cli.ServerVersion(ctx, client.ServerVersionOptions{})
	info, _ := cli.Info(ctx, client.InfoOptions{})
	secs := func(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }
	sec := report.Section{
		Title:      fmt.Sprintf("Unlock of a %s archive into dockerd (bench/unlock)", bytesize.Format(fi.Size())),
		LoadBefore: loadBefore,
		Rows: []report.Row{
			{Figure: "unlock wall time (lower is better)", Ours: secs(ours),
				Baseline: fmt.Sprintf("openssl enc -d to a tar, then %s: %s (%s + %s)", how, secs(seed), secs(seedDecrypt), secs(seedLoadTime)),
				Ratio:    report.Ratio(ours.Seconds(), seed.Seconds())},
			{Figure: "unlock wall time next to the floor set by dockerd", Ours: secs(ours),
				Baseline: fmt.Sprintf("%s of the plain tar alone: %s", how, secs(seedLoadTime)),
				Ratio:    report.Ratio(ours.Seconds(), seedLoadTime.Seconds())},
			{Figure: "our peak RSS (VmHWM)", Ours: bytesize.Format(res.VmHWMKiB << 10), Baseline: fmt.Sprintf("limit %s", bytesize.Format(limit))},
			{Figure: "plaintext written to disk", Ours: "none", Baseline: fmt.Sprintf("the seed's way: a %s tar", bytesize.Format(fi.Size()-32))},
		},
		Notes: []string{fmt.Sprintf("Ours: the archive decrypted and streamed into the Engine API's image load, in a child "+
			"process (getrusage maxrss %s). dockerd %s (API %s), storage driver %s; one random layer of %s.",
			bytesize.Format(maxrssKiB<<10), ver.Version, ver.APIVersion, info.Info.Driver, bytesize.Format(size))},
	}
	if err := sec.Write(os.Stdout); err != nil {
		return err
	}
	if res.VmHWMKiB<<10 > limit || maxrssKiB<<10 > limit {
		return fmt.Errorf("our peak RSS is over the %s limit", bytesize.Format(limit))
	}
	return nil
}

// saveEncrypted pipes `docker save ref` into openssl and writes IV ‖ ciphertext to path.
func saveEncrypted(ctx context.Context, cli *client.Client, openssl, ref string, key []byte, path string) error {
	iv := make([]byte, 16)
	rand.Read(iv)
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	defer f.Close()
	if _, err := f.Write(iv); err != nil {
		return err
	}
	res, err := cli.ImageSave(ctx, []string{ref})
	if err != nil {
		return err
	}
	defer res.Close()
	cmd := exec.Command(openssl, "enc", "-aes-256-cbc", "-K", hex.EncodeToString(key), "-iv", hex.EncodeToString(iv))
	cmd.Stdin, cmd.Stdout, cmd.Stderr = res, f, os.Stderr
	if err := cmd.Run(); err != nil {
		return err
	}
	return f.Close()
}

func ivHex(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	iv := make([]byte, 16)
	io.ReadFull(f, iv)
	return hex.EncodeToString(iv)
}

// seedLoad loads the tar file with the docker CLI, or with the Engine API when there is none.
func seedLoad(ctx context.Context, cli *client.Client, host, tarPath string) (string, error) {
	if dockerCLI, err := exec.LookPath("docker"); err == nil {
		cmd := exec.Command(dockerCLI, "load", "-q", "-i", tarPath)
		cmd.Env = append(os.Environ(), "DOCKER_HOST="+host)
		cmd.Stdout, cmd.Stderr = io.Discard, os.Stderr
		return "docker load -i", cmd.Run()
	}
	f, err := os.Open(tarPath)
	if err != nil {
		return "", err
	}
	defer f.Close()
	res, err := cli.ImageLoad(ctx, f, client.ImageLoadWithQuiet(true))
	if err != nil {
		return "", err
	}
	defer res.Close()
	return "Engine API ImageLoad of the file", docker.ReadMessages(res)
}

func exists(cli *client.Client, ref string) (bool, error) {
	_, err := cli.ImageInspect(context.Background(), ref)
	if cerrdefs.IsNotFound(err) {
		return false, nil
	}
	return err == nil, err
}

func removeImage(cli *client.Client, ref string) error {
	_, err := cli.ImageRemove(context.Background(), ref, client.ImageRemoveOptions{Force: true, PruneChildren: true})
	if err != nil && !cerrdefs.IsNotFound(err) {
		return fmt.Errorf("remove %s: %w", ref, err)
	}
	return nil
}
