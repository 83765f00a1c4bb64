package bytesize

import "testing"

func TestParse(t *testing.T) {
	for in, want := range map[string]int64{"1": 1, "512B": 512, "4KiB": 4 << 10, " 256MiB": 256 << 20, "1GiB ": 1 << 30} {
		if got, err := Parse(in); err != nil || got != want {
			t.Errorf("Parse(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, in := range []string{"", "0", "-1MiB", "1MB", "MiB", "1.5GiB"} {
		if got, err := Parse(in); err == nil {
			t.Errorf("Parse(%q) = %d, want an error", in, got)
		}
	}
}

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{-1: "unknown", 0: "0.0 MiB", 16 << 20: "16.0 MiB", 3 << 29: "1.50 GiB"} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}
