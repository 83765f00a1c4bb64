package refapi_test

import (
	"go/parser"
	"go/token"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// The reference API is the independent other side of the contract (SPEC §9): of the loader's
// packages it may import only protocol-free plumbing, which itself imports nothing of ours.
// A shared bug in the crypto, the names or the protocol could not then pass both sides' tests.
func TestImportsNoContractOfTheLoader(t *testing.T) {
	const module = "github.com/azaion/loader/"
	allowed := map[string]bool{module + "internal/streams": true, module + "internal/httprec": true}
	for _, c := range []struct {
		dir   string
		allow map[string]bool
	}{
		{".", allowed},
		{"../streams", nil},
		{"../httprec", nil},
	} {
		for _, imp := range imports(t, c.dir) {
			if strings.HasPrefix(imp, module) && !c.allow[imp] {
				t.Errorf("%s imports %s", filepath.Clean(c.dir), imp)
			}
		}
	}
}

// imports lists what the non-test Go files in dir import.
func imports(t *testing.T, dir string) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(dir, "*.go"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no Go files in %s: %v", dir, err)
	}
	var out []string
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		pf, err := parser.ParseFile(token.NewFileSet(), f, nil, parser.ImportsOnly)
		if err != nil {
			t.Fatal(err)
		}
		for _, is := range pf.Imports {
			p, _ := strconv.Unquote(is.Path.Value)
			out = append(out, p)
		}
	}
	return out
}
