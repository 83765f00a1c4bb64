package refapi

import (
	"bytes"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"os"

	"go.yaml.in/yaml/v3"
)

// User is an account of the reference API.
type User struct {
	ID       string `yaml:"id" json:"id"`
	Email    string `yaml:"email" json:"email"`
	Password string `yaml:"password" json:"password"`
	// Role is one of SPEC §3's role names: None, Operator, Validator, CompanionPC, Admin,
	// ResourceUploader, ApiAdmin. Empty means None. Roles are put into the token only: the
	// reference API does not restrict endpoints by role, because the SPEC does not say which
	// role may call what, and the loader must not depend on a guess.
	Role string `yaml:"role" json:"role"`
	// Hardware is the bound hardware fingerprint; empty means "bind on the first resource
	// request", as the real API does for a new device.
	Hardware string `yaml:"hardware" json:"hardware"`
}

// roles are SPEC §3's role names. The token carries the name, not the number.
var roles = map[string]bool{
	"None": true, "Operator": true, "Validator": true, "CompanionPC": true,
	"Admin": true, "ResourceUploader": true, "ApiAdmin": true,
}

// LoadUsers reads a YAML file holding a list of users, e.g.
//
//	users.yaml:
//	- email: operator@azaion.local
//	  password: secret
//	  role: Operator
//	  hardware: ""
func LoadUsers(path string) ([]User, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	var users []User
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true) // a misspelt key ("pasword") is a mistake, not an empty field
	if err := dec.Decode(&users); err != nil && !errors.Is(err, io.EOF) {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	if err := checkUsers(users); err != nil {
		return nil, fmt.Errorf("users file %s: %w", path, err)
	}
	return users, nil
}

// checkUsers rejects user lists the server could not serve unambiguously. Emails are compared
// exactly: the email is part of the API key (SPEC §4), so folding case here would make the
// server encrypt with a different key from the one the client derives.
func checkUsers(users []User) error {
	seen := make(map[string]bool, len(users))
	for i, u := range users {
		if u.Email == "" || u.Password == "" {
			return fmt.Errorf("user %d: email and password are required", i)
		}
		if seen[u.Email] {
			return fmt.Errorf("user %d: duplicate email %q", i, u.Email)
		}
		seen[u.Email] = true
		if u.Role != "" && !roles[u.Role] {
			return fmt.Errorf("user %q: unknown role %q", u.Email, u.Role)
		}
	}
	return nil
}

// newID returns a random UUID (version 4), the shape of the real API's user ids.
func newID() string {
	var b [16]byte
	rand.Read(b[:])
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	return fmt.Sprintf("%x-%x-%x-%x-%x", b[0:4], b[4:6], b[6:8], b[8:10], b[10:16])
}
