package device

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Parse reads a device config: KEY=VALUE lines as in a systemd EnvironmentFile. Lines starting
// with '#' or ';' are comments, blank lines are skipped, whitespace around the key and the value
// is ignored, and a value may be quoted: 'single quotes' take every byte literally, "double
// quotes" understand \" and \\. Both keys must be present and non-empty, each once; any other
// key is an error. Errors name the line and the key, never the value.
func Parse(data []byte) (Identity, error) {
	if !utf8.Valid(data) {
		return Identity{}, errors.New("is not UTF-8 text")
	}
	var id Identity
	seen := map[string]int{}
	for i, line := range bytes.Split(data, []byte("\n")) {
		n := i + 1
		s := strings.TrimSpace(strings.TrimSuffix(string(line), "\r"))
		if s == "" || s[0] == '#' || s[0] == ';' {
			continue
		}
		key, raw, ok := strings.Cut(s, "=")
		if !ok {
			return Identity{}, fmt.Errorf("line %d is not KEY=VALUE", n)
		}
		key = strings.TrimSpace(key)
		if !isKey(key) {
			return Identity{}, fmt.Errorf("line %d: the key is not a variable name", n)
		}
		value, err := unquote(strings.TrimSpace(raw))
		if err != nil {
			return Identity{}, fmt.Errorf("line %d: %s %w", n, key, err)
		}
		if prev, dup := seen[key]; dup {
			return Identity{}, fmt.Errorf("line %d: %s is set again (first on line %d)", n, key, prev)
		}
		seen[key] = n
		switch key {
		case KeyEmail:
			id.Email = value
		case KeyPassword:
			id.Password = value
		default:
			return Identity{}, fmt.Errorf("line %d: unknown key %s", n, key)
		}
	}
	switch {
	case id.Email == "" && id.Password == "":
		return Identity{}, fmt.Errorf("%s and %s are missing or empty", KeyEmail, KeyPassword)
	case id.Email == "":
		return Identity{}, fmt.Errorf("%s is missing or empty", KeyEmail)
	case id.Password == "":
		return Identity{}, fmt.Errorf("%s is missing or empty", KeyPassword)
	}
	return id, nil
}

// isKey reports whether s is a shell variable name, so that an error may name it: a line whose
// key is anything else (a password pasted on its own, say) is not repeated.
func isKey(s string) bool {
	if s == "" || len(s) > 64 {
		return false
	}
	for i, c := range []byte(s) {
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || i > 0 && c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// unquote returns a value without its quotes. An unquoted value is taken as it is.
func unquote(v string) (string, error) {
	if v == "" || (v[0] != '"' && v[0] != '\'') {
		return v, nil
	}
	q := v[0]
	if len(v) < 2 || v[len(v)-1] != q {
		return "", errors.New("has an unterminated quote")
	}
	inner := v[1 : len(v)-1]
	if q == '\'' {
		if strings.ContainsRune(inner, '\'') {
			return "", errors.New("has a stray single quote inside single quotes")
		}
		return inner, nil
	}
	var b strings.Builder
	for i := 0; i < len(inner); i++ {
		c := inner[i]
		switch {
		case c == '\\' && i+1 < len(inner):
			i++
			b.WriteByte(inner[i])
		case c == '\\':
			return "", errors.New("ends with a lone backslash inside double quotes")
		case c == '"':
			return "", errors.New("has an unescaped double quote inside double quotes")
		default:
			b.WriteByte(c)
		}
	}
	return b.String(), nil
}

// Canonical is the identity as a device config of its two keys only, each value in double
// quotes, which Parse reads back to the same identity. It is what gets sealed: the smallest
// text, with no comment of the provisioning file. It holds the password: clear it after use.
func (id Identity) Canonical() []byte {
	var b bytes.Buffer
	b.Grow(64 + 2*(len(id.Email)+len(id.Password))) // no regrowth leaving copies behind
	for _, kv := range [][2]string{{KeyEmail, id.Email}, {KeyPassword, id.Password}} {
		b.WriteString(kv[0])
		b.WriteString("=\"")
		for _, c := range []byte(kv[1]) {
			if c == '"' || c == '\\' {
				b.WriteByte('\\')
			}
			b.WriteByte(c)
		}
		b.WriteString("\"\n")
	}
	return b.Bytes()
}
