// Package config reads the loader's configuration (SPEC §7): every setting is a command-line
// flag whose default comes from its environment variable, then from the built-in default.
package config

import (
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/url"
	"os"
	"slices"
	"strconv"
	"strings"
	"time"
)

// DefaultImages are the Docker images an unlock must load (SPEC §6).
var DefaultImages = []string{
	"azaion/annotations",
	"azaion/flights",
	"azaion/detections",
	"azaion/gps-denied-onboard",
	"azaion/gps-denied-desktop",
	"azaion/autopilot",
	"azaion/ai-training",
}

// Config is the loader's configuration.
type Config struct {
	ResourceAPIURL string
	ImagesPath     string
	APIVersion     string
	DockerImages   []string
	ModelCacheDir  string
	ListenAddr     string
	LogDir         string
	LogLevel       slog.Level
	LogFormat      string // "text" or "json"
	APIToken       string
	DockerHost     string
	JWTSecret      string // HS256 secret; when set (or JWTPublicKey) tokens are verified
	JWTPublicKey   string // path of a PEM public key (RSA or ECDSA)
	// UpstreamTimeout bounds connecting to the Resource API and waiting for its answer's
	// headers (and any pause inside an answer); it never cuts a long, moving body.
	UpstreamTimeout time.Duration
	// CDNStallTimeout: a CDN download that delivers less than 1 KiB in this long is resumed.
	CDNStallTimeout time.Duration
	// DeviceConfig is the device identity file (SPEC §10); a missing file means none.
	DeviceConfig string
	// TPMDevice unseals a sealed DeviceConfig (SPEC §12): a TPM character device, or
	// "unix://PATH" for a TPM simulator's socket.
	TPMDevice string
	// TPMTimeout bounds everything asked of the TPM: a TPM that does not answer in time fails
	// the start (exit code 1, so the service manager tries again).
	TPMTimeout time.Duration
	// RetryMaxDelay caps the backoff between the unattended work's attempts (SPEC §10).
	RetryMaxDelay time.Duration
	// DockerTimeout bounds each Docker call, and the time an image load may go without
	// progress (SPEC §10).
	DockerTimeout time.Duration
	// Prefetch lists the parts brought into the model cache in the background (SPEC §11):
	// "folder/name" or "folder/*" entries.
	Prefetch []string
	// PrefetchInterval: how often prefetch runs after a login.
	PrefetchInterval time.Duration
	// CDNRateLimit caps all CDN downloads together, bytes per second; 0 = no cap.
	CDNRateLimit int64
	// ModelCacheMax caps the model cache, bytes; 0 = no cap (least recently used parts go).
	ModelCacheMax int64
	// RequestBodyTimeout: a JSON request body must arrive whole within it, an upload must
	// deliver at least 1 KiB per RequestBodyTimeout; else 408 (SPEC §2).
	RequestBodyTimeout time.Duration
	// MaxConnections bounds the open HTTP connections; 0 sizes it from the open-file limit.
	MaxConnections int
}

// setting is one row of the configuration table: a flag, its environment variable and default.
type setting struct {
	flag, env, def, usage string
	secret                bool // never shown as a default in --help
	set                   func(c *Config, v string) error
}

func str(p func(*Config) *string) func(*Config, string) error {
	return func(c *Config, v string) error { *p(c) = v; return nil }
}

func duration(p func(*Config) *time.Duration) func(*Config, string) error {
	return func(c *Config, v string) error {
		d, err := time.ParseDuration(v)
		if err != nil || d <= 0 {
			return fmt.Errorf("must be a positive duration such as 30s, got %q", v)
		}
		*p(c) = d
		return nil
	}
}

// size reads a byte count: a number with an optional B, KiB, MiB, GiB or TiB suffix; empty
// means 0 (no limit).
func size(p func(*Config) *int64) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := ParseBytes(v)
		if err != nil {
			return err
		}
		*p(c) = n
		return nil
	}
}

func nonNegativeInt(p func(*Config) *int) func(*Config, string) error {
	return func(c *Config, v string) error {
		n, err := strconv.Atoi(v)
		if err != nil || n < 0 {
			return fmt.Errorf("must be a whole number, 0 or more, got %q", v)
		}
		*p(c) = n
		return nil
	}
}

// ParseBytes reads a byte count such as 1048576, 512KiB, 1MiB or 8GiB; "" is 0.
func ParseBytes(v string) (int64, error) {
	s := strings.TrimSpace(v)
	if s == "" {
		return 0, nil
	}
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"TiB", 1 << 40}, {"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if rest, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = strings.TrimSpace(rest), u.mult
			break
		}
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n <= 0 || n > (1<<62)/mult {
		return 0, fmt.Errorf("must be a positive number of bytes such as 1048576, 512KiB or 1MiB, got %q", v)
	}
	return n * mult, nil
}

var settings = []setting{
	{"resource-api-url", "RESOURCE_API_URL", "https://api.azaion.com", "base URL of the Azaion Resource API", false, func(c *Config, v string) error {
		u, err := url.Parse(v)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("must be an http(s) URL, got %q", v)
		}
		c.ResourceAPIURL = strings.TrimRight(v, "/")
		return nil
	}},
	{"images-path", "IMAGES_PATH", "/opt/azaion/images.enc", "encrypted archive of Docker images that unlock decrypts", false, func(c *Config, v string) error {
		// A missing archive is a normal state (unlock answers 404); one that exists but
		// cannot be read is a deployment mistake worth refusing at start.
		fi, err := os.Stat(v)
		switch {
		case errors.Is(err, fs.ErrNotExist):
		case err != nil:
			return fmt.Errorf("cannot read %s: %w", v, errors.Unwrap(err))
		case fi.IsDir():
			return fmt.Errorf("%s is a directory", v)
		default:
			f, err := os.Open(v)
			if err != nil {
				return fmt.Errorf("cannot read %s: %w", v, errors.Unwrap(err))
			}
			f.Close()
		}
		c.ImagesPath = v
		return nil
	}},
	{"api-version", "API_VERSION", "latest", "tag the unlocked Docker images must have", false, str(func(c *Config) *string { return &c.APIVersion })},
	{"docker-images", "DOCKER_IMAGES", strings.Join(DefaultImages, ","), "comma-separated Docker images (without tag) an unlock loads", false, func(c *Config, v string) error {
		c.DockerImages = nil
		for _, s := range strings.Split(v, ",") {
			if s = strings.TrimSpace(s); s != "" {
				c.DockerImages = append(c.DockerImages, s)
			}
		}
		if len(c.DockerImages) == 0 {
			return errors.New("must name at least one image")
		}
		return nil
	}},
	{"model-cache-dir", "MODEL_CACHE_DIR", "models", "directory where big parts of resources are cached", false, str(func(c *Config) *string { return &c.ModelCacheDir })},
	{"listen-addr", "LISTEN_ADDR", ":8080", "address the HTTP API listens on", false, func(c *Config, v string) error {
		_, port, err := net.SplitHostPort(v)
		if err != nil {
			return fmt.Errorf("must be host:port, got %q", v)
		}
		if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
			return fmt.Errorf("port must be 0-65535, got %q", port)
		}
		c.ListenAddr = v
		return nil
	}},
	{"log-dir", "LOG_DIR", "Logs", "directory for daily log files (empty: stderr only)", false, str(func(c *Config) *string { return &c.LogDir })},
	{"log-level", "LOG_LEVEL", "info", "log level: debug, info, warn or error", false, func(c *Config, v string) error {
		return c.LogLevel.UnmarshalText([]byte(v))
	}},
	{"log-format", "LOG_FORMAT", "text", "log format: text or json", false, func(c *Config, v string) error {
		if v != "text" && v != "json" {
			return fmt.Errorf("must be text or json, got %q", v)
		}
		c.LogFormat = v
		return nil
	}},
	{"api-token", "LOADER_API_TOKEN", "", "bearer token required by every endpoint but /health (empty: none)", true, str(func(c *Config) *string { return &c.APIToken })},
	{"docker-host", "DOCKER_HOST", "unix:///var/run/docker.sock", "Docker Engine API address", false, str(func(c *Config) *string { return &c.DockerHost })},
	{"jwt-secret", "JWT_SECRET", "", "HS256 secret to verify Resource API tokens (empty: not verified)", true, str(func(c *Config) *string { return &c.JWTSecret })},
	{"upstream-timeout", "UPSTREAM_TIMEOUT", "30s", "limit on connecting to the Resource API and waiting for its answer", false, duration(func(c *Config) *time.Duration { return &c.UpstreamTimeout })},
	{"cdn-stall-timeout", "CDN_STALL_TIMEOUT", "30s", "a CDN download that delivers less than 1 KiB in this long is resumed from where it stopped", false, duration(func(c *Config) *time.Duration { return &c.CDNStallTimeout })},
	{"jwt-public-key", "JWT_PUBLIC_KEY", "", "PEM public key file to verify Resource API tokens (empty: not verified)", false, str(func(c *Config) *string { return &c.JWTPublicKey })},
	{"device-config", "DEVICE_CONFIG", "/etc/azaion/device.conf", "device identity file (AZAION_DEVICE_EMAIL, AZAION_DEVICE_PASSWORD; mode 0600) for unattended login and unlock; a missing file means none", false, str(func(c *Config) *string { return &c.DeviceConfig })},
	{"tpm-device", "TPM_DEVICE", "/dev/tpmrm0", "TPM that unseals a sealed DEVICE_CONFIG: a TPM device, or unix://PATH for a TPM simulator's socket", false, func(c *Config, v string) error {
		if v == "" || v == "unix://" {
			return errors.New("must be a TPM device path or unix://PATH")
		}
		c.TPMDevice = v
		return nil
	}},
	{"tpm-timeout", "TPM_TIMEOUT", "30s", "limit on everything asked of the TPM at start (a TPM that does not answer: exit code 1)", false, duration(func(c *Config) *time.Duration { return &c.TPMTimeout })},
	{"retry-max-delay", "RETRY_MAX_DELAY", "5m", "longest wait between two attempts of the unattended login and unlock (exponential backoff with jitter, from about 1s)", false, duration(func(c *Config) *time.Duration { return &c.RetryMaxDelay })},
	{"docker-timeout", "DOCKER_TIMEOUT", "60s", "limit on each Docker call, and on the time an image load may go without progress", false, duration(func(c *Config) *time.Duration { return &c.DockerTimeout })},
	{"prefetch", "PREFETCH", "", "comma-separated folder/name or folder/* entries whose big parts are brought into the model cache in the background after each login and every --prefetch-interval", false, func(c *Config, v string) error {
		c.Prefetch = nil
		for _, e := range strings.Split(v, ",") {
			if e = strings.TrimSpace(e); e == "" {
				continue
			}
			folder, name, ok := strings.Cut(e, "/")
			if !ok || folder == "" || name == "" || strings.Contains(name, "/") {
				return fmt.Errorf("entries must be folder/name or folder/*, got %q", e)
			}
			c.Prefetch = append(c.Prefetch, e)
		}
		return nil
	}},
	{"prefetch-interval", "PREFETCH_INTERVAL", "1h", "how often PREFETCH runs again after a login", false, duration(func(c *Config) *time.Duration { return &c.PrefetchInterval })},
	{"cdn-rate-limit", "CDN_RATE_LIMIT", "", "cap on all CDN downloads together, bytes per second (KiB, MiB suffixes; empty: none)", false, size(func(c *Config) *int64 { return &c.CDNRateLimit })},
	{"model-cache-max", "MODEL_CACHE_MAX", "", "cap on the model cache's size (KiB, MiB, GiB suffixes; empty: none): least recently used parts nobody reads and PREFETCH does not name are removed", false, size(func(c *Config) *int64 { return &c.ModelCacheMax })},
	{"request-body-timeout", "REQUEST_BODY_TIMEOUT", "30s", "a JSON request body must arrive whole within this long, an upload body must deliver at least 1 KiB per this long; else 408", false, duration(func(c *Config) *time.Duration { return &c.RequestBodyTimeout })},
	{"max-connections", "MAX_CONNECTIONS", "0", "bound on open HTTP connections; at the bound, idle and slow ones are closed for new ones (0: half the open-file limit, at most 4096)", false, nonNegativeInt(func(c *Config) *int { return &c.MaxConnections })},
}

// Names lists the environment variables the configuration reads, in table order.
func Names() []string {
	names := make([]string, len(settings))
	for i, s := range settings {
		names[i] = s.env
	}
	return names
}

// Register adds one flag per setting to fs. The flag's default is the environment variable's
// value when set, else the built-in default; Load then validates whatever was chosen.
func Register(fs *flag.FlagSet, getenv func(string) string) *Loader {
	return RegisterOnly(fs, getenv, Names()...)
}

// RegisterOnly is Register for the settings named by their environment variables, for commands
// that need a few of them (azaion-loader device). Load then fills only those fields.
func RegisterOnly(fs *flag.FlagSet, getenv func(string) string, envs ...string) *Loader {
	l := &Loader{values: make([]*string, len(settings))}
	for i, s := range settings {
		if !slices.Contains(envs, s.env) {
			continue
		}
		v := s.def
		if e := getenv(s.env); e != "" {
			v = e
		}
		shown := s.def
		if s.secret {
			shown = "" // never print a configured secret in --help
		}
		p := new(string)
		*p = v
		fs.Func(s.flag, fmt.Sprintf("%s (env %s%s)", s.usage, s.env, defaultText(shown)), func(x string) error { *p = x; return nil })
		l.values[i] = p
	}
	return l
}

func defaultText(d string) string {
	if d == "" {
		return ""
	}
	return ", default " + strconv.Quote(d)
}

// Loader holds the flag values registered by Register until Load validates them.
type Loader struct{ values []*string }

// Load validates every setting and returns the configuration. The error names the flag and
// its environment variable, never a secret value.
func (l *Loader) Load() (Config, error) {
	var c Config
	for i, s := range settings {
		if l.values[i] == nil {
			continue
		}
		if err := s.set(&c, *l.values[i]); err != nil {
			return Config{}, fmt.Errorf("invalid -%s (%s): %w", s.flag, s.env, err)
		}
	}
	return c, nil
}
