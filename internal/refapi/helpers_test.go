package refapi_test

import (
	"bytes"
	"crypto/aes"
	"encoding/hex"
	"encoding/json"
	"io"
	"mime/multipart"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

// The users every test server knows.
const (
	opEmail    = "operator@azaion.local"
	opPassword = "S3cret!"
	opID       = "5e1f6a3c-0000-4000-8000-000000000001"
	hwA        = "CPU: ARMv8 Processor rev 1 (v8l) x 12. GPU: Orin (nvgpu). Memory: 31.3 GB. DriveSerial: S6B0NL0T123456"
	hwB        = "CPU: Intel(R) Core(TM) i7. GPU: Unknown. Memory: 16 GB. DriveSerial: WD-1"

	adminEmail    = "admin@azaion.local"
	adminPassword = "adm1n"
)

var testSecret = []byte("test-jwt-secret-0123456789abcdef")

type env struct {
	srv *refapi.Server
	ts  *httptest.Server
	cfg refapi.Config
}

// newEnv starts a reference API over real HTTP; edit may change the configuration first.
func newEnv(t *testing.T, edit func(*refapi.Config)) *env {
	t.Helper()
	cfg := refapi.Config{
		Users: []refapi.User{
			{ID: opID, Email: opEmail, Password: opPassword, Role: "Operator"},
			{Email: adminEmail, Password: adminPassword, Role: "Admin", Hardware: hwB},
		},
		DataDir:     t.TempDir(),
		JWTSecret:   testSecret,
		KeyFragment: []byte("fragment\x00\xff"),
		CDN: refapi.CDNSettings{
			Host:                   "http://127.0.0.1:9000",
			DownloaderAccessKey:    "down-key",
			DownloaderAccessSecret: "down-secret",
			UploaderAccessKey:      "up-key",
			UploaderAccessSecret:   "up-secret",
		},
	}
	if edit != nil {
		edit(&cfg)
	}
	srv, err := refapi.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv)
	t.Cleanup(ts.Close)
	return &env{srv: srv, ts: ts, cfg: cfg}
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends a request; a non-empty token goes in as a bearer token, a body with the
// Content-Type ctype.
func (e *env) do(t *testing.T, method, path, token, ctype string, body io.Reader) response {
	t.Helper()
	req, err := http.NewRequest(method, e.ts.URL+path, body)
	if err != nil {
		t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if ctype != "" {
		req.Header.Set("Content-Type", ctype)
	}
	resp, err := e.ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, path, err)
	}
	return response{resp.StatusCode, resp.Header, b}
}

func (e *env) postJSON(t *testing.T, path, token string, v any) response {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return e.do(t, http.MethodPost, path, token, "application/json", bytes.NewReader(b))
}

func (e *env) login(t *testing.T, email, password string) string {
	t.Helper()
	r := e.postJSON(t, "/login", "", map[string]string{"email": email, "password": password})
	if r.status != http.StatusOK {
		t.Fatalf("login %s: %d %s", email, r.status, r.body)
	}
	var out struct{ Token string }
	if err := json.Unmarshal(r.body, &out); err != nil || out.Token == "" {
		t.Fatalf("login answer %s: %v", r.body, err)
	}
	return out.Token
}

// get asks for folder/name as the operator on hardware hw.
func (e *env) get(t *testing.T, token, folder, name, hw string) response {
	t.Helper()
	path := "/resources/get/" + folder
	if folder == "" {
		path = "/resources/get"
	}
	return e.postJSON(t, path, token, map[string]string{"password": opPassword, "hardware": hw, "fileName": name})
}

func (e *env) upload(t *testing.T, token, folder, field, fileName string, content []byte) response {
	t.Helper()
	var buf bytes.Buffer
	mw := multipart.NewWriter(&buf)
	mw.WriteField("comment", "ignored")
	fw, err := mw.CreateFormFile(field, fileName)
	if err != nil {
		t.Fatal(err)
	}
	fw.Write(content)
	mw.Close()
	return e.do(t, http.MethodPost, "/resources/"+folder, token, mw.FormDataContentType(), &buf)
}

// opensslHash is SPEC §4's hash(s) computed by the openssl CLI:
// printf %s "$s" | openssl dgst -sha384 -binary | openssl base64 -A
func opensslHash(t *testing.T, s string) string {
	t.Helper()
	openssl := testenv.OpenSSL(t)
	digest := opensslRun(t, strings.NewReader(s), openssl, "dgst", "-sha384", "-binary")
	return string(opensslRun(t, bytes.NewReader(digest), openssl, "base64", "-A"))
}

// opensslAPIKeyHex derives the AES key of a user's responses with the openssl CLI alone:
// SHA-256 of the API key string of SPEC §4.
func opensslAPIKeyHex(t *testing.T, email, password, hardware string) string {
	t.Helper()
	hh := opensslHash(t, "Azaion_"+hardware+"_%$$$)0_")
	key := opensslHash(t, email+"-"+password+"-"+hh+"-#%@AzaionKey@%#---")
	return hex.EncodeToString(opensslRun(t, strings.NewReader(key), testenv.OpenSSL(t), "dgst", "-sha256", "-binary"))
}

// opensslDecrypt decrypts IV ‖ AES-256-CBC(PKCS#7(p)) with the openssl CLI, which rejects a
// bad padding.
func opensslDecrypt(t *testing.T, keyHex string, data []byte) []byte {
	t.Helper()
	if len(data) < 2*aes.BlockSize || len(data)%aes.BlockSize != 0 {
		t.Fatalf("ciphertext of %d bytes is not IV plus whole blocks", len(data))
	}
	f := filepath.Join(t.TempDir(), "ct")
	if err := os.WriteFile(f, data[aes.BlockSize:], 0o600); err != nil {
		t.Fatal(err)
	}
	return opensslRun(t, nil, testenv.OpenSSL(t), "enc", "-d", "-aes-256-cbc",
		"-K", keyHex, "-iv", hex.EncodeToString(data[:aes.BlockSize]), "-in", f)
}

func opensslRun(t *testing.T, stdin io.Reader, name string, args ...string) []byte {
	t.Helper()
	cmd := exec.Command(name, args...)
	cmd.Stdin = stdin
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("openssl %v: %v\n%s", args, err, stderr.Bytes())
	}
	return out
}

func pattern(n int) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*31 + i>>9)
	}
	return b
}
