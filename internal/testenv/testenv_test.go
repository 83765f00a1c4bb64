package testenv_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/minio/minio-go/v7"
	"github.com/minio/minio-go/v7/pkg/credentials"
	"github.com/moby/moby/client"

	"github.com/azaion/loader/internal/testenv"
)

func dockerClient(t *testing.T) *client.Client {
	t.Helper()
	c, err := client.New(client.WithHost(testenv.DockerHost(t)))
	if err != nil {
		t.Fatalf("docker client: %v", err)
	}
	t.Cleanup(func() { _ = c.Close() })
	return c
}

func pingDocker(c *client.Client, d time.Duration) (client.PingResult, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.Ping(ctx, client.PingOptions{NegotiateAPIVersion: true})
}

func TestDocker(t *testing.T) {
	c := dockerClient(t)
	p, err := pingDocker(c, 10*time.Second)
	if err != nil {
		t.Fatalf("ping dockerd: %v", err)
	}
	ctx := context.Background()
	v, err := c.ServerVersion(ctx, client.ServerVersionOptions{})
	if err != nil {
		t.Fatalf("docker version: %v", err)
	}
	if _, err := c.ImageList(ctx, client.ImageListOptions{}); err != nil {
		t.Fatalf("docker image list: %v", err)
	}
	t.Logf("dockerd %s, server API %s, negotiated %s (ping said %s)", v.Version, v.APIVersion, c.ClientVersion(), p.APIVersion)
}

func minioClient(t *testing.T, m testenv.MinIOServer) *minio.Client {
	t.Helper()
	c, err := minio.New(m.Endpoint, &minio.Options{
		Creds:        credentials.NewStaticV4(m.AccessKey, m.SecretKey, ""),
		Secure:       false,
		BucketLookup: minio.BucketLookupPath,
		MaxRetries:   1,
	})
	if err != nil {
		t.Fatalf("minio client: %v", err)
	}
	return c
}

func listBuckets(c *minio.Client, d time.Duration) ([]minio.BucketInfo, error) {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	return c.ListBuckets(ctx)
}

// makeBucket creates a bucket with one object and returns its name.
func makeBucket(t *testing.T, c *minio.Client, payload []byte) string {
	t.Helper()
	ctx := context.Background()
	bucket := fmt.Sprintf("testenv-%d", time.Now().UnixNano())
	if err := c.MakeBucket(ctx, bucket, minio.MakeBucketOptions{}); err != nil {
		t.Fatalf("make bucket: %v", err)
	}
	if _, err := c.PutObject(ctx, bucket, "obj.big", bytes.NewReader(payload), int64(len(payload)), minio.PutObjectOptions{}); err != nil {
		t.Fatalf("put object: %v", err)
	}
	return bucket
}

func getObject(t *testing.T, c *minio.Client, bucket string) []byte {
	t.Helper()
	o, err := c.GetObject(context.Background(), bucket, "obj.big", minio.GetObjectOptions{})
	if err != nil {
		t.Fatalf("get object: %v", err)
	}
	defer o.Close()
	b, err := io.ReadAll(o)
	if err != nil {
		t.Fatalf("read object: %v", err)
	}
	return b
}

func TestMinIO(t *testing.T) {
	m := testenv.MinIO(t)
	if !strings.HasPrefix(m.URL(), "http://") {
		t.Fatalf("URL() = %q, want http://...", m.URL())
	}
	c := minioClient(t, m)
	if _, err := listBuckets(c, 10*time.Second); err != nil {
		t.Fatalf("list buckets at %s: %v", m.Endpoint, err)
	}
	payload := []byte("the big part")
	bucket := makeBucket(t, c, payload)
	if got := getObject(t, c, bucket); !bytes.Equal(got, payload) {
		t.Fatalf("object = %q, want %q", got, payload)
	}
}

func TestOpenSSL(t *testing.T) {
	out, err := exec.Command(testenv.OpenSSL(t), "version").CombinedOutput()
	if err != nil {
		t.Fatalf("openssl version: %v\n%s", err, out)
	}
	t.Logf("%s", bytes.TrimSpace(out))
}

// TestFaultMinIOStopStart checks the control script: down after StopMinIO, up again with the same
// data after StartMinIO.
func TestFaultMinIOStopStart(t *testing.T) {
	m := testenv.MinIO(t)
	c := minioClient(t, m)
	payload := []byte("kept across a restart")
	bucket := makeBucket(t, c, payload)

	testenv.StopMinIO(t)
	if _, err := listBuckets(c, 5*time.Second); err == nil {
		t.Fatal("list buckets succeeded after StopMinIO")
	}
	testenv.StopMinIO(t) // idempotent

	testenv.StartMinIO(t)
	testenv.StartMinIO(t) // idempotent
	if _, err := listBuckets(c, 10*time.Second); err != nil {
		t.Fatalf("list buckets after StartMinIO: %v", err)
	}
	if got := getObject(t, c, bucket); !bytes.Equal(got, payload) {
		t.Fatalf("after restart object = %q, want %q (data dir not kept?)", got, payload)
	}
}

func TestFaultDockerStopStart(t *testing.T) {
	c := dockerClient(t)
	if _, err := pingDocker(c, 10*time.Second); err != nil {
		t.Fatalf("ping dockerd: %v", err)
	}
	testenv.StopDocker(t)
	if _, err := pingDocker(c, 5*time.Second); err == nil {
		t.Fatal("ping succeeded after StopDocker")
	}
	testenv.StartDocker(t)
	testenv.StartDocker(t) // idempotent
	if _, err := pingDocker(c, 10*time.Second); err != nil {
		t.Fatalf("ping after StartDocker: %v", err)
	}
}

// TestFaultDockerPauseResume: a paused daemon takes connections and does not answer; resumed,
// it answers again.
func TestFaultDockerPauseResume(t *testing.T) {
	c := dockerClient(t)
	if _, err := pingDocker(c, 10*time.Second); err != nil {
		t.Fatalf("ping dockerd: %v", err)
	}
	testenv.PauseDocker(t)
	_, err := pingDocker(c, 2*time.Second)
	if err == nil || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("ping of a paused dockerd: %v, want no answer within the deadline", err)
	}
	testenv.ResumeDocker(t)
	testenv.ResumeDocker(t) // idempotent
	if _, err := pingDocker(c, 10*time.Second); err != nil {
		t.Fatalf("ping after ResumeDocker: %v", err)
	}
}

// TestMissingPart runs this test binary again without the parts: the part tests must skip on a
// developer's machine and fail under any CI (Woodpecker sets CI=woodpecker, not CI=true).
func TestMissingPart(t *testing.T) {
	if os.Getenv("TESTENV_CHILD") != "" {
		t.Skip("child process")
	}
	var env []string
	for _, kv := range os.Environ() {
		if !strings.HasPrefix(kv, "AZAION_TEST_") && !strings.HasPrefix(kv, "CI=") {
			env = append(env, kv)
		}
	}
	env = append(env, "TESTENV_CHILD=1")
	run := func(ci string) (string, error) {
		cmd := exec.Command(os.Args[0], "-test.run=^(TestDocker|TestMinIO|TestFaultMinIOStopStart|TestSWTPM)$", "-test.v")
		cmd.Env = env
		if ci != "" {
			cmd.Env = append(cmd.Env, "CI="+ci)
		}
		out, err := cmd.CombinedOutput()
		return string(out), err
	}

	out, err := run("")
	if err != nil || strings.Count(out, "--- SKIP") != 4 {
		t.Errorf("without CI: want 4 skipped tests and success, got err=%v\n%s", err, out)
	}
	for _, ci := range []string{"true", "woodpecker", "1"} {
		out, err = run(ci)
		if err == nil || strings.Count(out, "--- FAIL") != 4 || !strings.Contains(out, "CI="+ci) {
			t.Errorf("with CI=%s: want 4 failed tests, got err=%v\n%s", ci, err, out)
		}
	}
}

// TestFaultMinIOPauseResume: a paused MinIO keeps its port and answers nothing; resumed, it
// answers again.
func TestFaultMinIOPauseResume(t *testing.T) {
	m := testenv.MinIO(t)
	c := minioClient(t, m)
	testenv.PauseMinIO(t)
	start := time.Now()
	if _, err := listBuckets(c, 2*time.Second); err == nil {
		t.Fatal("list buckets succeeded while MinIO is paused")
	}
	if time.Since(start) < 2*time.Second {
		t.Fatal("a paused MinIO refused at once: it is not paused but gone")
	}
	testenv.ResumeMinIO(t)
	if _, err := listBuckets(c, 10*time.Second); err != nil {
		t.Fatalf("list buckets after ResumeMinIO: %v", err)
	}
}

// TestFaultMinIOKill: a killed MinIO refuses connections; the cleanup starts it with its data.
func TestFaultMinIOKill(t *testing.T) {
	m := testenv.MinIO(t)
	c := minioClient(t, m)
	payload := []byte("kept across a crash")
	bucket := makeBucket(t, c, payload)
	t.Run("kill", func(t *testing.T) {
		testenv.KillMinIO(t)
		if _, err := listBuckets(c, 5*time.Second); err == nil {
			t.Fatal("list buckets succeeded after KillMinIO")
		}
	})
	if got := getObject(t, c, bucket); !bytes.Equal(got, payload) {
		t.Fatalf("after the crash the object is %q, want %q", got, payload)
	}
}

// TestTmpfs: the small disk is a tmpfs of the size asked for, gone after the test.
func TestTmpfs(t *testing.T) {
	var dir string
	t.Run("mount", func(t *testing.T) {
		dir = testenv.Tmpfs(t, "1m")
		if err := os.WriteFile(dir+"/fits", make([]byte, 512<<10), 0o600); err != nil {
			t.Fatalf("512 KiB on a 1 MiB tmpfs: %v", err)
		}
		err := os.WriteFile(dir+"/too-big", make([]byte, 1<<20), 0o600)
		if !errors.Is(err, syscall.ENOSPC) {
			t.Fatalf("1 MiB more on a 1 MiB tmpfs: %v, want ENOSPC", err)
		}
	})
	if dir == "" {
		return // skipped
	}
	mounts, _ := os.ReadFile("/proc/mounts")
	if strings.Contains(string(mounts), dir) {
		t.Errorf("%s is still mounted after its test", dir)
	}
}
