package report

import (
	"strings"
	"testing"
)

func TestSection(t *testing.T) {
	var b strings.Builder
	s := Section{Title: "t", Rows: []Row{{"a|b", "1", "", Ratio(1, 2)}}, Notes: []string{"n"}, LoadBefore: "0.1 0.2 0.3"}
	if err := s.Write(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{"### t\n\n| figure | ours | baseline (same run) | ratio |\n|---|---|---|---|\n| a\\|b | 1 | — | 0.50× |\n\nn\n\nMachine: ", "load average 0.1 0.2 0.3 → "} {
		if !strings.Contains(out, want) {
			t.Errorf("section lacks %q:\n%s", want, out)
		}
	}
	if Ratio(1, 0) != "" {
		t.Error("a ratio to nothing")
	}
}
