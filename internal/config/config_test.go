package config

import (
	"flag"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func load(t *testing.T, env map[string]string, args ...string) (Config, error) {
	t.Helper()
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	l := Register(fs, func(k string) string { return env[k] })
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	return l.Load()
}

func TestDefaults(t *testing.T) {
	c, err := load(t, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := Config{
		ResourceAPIURL: "https://api.azaion.com", ImagesPath: "/opt/azaion/images.enc", APIVersion: "latest",
		DockerImages: DefaultImages, ModelCacheDir: "models", ListenAddr: ":8080", LogDir: "Logs",
		LogLevel: slog.LevelInfo, LogFormat: "text", DockerHost: "unix:///var/run/docker.sock",
		UpstreamTimeout: 30 * time.Second, CDNStallTimeout: 30 * time.Second,
		DeviceConfig: "/etc/azaion/device.conf", TPMDevice: "/dev/tpmrm0", TPMTimeout: 30 * time.Second,
		RetryMaxDelay: 5 * time.Minute, DockerTimeout: 60 * time.Second,
		PrefetchInterval:   time.Hour,
		RequestBodyTimeout: 30 * time.Second,
	}
	if !reflect.DeepEqual(c, want) {
		t.Errorf("got %+v\nwant %+v", c, want)
	}
}

func TestEnvThenFlag(t *testing.T) {
	env := map[string]string{"API_VERSION": "v7", "DOCKER_IMAGES": " a/x , b/y,", "LOG_LEVEL": "debug", "LISTEN_ADDR": "127.0.0.1:9"}
	c, err := load(t, env, "-listen-addr", ":9999")
	if err != nil {
		t.Fatal(err)
	}
	if c.APIVersion != "v7" || c.ListenAddr != ":9999" || c.LogLevel != slog.LevelDebug || !slices.Equal(c.DockerImages, []string{"a/x", "b/y"}) {
		t.Errorf("got %+v", c)
	}
}

func TestInvalid(t *testing.T) {
	dir := t.TempDir()
	// Unreadable even for root (CI runs as root): a symlink loop, and a path through a file.
	loop := filepath.Join(dir, "loop.enc")
	if err := os.Symlink(loop, loop); err != nil {
		t.Fatal(err)
	}
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, []byte("x"), 0o600); err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		name string
		env  map[string]string
		args []string
		want string
	}{
		{"port too big", nil, []string{"-listen-addr", ":99999"}, "LISTEN_ADDR"},
		{"no port", map[string]string{"LISTEN_ADDR": "localhost"}, nil, "LISTEN_ADDR"},
		{"bad level", map[string]string{"LOG_LEVEL": "loud"}, nil, "LOG_LEVEL"},
		{"bad format", nil, []string{"-log-format", "xml"}, "LOG_FORMAT"},
		{"bad url", map[string]string{"RESOURCE_API_URL": "ftp://x"}, nil, "RESOURCE_API_URL"},
		{"bad timeout", map[string]string{"UPSTREAM_TIMEOUT": "soon"}, nil, "UPSTREAM_TIMEOUT"},
		{"zero retry cap", map[string]string{"RETRY_MAX_DELAY": "0s"}, nil, "RETRY_MAX_DELAY"},
		{"bad docker timeout", nil, []string{"-docker-timeout", "-1s"}, "DOCKER_TIMEOUT"},
		{"zero body timeout", map[string]string{"REQUEST_BODY_TIMEOUT": "0s"}, nil, "REQUEST_BODY_TIMEOUT"},
		{"negative connection bound", nil, []string{"-max-connections", "-1"}, "MAX_CONNECTIONS"},
		{"connection bound not a number", map[string]string{"MAX_CONNECTIONS": "many"}, nil, "MAX_CONNECTIONS"},
		{"no images", nil, []string{"-docker-images", " , "}, "DOCKER_IMAGES"},
		{"archive is a dir", nil, []string{"-images-path", dir}, "IMAGES_PATH"},
		{"archive is a symlink loop", nil, []string{"-images-path", loop}, "IMAGES_PATH"},
		{"archive under a file", map[string]string{"IMAGES_PATH": filepath.Join(file, "images.enc")}, nil, "IMAGES_PATH"},
		{"empty TPM device", nil, []string{"-tpm-device", ""}, "TPM_DEVICE"},
		{"bad TPM timeout", map[string]string{"TPM_TIMEOUT": "0s"}, nil, "TPM_TIMEOUT"},
		{"prefetch without folder", map[string]string{"PREFETCH": "models/a,b"}, nil, "PREFETCH"},
		{"prefetch path", nil, []string{"-prefetch", "models/a/b"}, "PREFETCH"},
		{"prefetch empty name", nil, []string{"-prefetch", "models/"}, "PREFETCH"},
		{"rate limit unit", map[string]string{"CDN_RATE_LIMIT": "1MB"}, nil, "CDN_RATE_LIMIT"},
		{"rate limit zero", map[string]string{"CDN_RATE_LIMIT": "0"}, nil, "CDN_RATE_LIMIT"},
		{"cache max negative", nil, []string{"-model-cache-max", "-5MiB"}, "MODEL_CACHE_MAX"},
		{"prefetch interval", map[string]string{"PREFETCH_INTERVAL": "hourly"}, nil, "PREFETCH_INTERVAL"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := load(t, tc.env, tc.args...)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want one naming %s", err, tc.want)
			}
		})
	}
}

// TestModelCacheSettings: SPEC §11's settings, with the byte suffixes they take.
func TestModelCacheSettings(t *testing.T) {
	c, err := load(t, map[string]string{"PREFETCH": " models/a.bin, models/* ,", "CDN_RATE_LIMIT": "512KiB", "PREFETCH_INTERVAL": "15m"},
		"-model-cache-max", "8 GiB")
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(c.Prefetch, []string{"models/a.bin", "models/*"}) || c.CDNRateLimit != 512<<10 ||
		c.ModelCacheMax != 8<<30 || c.PrefetchInterval != 15*time.Minute {
		t.Errorf("got %+v", c)
	}
	for in, want := range map[string]int64{"1048576": 1 << 20, "1MiB": 1 << 20, "3 KiB": 3 << 10, "7B": 7, "": 0, "2TiB": 2 << 40} {
		if got, err := ParseBytes(in); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
}

func TestMissingArchiveIsFine(t *testing.T) {
	if _, err := load(t, nil, "-images-path", filepath.Join(t.TempDir(), "absent.enc")); err != nil {
		t.Fatal(err)
	}
}

func TestSecretsNotInUsage(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	var out strings.Builder
	fs.SetOutput(&out)
	Register(fs, func(k string) string {
		if k == "LOADER_API_TOKEN" || k == "JWT_SECRET" {
			return "s3cr3t-value"
		}
		return ""
	})
	fs.PrintDefaults()
	if strings.Contains(out.String(), "s3cr3t-value") {
		t.Fatalf("usage shows a secret:\n%s", out.String())
	}
	for _, name := range Names() {
		if !strings.Contains(out.String(), name) {
			t.Errorf("usage does not name %s", name)
		}
	}
}

func TestRegisterOnly(t *testing.T) {
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	// An invalid value of a setting not asked for is neither registered nor checked.
	l := RegisterOnly(fs, func(k string) string {
		return map[string]string{"TPM_TIMEOUT": "2s", "LISTEN_ADDR": "nonsense"}[k]
	}, "TPM_DEVICE", "TPM_TIMEOUT")
	if err := fs.Parse([]string{"-tpm-device", "unix:///x/sock"}); err != nil {
		t.Fatal(err)
	}
	if fs.Lookup("listen-addr") != nil {
		t.Error("listen-addr registered")
	}
	c, err := l.Load()
	if err != nil {
		t.Fatal(err)
	}
	if c.TPMDevice != "unix:///x/sock" || c.TPMTimeout != 2*time.Second || c.ListenAddr != "" {
		t.Errorf("got %+v", c)
	}
}
