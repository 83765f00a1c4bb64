package refapi_test

import (
	"bytes"
	"encoding/json"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"go.yaml.in/yaml/v3"

	"github.com/azaion/loader/internal/refapi"
	"github.com/azaion/loader/internal/testenv"
)

func TestLogin(t *testing.T) {
	e := newEnv(t, nil)
	tests := []struct {
		name   string
		ctype  string
		body   string
		status int
	}{
		{"ok", "application/json", `{"email":"` + opEmail + `","password":"` + opPassword + `"}`, 200},
		{"ok, charset", "application/json; charset=utf-8", `{"email":"` + opEmail + `","password":"` + opPassword + `"}`, 200},
		{"ok, other case", "application/json", `{"EMAIL":"` + opEmail + `","Password":"` + opPassword + `"}`, 200},
		{"wrong password", "application/json", `{"email":"` + opEmail + `","password":"nope"}`, 401},
		{"password of another user", "application/json", `{"email":"` + opEmail + `","password":"` + adminPassword + `"}`, 401},
		{"unknown user", "application/json", `{"email":"ghost@azaion.local","password":"` + opPassword + `"}`, 401},
		{"email case differs", "application/json", `{"email":"Operator@azaion.local","password":"` + opPassword + `"}`, 401},
		{"bad JSON", "application/json", `{"email":`, 400},
		{"not an object", "application/json", `["a"]`, 400},
		{"null", "application/json", `null`, 400},
		{"empty body", "application/json", ``, 400},
		{"missing password", "application/json", `{"email":"` + opEmail + `"}`, 400},
		{"empty email", "application/json", `{"email":"","password":"x"}`, 400},
		{"number for a string", "application/json", `{"email":"` + opEmail + `","password":1}`, 400},
		{"no content type", "", `{"email":"` + opEmail + `","password":"` + opPassword + `"}`, 415},
		{"form content type", "application/x-www-form-urlencoded", `email=a&password=b`, 415},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := e.do(t, http.MethodPost, "/login", "", tt.ctype, strings.NewReader(tt.body))
			if r.status != tt.status {
				t.Fatalf("status %d, want %d; body %s", r.status, tt.status, r.body)
			}
			if tt.status == 200 {
				var out map[string]string
				if err := json.Unmarshal(r.body, &out); err != nil || out["token"] == "" {
					t.Fatalf("body %s: want {\"token\":...}", r.body)
				}
			} else if !strings.HasPrefix(r.header.Get("Content-Type"), "application/problem+json") {
				t.Errorf("error Content-Type %q", r.header.Get("Content-Type"))
			}
		})
	}
}

func TestTokenClaims(t *testing.T) {
	e := newEnv(t, func(c *refapi.Config) { c.TokenLifetime = 90 * time.Minute })
	before := time.Now().Add(-time.Second)
	raw := e.login(t, opEmail, opPassword)

	claims := jwt.MapClaims{}
	tok, err := jwt.ParseWithClaims(raw, claims, func(*jwt.Token) (any, error) { return testSecret, nil },
		jwt.WithValidMethods([]string{"HS256"}), jwt.WithIssuer("AzaionApi"), jwt.WithExpirationRequired())
	if err != nil {
		t.Fatalf("token does not verify with the secret: %v", err)
	}
	if tok.Header["alg"] != "HS256" {
		t.Errorf("alg %v", tok.Header["alg"])
	}
	for k, want := range map[string]string{"nameid": opID, "unique_name": opEmail, "role": "Operator", "iss": "AzaionApi"} {
		if claims[k] != want {
			t.Errorf("claim %s = %v, want %q", k, claims[k], want)
		}
	}
	if aud, _ := claims.GetAudience(); len(aud) != 1 || aud[0] == "" {
		t.Errorf("aud = %v, want one fixed audience", aud)
	}
	iat, _ := claims.GetIssuedAt()
	exp, _ := claims.GetExpirationTime()
	if iat == nil || exp == nil {
		t.Fatalf("iat %v, exp %v", iat, exp)
	}
	if iat.Before(before) || iat.After(time.Now()) {
		t.Errorf("iat %v is not now", iat)
	}
	if d := exp.Sub(iat.Time); d != 90*time.Minute {
		t.Errorf("lifetime %v, want the configured 90m", d)
	}
	// The default lifetime is SPEC §3's 4 h.
	e = newEnv(t, nil)
	claims = jwt.MapClaims{}
	if _, err := jwt.ParseWithClaims(e.login(t, adminEmail, adminPassword), claims,
		func(*jwt.Token) (any, error) { return testSecret, nil }); err != nil {
		t.Fatal(err)
	}
	iat, _ = claims.GetIssuedAt()
	exp, _ = claims.GetExpirationTime()
	if d := exp.Sub(iat.Time); d != 4*time.Hour {
		t.Errorf("default lifetime %v, want 4h", d)
	}
	if claims["role"] != "Admin" {
		t.Errorf("role %v", claims["role"])
	}
	if id, _ := claims["nameid"].(string); id == "" {
		t.Error("a user without a configured id got no nameid")
	}
}

// TestGetDecryptsWithSPECKey is the cross-check of SPEC §4: the response, decrypted by openssl
// with a key derived by openssl from the SPEC's formulas, is the stored plaintext.
func TestGetDecryptsWithSPECKey(t *testing.T) {
	e := newEnv(t, nil)
	keyHex := opensslAPIKeyHex(t, opEmail, opPassword, hwA)
	token := e.login(t, opEmail, opPassword)
	for _, size := range []int{0, 1, 16, 5000, 70000} {
		name := "model-" + strconv.Itoa(size) + ".small"
		plain := pattern(size)
		if err := e.srv.PutResource("models", name, bytes.NewReader(plain)); err != nil {
			t.Fatal(err)
		}
		r := e.get(t, token, "models", name, hwA)
		if r.status != 200 {
			t.Fatalf("size %d: status %d %s", size, r.status, r.body)
		}
		if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
			t.Errorf("Content-Type %q", ct)
		}
		if want := 16 + (size/16+1)*16; len(r.body) != want || r.header.Get("Content-Length") != strconv.Itoa(want) {
			t.Errorf("size %d: %d bytes (Content-Length %s), want %d", size, len(r.body), r.header.Get("Content-Length"), want)
		}
		if got := opensslDecrypt(t, keyHex, r.body); !bytes.Equal(got, plain) {
			t.Fatalf("size %d: decrypted %d bytes differ from the plaintext", size, len(got))
		}
	}
}

func TestGetEmptyFolder(t *testing.T) {
	e := newEnv(t, nil)
	keyHex := opensslAPIKeyHex(t, opEmail, opPassword, hwA)
	token := e.login(t, opEmail, opPassword)
	if err := e.srv.PutResource("", "top.bin", strings.NewReader("top level")); err != nil {
		t.Fatal(err)
	}
	for _, path := range []string{"/resources/get", "/resources/get/"} {
		r := e.postJSON(t, path, token, map[string]string{"password": opPassword, "hardware": hwA, "fileName": "top.bin"})
		if r.status != 200 {
			t.Fatalf("%s: %d %s", path, r.status, r.body)
		}
		if got := opensslDecrypt(t, keyHex, r.body); string(got) != "top level" {
			t.Fatalf("%s: got %q", path, got)
		}
	}
}

func TestGetFieldNamesCaseInsensitive(t *testing.T) {
	e := newEnv(t, nil)
	keyHex := opensslAPIKeyHex(t, opEmail, opPassword, hwA)
	token := e.login(t, opEmail, opPassword)
	e.srv.PutResource("models", "a.small", strings.NewReader("payload"))
	for _, body := range []string{
		`{"password":"%P","hardware":"%H","fileName":"a.small"}`,
		`{"Password":"%P","Hardware":"%H","FileName":"a.small"}`,
		`{"PASSWORD":"%P","hardware":"%H","filename":"a.small"}`,
		`{"fileNAME":"a.small","passWord":"%P","HARDWARE":"%H","extra":1}`,
	} {
		body = strings.NewReplacer("%P", opPassword, "%H", hwA).Replace(body)
		r := e.do(t, http.MethodPost, "/resources/get/models", token, "application/json", strings.NewReader(body))
		if r.status != 200 {
			t.Fatalf("%s: %d %s", body, r.status, r.body)
		}
		if got := opensslDecrypt(t, keyHex, r.body); string(got) != "payload" {
			t.Fatalf("%s: got %q", body, got)
		}
	}
	// The same field twice under different cases is ambiguous.
	body := `{"fileName":"a.small","filename":"b","password":"` + opPassword + `","hardware":"x"}`
	if r := e.do(t, http.MethodPost, "/resources/get/models", token, "application/json", strings.NewReader(body)); r.status != 400 {
		t.Errorf("ambiguous field: %d, want 400", r.status)
	}
}

func TestGetFailures(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	e.srv.PutResource("models", "a.small", strings.NewReader("payload"))
	os.Mkdir(filepath.Join(e.cfg.DataDir, "models", "dir"), 0o755)
	tests := []struct {
		name   string
		path   string
		body   string
		status int
	}{
		{"unknown file", "/resources/get/models", `{"password":"%P","hardware":"%H","fileName":"nope"}`, 404},
		{"unknown folder", "/resources/get/nofolder", `{"password":"%P","hardware":"%H","fileName":"a.small"}`, 404},
		{"directory", "/resources/get/models", `{"password":"%P","hardware":"%H","fileName":"dir"}`, 404},
		{"cdn.yaml in a folder is a file like any other", "/resources/get/models", `{"password":"%P","hardware":"%H","fileName":"cdn.yaml"}`, 404},
		{"wrong password", "/resources/get/models", `{"password":"bad","hardware":"%H","fileName":"a.small"}`, 403},
		{"missing fileName", "/resources/get/models", `{"password":"%P","hardware":"%H"}`, 400},
		{"missing hardware", "/resources/get/models", `{"password":"%P","fileName":"a.small"}`, 400},
		{"missing password", "/resources/get/models", `{"hardware":"%H","fileName":"a.small"}`, 400},
		{"bad JSON", "/resources/get/models", `{`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			body := strings.NewReplacer("%P", opPassword, "%H", hwA).Replace(tt.body)
			r := e.do(t, http.MethodPost, tt.path, token, "application/json", strings.NewReader(body))
			if r.status != tt.status {
				t.Fatalf("status %d, want %d; %s", r.status, tt.status, r.body)
			}
		})
	}
	if u, _ := e.srv.User(opEmail); u.Hardware != hwA {
		// Only requests with the right password may bind; the 404s above had it.
		t.Errorf("hardware %q after the requests", u.Hardware)
	}
}

func TestWrongPasswordDoesNotBindHardware(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	r := e.postJSON(t, "/resources/get/models", token, map[string]string{"password": "bad", "hardware": hwA, "fileName": "x"})
	if r.status != 403 {
		t.Fatalf("status %d", r.status)
	}
	if u, _ := e.srv.User(opEmail); u.Hardware != "" {
		t.Fatal("a request with a wrong password bound the hardware")
	}
}

func TestHardwareBinding(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	e.srv.PutResource("models", "a.small", strings.NewReader("payload"))

	if u, _ := e.srv.User(opEmail); u.Hardware != "" {
		t.Fatalf("bound before any request: %q", u.Hardware)
	}
	if r := e.get(t, token, "models", "a.small", hwA); r.status != 200 {
		t.Fatalf("first request: %d %s", r.status, r.body)
	}
	if u, _ := e.srv.User(opEmail); u.Hardware != hwA {
		t.Fatalf("first request bound %q, want %q", u.Hardware, hwA)
	}
	if r := e.get(t, token, "models", "a.small", hwB); r.status != 403 {
		t.Fatalf("other hardware: %d, want 403", r.status)
	}
	if r := e.get(t, token, "models", "a.small", hwA); r.status != 200 {
		t.Fatalf("bound hardware again: %d", r.status)
	}
	// Rebinding makes the first device the stranger.
	e.srv.SetHardware(opEmail, hwB)
	if r := e.get(t, token, "models", "a.small", hwA); r.status != 403 {
		t.Fatalf("after rebinding: %d, want 403", r.status)
	}
	keyHex := opensslAPIKeyHex(t, opEmail, opPassword, hwB)
	r := e.get(t, token, "models", "a.small", hwB)
	if r.status != 200 {
		t.Fatalf("rebound hardware: %d", r.status)
	}
	if got := opensslDecrypt(t, keyHex, r.body); string(got) != "payload" {
		t.Fatalf("got %q", got)
	}
}

func TestCDNYAML(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	r := e.get(t, token, "", "cdn.yaml", hwA)
	if r.status != 200 {
		t.Fatalf("status %d %s", r.status, r.body)
	}
	plain := opensslDecrypt(t, opensslAPIKeyHex(t, opEmail, opPassword, hwA), r.body)
	var got map[string]string
	if err := yaml.Unmarshal(plain, &got); err != nil {
		t.Fatalf("cdn.yaml is not YAML: %v\n%s", err, plain)
	}
	want := map[string]string{
		"host":                     "http://127.0.0.1:9000",
		"downloader_access_key":    "down-key",
		"downloader_access_secret": "down-secret",
		"uploader_access_key":      "up-key",
		"uploader_access_secret":   "up-secret",
	}
	if len(got) != len(want) {
		t.Errorf("keys %v, want exactly %v", got, want)
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %q, want %q", k, got[k], v)
		}
	}
}

func TestUploadThenGet(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	content := pattern(3072)
	if r := e.upload(t, token, "models", "data", "yolo.onnx.small", content); r.status != 200 {
		t.Fatalf("upload: %d %s", r.status, r.body)
	}
	stored, err := os.ReadFile(e.srv.ResourcePath("models", "yolo.onnx.small"))
	if err != nil || !bytes.Equal(stored, content) {
		t.Fatalf("stored file: %v (%d bytes, want the %d uploaded in plaintext)", err, len(stored), len(content))
	}
	r := e.get(t, token, "models", "yolo.onnx.small", hwA)
	if r.status != 200 {
		t.Fatalf("get: %d %s", r.status, r.body)
	}
	if got := opensslDecrypt(t, opensslAPIKeyHex(t, opEmail, opPassword, hwA), r.body); !bytes.Equal(got, content) {
		t.Fatal("the download differs from the upload")
	}
	// An upload replaces the file, and the other user gets it under the other user's key.
	if r := e.upload(t, token, "models", "data", "yolo.onnx.small", []byte("v2")); r.status != 200 {
		t.Fatalf("re-upload: %d", r.status)
	}
	admin := e.login(t, adminEmail, adminPassword)
	r = e.postJSON(t, "/resources/get/models", admin, map[string]string{"password": adminPassword, "hardware": hwB, "fileName": "yolo.onnx.small"})
	if r.status != 200 {
		t.Fatalf("admin get: %d %s", r.status, r.body)
	}
	if got := opensslDecrypt(t, opensslAPIKeyHex(t, adminEmail, adminPassword, hwB), r.body); string(got) != "v2" {
		t.Fatalf("admin got %q", got)
	}
	if names, _ := os.ReadDir(filepath.Join(e.cfg.DataDir, "models")); len(names) != 1 {
		t.Errorf("left %d entries in the folder, want 1 (no temp files)", len(names))
	}
}

func TestUploadFailures(t *testing.T) {
	e := newEnv(t, func(c *refapi.Config) { c.MaxUpload = 1000 })
	token := e.login(t, opEmail, opPassword)
	tests := []struct {
		name, folder, field, file string
		size                      int
		status                    int
	}{
		{"file in another field", "models", "file", "a.small", 10, 400},
		{"too big", "models", "data", "a.small", 5000, 413},
		{"path-like file name", "models", "data", "../a.small", 10, 400},
		{"backslash file name", "models", "data", `x\a.small`, 10, 400},
		{"hidden file name", "models", "data", ".a.small", 10, 400},
		{"path-like folder", "%2e%2e", "data", "a.small", 10, 400},
		{"hidden folder", ".git", "data", "a.small", 10, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if r := e.upload(t, token, tt.folder, tt.field, tt.file, pattern(tt.size)); r.status != tt.status {
				t.Fatalf("status %d, want %d; %s", r.status, tt.status, r.body)
			}
		})
	}
	if r := e.do(t, http.MethodPost, "/resources/models", token, "application/json", strings.NewReader(`{}`)); r.status != 400 {
		t.Errorf("not multipart: %d, want 400", r.status)
	}
	// No file at all: a multipart body with form fields only.
	body := "--b\r\nContent-Disposition: form-data; name=\"data\"\r\n\r\nnot a file\r\n--b--\r\n"
	if r := e.do(t, http.MethodPost, "/resources/models", token, "multipart/form-data; boundary=b", strings.NewReader(body)); r.status != 400 {
		t.Errorf("field without a file name: %d, want 400", r.status)
	}
	// A body cut off in the middle of the file.
	body = "--b\r\nContent-Disposition: form-data; name=\"data\"; filename=\"cut.small\"\r\n\r\nabc"
	if r := e.do(t, http.MethodPost, "/resources/models", token, "multipart/form-data; boundary=b", strings.NewReader(body)); r.status != 400 {
		t.Errorf("truncated body: %d, want 400", r.status)
	}
	if entries, _ := os.ReadDir(filepath.Join(e.cfg.DataDir, "models")); len(entries) != 0 {
		t.Errorf("failed uploads left %v behind", entries)
	}
}

func TestList(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	for _, n := range []string{"b.small", "a.small", "c.small"} {
		if r := e.upload(t, token, "models", "data", n, []byte(n)); r.status != 200 {
			t.Fatal(r.status)
		}
	}
	// Neither temp files nor subdirectories are resources.
	os.WriteFile(filepath.Join(e.cfg.DataDir, "models", ".upload-123"), []byte("x"), 0o644)
	os.Mkdir(filepath.Join(e.cfg.DataDir, "models", "sub"), 0o755)

	r := e.do(t, http.MethodGet, "/resources/list/models", token, "", nil)
	var names []string
	if r.status != 200 || json.Unmarshal(r.body, &names) != nil {
		t.Fatalf("list: %d %s", r.status, r.body)
	}
	if want := []string{"a.small", "b.small", "c.small"}; !slices.Equal(names, want) {
		t.Errorf("list = %v, want %v", names, want)
	}
	r = e.do(t, http.MethodGet, "/resources/list/unknown", token, "", nil)
	if r.status != 200 || strings.TrimSpace(string(r.body)) != "[]" {
		t.Errorf("unknown folder: %d %s, want 200 []", r.status, r.body)
	}
}

func TestKeyFragment(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	r := e.do(t, http.MethodGet, "/binary-split/key-fragment", token, "", nil)
	if r.status != 200 || !bytes.Equal(r.body, []byte("fragment\x00\xff")) {
		t.Fatalf("key fragment: %d %q", r.status, r.body)
	}
	if ct := r.header.Get("Content-Type"); ct != "application/octet-stream" {
		t.Errorf("Content-Type %q", ct)
	}
	e.srv.SetKeyFragment([]byte{1, 2, 3})
	if r := e.do(t, http.MethodGet, "/binary-split/key-fragment", token, "", nil); !bytes.Equal(r.body, []byte{1, 2, 3}) {
		t.Fatalf("after SetKeyFragment: %v", r.body)
	}
}

// protected lists one valid request per endpoint that needs a token.
func protected(e *env) []struct{ method, path, ctype, body string } {
	get := `{"password":"` + opPassword + `","hardware":"` + hwA + `","fileName":"a.small"}`
	return []struct{ method, path, ctype, body string }{
		{"POST", "/resources/get/models", "application/json", get},
		{"POST", "/resources/get", "application/json", get},
		{"POST", "/resources/models", "multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=\"data\"; filename=\"z\"\r\n\r\nz\r\n--b--\r\n"},
		{"GET", "/resources/list/models", "", ""},
		{"GET", "/binary-split/key-fragment", "", ""},
	}
}

func TestTokenRequired(t *testing.T) {
	e := newEnv(t, nil)
	e.srv.PutResource("models", "a.small", strings.NewReader("x"))
	e.srv.PutResource("", "a.small", strings.NewReader("x"))
	valid := e.login(t, opEmail, opPassword)

	forge := func(edit func(jwt.MapClaims), secret []byte, method jwt.SigningMethod) string {
		claims := jwt.MapClaims{}
		if _, _, err := jwt.NewParser().ParseUnverified(valid, claims); err != nil {
			t.Fatal(err)
		}
		edit(claims)
		s, err := jwt.NewWithClaims(method, claims).SignedString(secret)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	keep := func(jwt.MapClaims) {}
	auths := map[string]string{
		"missing":      "",
		"garbage":      "Bearer not.a.jwt",
		"empty bearer": "Bearer ",
		"basic":        "Basic " + valid,
		"other secret": "Bearer " + forge(keep, []byte("another secret"), jwt.SigningMethodHS256),
		"HS512":        "Bearer " + forge(keep, testSecret, jwt.SigningMethodHS512),
		"expired": "Bearer " + forge(func(c jwt.MapClaims) {
			c["iat"] = time.Now().Add(-5 * time.Hour).Unix()
			c["nbf"] = c["iat"]
			c["exp"] = time.Now().Add(-time.Hour).Unix()
		}, testSecret, jwt.SigningMethodHS256),
		"no exp":       "Bearer " + forge(func(c jwt.MapClaims) { delete(c, "exp") }, testSecret, jwt.SigningMethodHS256),
		"other issuer": "Bearer " + forge(func(c jwt.MapClaims) { c["iss"] = "Elsewhere" }, testSecret, jwt.SigningMethodHS256),
		"unknown user": "Bearer " + forge(func(c jwt.MapClaims) { c["nameid"] = "nobody" }, testSecret, jwt.SigningMethodHS256),
	}
	for _, p := range protected(e) {
		for name, auth := range auths {
			req, _ := http.NewRequest(p.method, e.ts.URL+p.path, strings.NewReader(p.body))
			if p.ctype != "" {
				req.Header.Set("Content-Type", p.ctype)
			}
			if auth != "" {
				req.Header.Set("Authorization", auth)
			}
			resp, err := e.ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 401 {
				t.Errorf("%s %s, %s token: %d, want 401", p.method, p.path, name, resp.StatusCode)
			}
			if !strings.HasPrefix(resp.Header.Get("WWW-Authenticate"), "Bearer") {
				t.Errorf("%s %s, %s token: no WWW-Authenticate: Bearer", p.method, p.path, name)
			}
		}
		// And the valid token passes, in either case of the scheme.
		for _, scheme := range []string{"Bearer ", "bearer "} {
			req, _ := http.NewRequest(p.method, e.ts.URL+p.path, strings.NewReader(p.body))
			if p.ctype != "" {
				req.Header.Set("Content-Type", p.ctype)
			}
			req.Header.Set("Authorization", scheme+valid)
			resp, err := e.ts.Client().Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != 200 {
				t.Errorf("%s %s with a valid token: %d", p.method, p.path, resp.StatusCode)
			}
		}
	}
}

func TestExpiredTokenShortLifetime(t *testing.T) {
	var mu sync.Mutex
	now := time.Date(2031, 5, 1, 8, 0, 0, 0, time.UTC)
	e := newEnv(t, func(c *refapi.Config) {
		c.TokenLifetime = time.Second
		c.Now = func() time.Time { mu.Lock(); defer mu.Unlock(); return now }
	})
	token := e.login(t, opEmail, opPassword)
	// exp has whole seconds: the token is dead at most 2 s after issue.
	mu.Lock()
	now = now.Add(2 * time.Second)
	mu.Unlock()
	if r := e.do(t, http.MethodGet, "/binary-split/key-fragment", token, "", nil); r.status != 401 {
		t.Fatalf("expired token: %d, want 401", r.status)
	}
	if r := e.do(t, http.MethodGet, "/binary-split/key-fragment", e.login(t, opEmail, opPassword), "", nil); r.status != 200 {
		t.Fatalf("fresh token: %d", r.status)
	}
}

func TestRevokeTokens(t *testing.T) {
	e := newEnv(t, nil)
	old := e.login(t, opEmail, opPassword)
	if r := e.do(t, http.MethodGet, "/resources/list/models", old, "", nil); r.status != 200 {
		t.Fatalf("before revoking: %d", r.status)
	}
	e.srv.RevokeTokens()
	if r := e.do(t, http.MethodGet, "/resources/list/models", old, "", nil); r.status != 401 {
		t.Fatalf("revoked token: %d, want 401", r.status)
	}
	// A login in the same second as the revocation must work: the re-login the loader does.
	fresh := e.login(t, opEmail, opPassword)
	if r := e.do(t, http.MethodGet, "/resources/list/models", fresh, "", nil); r.status != 200 {
		t.Fatalf("token issued after revoking: %d", r.status)
	}
}

func TestCalls(t *testing.T) {
	e := newEnv(t, nil)
	e.postJSON(t, "/login", "", map[string]string{"email": opEmail, "password": "wrong"})
	token := e.login(t, opEmail, opPassword)
	e.get(t, "", "models", "a.small", hwA)    // 401
	e.get(t, token, "models", "a.small", hwA) // 404
	e.get(t, token, "", "cdn.yaml", hwA)
	e.upload(t, token, "models", "data", "a.small", []byte("x"))
	e.do(t, http.MethodGet, "/resources/list/models", token, "", nil)
	e.do(t, http.MethodGet, "/binary-split/key-fragment", token, "", nil)
	e.do(t, http.MethodPost, "/binary-split/key-fragment", token, "", nil) // 405, still a call
	e.do(t, http.MethodGet, "/nowhere", token, "", nil)

	want := map[string]int{"login": 2, "resources/get": 3, "resources/upload": 1, "resources/list": 1, "key-fragment": 2}
	for ep, n := range want {
		if got := e.srv.Calls(ep); got != n {
			t.Errorf("Calls(%q) = %d, want %d", ep, got, n)
		}
	}
	e.srv.ResetCalls()
	for ep := range want {
		if got := e.srv.Calls(ep); got != 0 {
			t.Errorf("after ResetCalls, Calls(%q) = %d", ep, got)
		}
	}
	defer func() {
		if recover() == nil {
			t.Error("Calls of a misspelt endpoint did not panic")
		}
	}()
	e.srv.Calls("resource/get")
}

func TestCallsConcurrent(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	var wg sync.WaitGroup
	for range 20 {
		wg.Go(func() {
			req, _ := http.NewRequest(http.MethodGet, e.ts.URL+"/binary-split/key-fragment", nil)
			req.Header.Set("Authorization", "Bearer "+token)
			if resp, err := e.ts.Client().Do(req); err == nil {
				resp.Body.Close()
			}
		})
	}
	wg.Wait()
	if got := e.srv.Calls(refapi.EndpointKeyFragment); got != 20 {
		t.Fatalf("Calls = %d, want 20", got)
	}
}

func TestSetFault(t *testing.T) {
	e := newEnv(t, nil)
	e.srv.PutResource("models", "a.small", strings.NewReader("x"))
	token := e.login(t, opEmail, opPassword)

	e.srv.SetFault(refapi.EndpointGet, 500, 2)
	for i, want := range []int{500, 500, 200, 200} {
		if r := e.get(t, token, "models", "a.small", hwA); r.status != want {
			t.Errorf("request %d: %d, want %d", i, r.status, want)
		}
	}
	if got := e.srv.Calls(refapi.EndpointGet); got != 4 {
		t.Errorf("Calls = %d, want 4 (faulted requests count)", got)
	}

	// A fault answers before authentication: the login itself can fail.
	e.srv.SetFault(refapi.EndpointLogin, 503, -1)
	for range 3 {
		if r := e.postJSON(t, "/login", "", map[string]string{"email": opEmail, "password": opPassword}); r.status != 503 {
			t.Fatalf("persistent fault: %d, want 503", r.status)
		}
	}
	// Other endpoints are unaffected.
	if r := e.do(t, http.MethodGet, "/binary-split/key-fragment", token, "", nil); r.status != 200 {
		t.Errorf("key fragment during a login fault: %d", r.status)
	}
	e.srv.SetFault(refapi.EndpointLogin, 0, 0)
	e.login(t, opEmail, opPassword)

	e.srv.SetFault(refapi.EndpointUpload, 403, 1)
	if r := e.upload(t, token, "models", "data", "b.small", []byte("x")); r.status != 403 {
		t.Errorf("upload fault: %d, want 403", r.status)
	}
	if _, err := os.Stat(e.srv.ResourcePath("models", "b.small")); err == nil {
		t.Error("a faulted upload was stored")
	}
	if r := e.upload(t, token, "models", "data", "b.small", []byte("x")); r.status != 200 {
		t.Errorf("upload after the fault: %d", r.status)
	}
}

func TestPathLikeNamesRejected(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	// Something a traversal would reach.
	os.WriteFile(filepath.Join(filepath.Dir(e.cfg.DataDir), "secret"), []byte("s"), 0o600)
	for _, name := range []string{"..", "../secret", "a/b", `..\secret`, ".hidden", "a\x00b", strings.Repeat("n", 256)} {
		r := e.postJSON(t, "/resources/get/models", token, map[string]string{"password": opPassword, "hardware": hwA, "fileName": name})
		if r.status != 400 {
			t.Errorf("fileName %q: %d, want 400", name, r.status)
		}
	}
	for _, p := range []struct{ method, path string }{
		{"POST", "/resources/get/.."},
		{"POST", "/resources/get/%2e%2e"},
		{"POST", "/resources/get/a%2Fb"},
		{"POST", "/resources/get/a%5Cb"},
		{"POST", "/resources/get/.hidden"},
		{"POST", "/resources/get/./models"},
		{"POST", "/resources/.."},
		{"POST", "/resources/%2e%2e"},
		{"GET", "/resources/list/.."},
		{"GET", "/resources/list/%2e%2e"},
		{"GET", "/resources/list/a%2F..%2F.."},
		{"GET", "/resources/list/.git"},
	} {
		body := `{"password":"` + opPassword + `","hardware":"` + hwA + `","fileName":"secret"}`
		r := e.do(t, p.method, p.path, token, "application/json", strings.NewReader(body))
		if r.status != 400 {
			t.Errorf("%s %s: %d, want 400", p.method, p.path, r.status)
		}
	}
	if u, _ := e.srv.User(opEmail); u.Hardware != "" {
		t.Error("a rejected request bound the hardware")
	}
	if err := e.srv.PutResource("..", "x", strings.NewReader("x")); err == nil {
		t.Error("PutResource accepted folder ..")
	}
	if err := e.srv.PutResource("models", "../x", strings.NewReader("x")); err == nil {
		t.Error("PutResource accepted name ../x")
	}
	if p := e.srv.ResourcePath("models", "../x"); p != "" {
		t.Errorf("ResourcePath of ../x = %q", p)
	}
}

func TestRoutes(t *testing.T) {
	e := newEnv(t, nil)
	token := e.login(t, opEmail, opPassword)
	for _, tt := range []struct {
		method, path string
		status       int
	}{
		{"GET", "/", 404},
		{"GET", "/nowhere", 404},
		{"POST", "/resources/get/a/b", 404},
		{"GET", "/login", 405},
		{"GET", "/resources/get/models", 405},
		{"PUT", "/resources/models", 405},
		{"POST", "/resources/list/models", 405},
		{"DELETE", "/binary-split/key-fragment", 405},
	} {
		if r := e.do(t, tt.method, tt.path, token, "", nil); r.status != tt.status {
			t.Errorf("%s %s: %d, want %d", tt.method, tt.path, r.status, tt.status)
		}
	}
}

// TestLogsHoldNoSecrets runs every endpoint and checks the log names requests but holds no
// password, token, hardware fingerprint, key or CDN secret.
func TestLogsHoldNoSecrets(t *testing.T) {
	var buf testenv.SyncBuffer
	e := newEnv(t, func(c *refapi.Config) {
		c.Logger = slog.New(slog.NewTextHandler(&buf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	})
	token := e.login(t, opEmail, opPassword)
	e.postJSON(t, "/login", "", map[string]string{"email": opEmail, "password": "wrong-" + opPassword})
	e.upload(t, token, "models", "data", "a.small", []byte("x"))
	e.get(t, token, "models", "a.small", hwA)
	e.get(t, token, "", "cdn.yaml", hwA)
	e.get(t, token, "models", "a.small", hwB)
	e.do(t, http.MethodGet, "/binary-split/key-fragment", token, "", nil)
	e.do(t, http.MethodGet, "/binary-split/key-fragment", "garbage-"+token, "", nil)

	log := buf.String()
	for _, want := range []string{"method=POST", "path=/login", "status=200", "status=401", "status=403", "path=/resources/get/models"} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q", want)
		}
	}
	for _, secret := range []string{opPassword, token, token[strings.LastIndex(token, ".")+1:], hwA, hwB, "down-secret", "up-secret", string(testSecret)} {
		if strings.Contains(log, secret) {
			t.Errorf("log contains a secret %q", secret)
		}
	}
}

func TestNewAndLoadUsers(t *testing.T) {
	if _, err := refapi.New(refapi.Config{}); err == nil {
		t.Error("New without DataDir succeeded")
	}
	dir := t.TempDir()
	write := func(s string) string {
		p := filepath.Join(dir, "users.yaml")
		os.WriteFile(p, []byte(s), 0o600)
		return p
	}
	users, err := refapi.LoadUsers(write(`
- id: u1
  email: op@azaion.local
  password: pw
  role: CompanionPC
- email: up@azaion.local
  password: pw2
  role: ResourceUploader
  hardware: "CPU: x. GPU: y. Memory: z. DriveSerial: w"
`))
	if err != nil {
		t.Fatal(err)
	}
	want := []refapi.User{
		{ID: "u1", Email: "op@azaion.local", Password: "pw", Role: "CompanionPC"},
		{Email: "up@azaion.local", Password: "pw2", Role: "ResourceUploader", Hardware: "CPU: x. GPU: y. Memory: z. DriveSerial: w"},
	}
	if !slices.Equal(users, want) {
		t.Errorf("LoadUsers = %+v, want %+v", users, want)
	}
	for name, bad := range map[string]string{
		"misspelt key":    "- email: a\n  pasword: b\n",
		"no password":     "- email: a\n",
		"duplicate email": "- {email: a, password: b}\n- {email: a, password: c}\n",
		"unknown role":    "- {email: a, password: b, role: Superuser}\n",
		"not a list":      "email: a\n",
	} {
		if _, err := refapi.LoadUsers(write(bad)); err == nil {
			t.Errorf("%s: LoadUsers succeeded", name)
		}
	}
	if _, err := refapi.LoadUsers(filepath.Join(dir, "missing.yaml")); err == nil {
		t.Error("LoadUsers of a missing file succeeded")
	}
	if _, err := refapi.New(refapi.Config{DataDir: dir, Users: []refapi.User{
		{ID: "same", Email: "a", Password: "b"}, {ID: "same", Email: "c", Password: "d"},
	}}); err == nil {
		t.Error("New accepted a duplicate user id")
	}
}
