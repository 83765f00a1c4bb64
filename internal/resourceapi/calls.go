package resourceapi

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"mime/multipart"
	"net/http"
	"net/url"

	"go.yaml.in/yaml/v3"

	"github.com/azaion/loader/internal/security"
)

// GetResource downloads name from folder ("" for the API's top level) and decrypts it with
// this user's and device's API key.
//
// Errors: ErrNotLoggedIn, ErrUnauthorized, ErrForbidden, ErrNotFound, ErrUnavailable as for
// every call; a body that does not decrypt returns the security package's error
// (security.ErrWrongKey or security.ErrTruncated), since that is a decryption failure rather
// than an unreachable API.
func (c *Client) GetResource(ctx context.Context, folder, name string) ([]byte, error) {
	r := c.getRequest("get "+resourceName(folder, name), folder, name)
	a, s, err := c.call(ctx, r)
	if err != nil {
		return nil, err
	}
	plain, err := security.Decrypt(a.body, s.apiKey)
	if err != nil {
		return nil, fmt.Errorf("%s: decrypt with the API key: %w", r.op, err)
	}
	return plain, nil
}

// UploadResource uploads the rest of data (from its current offset to its end) to folder as
// file name. The body streams from data with an exact Content-Length; nothing is buffered.
// data is an io.ReadSeeker because a call the API refuses with 401 or 403 is sent again after
// a new login, and that needs the same bytes again: the client seeks back to the starting
// offset. data is not read after UploadResource returns.
func (c *Client) UploadResource(ctx context.Context, folder, name string, data io.ReadSeeker) error {
	op := "upload " + resourceName(folder, name)
	start, err := data.Seek(0, io.SeekCurrent)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	end, err := data.Seek(0, io.SeekEnd)
	if err != nil {
		return fmt.Errorf("%s: %w", op, err)
	}
	r := &request{
		op:     op,
		method: http.MethodPost,
		path:   "/resources" + folderPath(folder),
		limit:  maxSmallAnswer,
		body: func(*session) (io.Reader, string, int64, error) {
			if _, err := data.Seek(start, io.SeekStart); err != nil {
				return nil, "", 0, err
			}
			// The multipart framing around the file is small and known up front: write it
			// with multipart.Writer, then stream the file between its two halves.
			var frame bytes.Buffer
			mw := multipart.NewWriter(&frame)
			if _, err := mw.CreateFormFile("data", name); err != nil {
				return nil, "", 0, err
			}
			head := bytes.Clone(frame.Bytes())
			frame.Reset()
			if err := mw.Close(); err != nil {
				return nil, "", 0, err
			}
			body := io.MultiReader(bytes.NewReader(head), io.LimitReader(data, end-start), &frame)
			return body, mw.FormDataContentType(), int64(len(head)) + (end - start) + int64(frame.Len()), nil
		},
	}
	_, _, err = c.call(ctx, r)
	return err
}

// ListResources returns the names of the files in folder.
func (c *Client) ListResources(ctx context.Context, folder string) ([]string, error) {
	r := &request{op: "list " + folder, method: http.MethodGet, path: "/resources/list" + folderPath(folder), limit: maxListSize}
	a, _, err := c.call(ctx, r)
	if err != nil {
		return nil, err
	}
	names := []string{}
	if err := json.Unmarshal(a.body, &names); err != nil {
		return nil, fmt.Errorf("%s: %w: the answer is not a JSON list of names: %w", r.op, ErrUnavailable, err)
	}
	if names == nil { // JSON null
		names = []string{}
	}
	return names, nil
}

// KeyFragment returns the raw key fragment of the Docker image archive.
func (c *Client) KeyFragment(ctx context.Context) ([]byte, error) {
	r := &request{op: "get key fragment", method: http.MethodGet, path: "/binary-split/key-fragment", limit: MaxKeyFragmentSize}
	a, _, err := c.call(ctx, r)
	if err != nil {
		return nil, err
	}
	if len(a.body) == 0 {
		return nil, fmt.Errorf("%s: %w: the answer is empty", r.op, ErrUnavailable)
	}
	return a.body, nil
}

// fetchCDN gets and decrypts cdn.yaml with the session being logged in, which is not yet
// published: so there is no re-login here, and a 401 or 403 is final.
func (c *Client) fetchCDN(ctx context.Context, s *session) (CDNSettings, error) {
	r := c.getRequest("fetch cdn.yaml", "", "cdn.yaml")
	a, err := c.exchange(ctx, s, r)
	if err == nil && a.status/100 != 2 {
		sentinel := resourceSentinel(a.status)
		if sentinel == ErrNotFound {
			// Every user can read cdn.yaml; without it the API is broken, not the request.
			sentinel = ErrUnavailable
		}
		err = a.err(sentinel, c.secrets(s))
	}
	if err != nil {
		return CDNSettings{}, fmt.Errorf("%s: %w", r.op, err)
	}
	plain, err := security.Decrypt(a.body, s.apiKey)
	if err != nil {
		return CDNSettings{}, fmt.Errorf("%s: %w: decrypt with the API key: %w", r.op, ErrUnavailable, err)
	}
	cdn, err := parseCDN(plain)
	if err != nil {
		return CDNSettings{}, fmt.Errorf("%s: %w", r.op, err)
	}
	return cdn, nil
}

// parseCDN reads decrypted cdn.yaml. Its errors never quote the file: its values are keys.
func parseCDN(plain []byte) (CDNSettings, error) {
	var cdn CDNSettings
	if err := yaml.Unmarshal(plain, &cdn); err != nil {
		return CDNSettings{}, fmt.Errorf("%w: not valid YAML", ErrUnavailable)
	}
	if cdn.Host == "" {
		return CDNSettings{}, fmt.Errorf("%w: no host", ErrUnavailable)
	}
	return cdn, nil
}

// getRequest is POST /resources/get[/folder] for name.
func (c *Client) getRequest(op, folder, name string) *request {
	return &request{
		op:     op,
		method: http.MethodPost,
		path:   "/resources/get" + folderPath(folder),
		limit:  MaxResourceSize,
		body: func(s *session) (io.Reader, string, int64, error) {
			return jsonBody(struct {
				Password string `json:"password"`
				Hardware string `json:"hardware"`
				FileName string `json:"fileName"`
			}{s.password, c.hardware, name})
		},
	}
}

// loginRequest is POST /login with the credentials.
func loginRequest(email, password string) *request {
	return &request{
		op:     "login",
		method: http.MethodPost,
		path:   "/login",
		limit:  maxSmallAnswer,
		body: func(*session) (io.Reader, string, int64, error) {
			return jsonBody(struct {
				Email    string `json:"email"`
				Password string `json:"password"`
			}{email, password})
		},
	}
}

// decodeToken reads the token from the answer to /login.
func decodeToken(body []byte) (string, error) {
	var v struct {
		Token string `json:"token"`
	}
	if err := json.Unmarshal(body, &v); err != nil || v.Token == "" {
		return "", fmt.Errorf("%w: the login answer has no token", ErrUnavailable)
	}
	return v.Token, nil
}

// folderPath is the path segment for folder, empty for the top level.
func folderPath(folder string) string {
	if folder == "" {
		return ""
	}
	return "/" + url.PathEscape(folder)
}

// resourceName names a file in errors and logs.
func resourceName(folder, name string) string {
	if folder == "" {
		return name
	}
	return folder + "/" + name
}
