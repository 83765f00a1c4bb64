// Package bytesize reads and writes the byte sizes the benchmarks take as flags and print.
package bytesize

import (
	"fmt"
	"strconv"
	"strings"
)

// Parse reads a positive size: a number of bytes, or a number with KiB, MiB, GiB or B after it.
func Parse(s string) (int64, error) {
	s = strings.TrimSpace(s)
	mult := int64(1)
	for _, u := range []struct {
		suffix string
		mult   int64
	}{{"GiB", 1 << 30}, {"MiB", 1 << 20}, {"KiB", 1 << 10}, {"B", 1}} {
		if v, ok := strings.CutSuffix(s, u.suffix); ok {
			s, mult = v, u.mult
			break
		}
	}
	n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
	if err != nil || n <= 0 {
		return 0, fmt.Errorf("want a positive size such as 256MiB, got %q", s)
	}
	return n * mult, nil
}

// Format writes n bytes in GiB from 1 GiB up, in MiB below, and as "unknown" when n is negative.
func Format(n int64) string {
	switch {
	case n < 0:
		return "unknown"
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	default:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	}
}
