// Package report writes what a bench program prints on stdout: one Markdown section, the
// contract scripts/bench.sh builds bench/RESULTS.md from (DEVELOPERS.md, "Benchmarks").
//
//	### <title>
//
//	| figure | ours | baseline (same run) | ratio |
//	|---|---|---|---|
//	| ... |
//
//	<notes>
//
//	Machine: <CPU>, <cores> cores, <memory>, <Go>; load average before → after.
//
// Progress and diagnostics go to stderr; stdout holds the section only.
package report

import (
	"fmt"
	"io"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Row is one figure next to its baseline. Ratio is ours/baseline as the reader should read
// it (say which way is better in the figure's name); empty when there is no baseline.
type Row struct {
	Figure, Ours, Baseline, Ratio string
}

// Section is one bench program's result.
type Section struct {
	Title string
	Rows  []Row
	Notes []string // paragraphs after the table
	// LoadBefore is the load average when the program began (LoadAverage()).
	LoadBefore string
}

// Write prints the section to w.
func (s Section) Write(w io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "### %s\n\n", s.Title)
	b.WriteString("| figure | ours | baseline (same run) | ratio |\n|---|---|---|---|\n")
	for _, r := range s.Rows {
		fmt.Fprintf(&b, "| %s | %s | %s | %s |\n", cell(r.Figure), cell(r.Ours), cell(r.Baseline), cell(r.Ratio))
	}
	for _, n := range s.Notes {
		fmt.Fprintf(&b, "\n%s\n", n)
	}
	fmt.Fprintf(&b, "\n%s\n", Machine(s.LoadBefore))
	_, err := io.WriteString(w, b.String())
	return err
}

func cell(s string) string {
	if s == "" {
		return "—"
	}
	return strings.ReplaceAll(s, "|", `\|`)
}

// Ratio formats a/b, or "" when b is not positive.
func Ratio(a, b float64) string {
	if b <= 0 {
		return ""
	}
	return strconv.FormatFloat(a/b, 'f', 2, 64) + "×"
}

// Machine is the section's last line: what the figures were measured on.
func Machine(loadBefore string) string {
	load := LoadAverage()
	if loadBefore != "" {
		load = loadBefore + " → " + load
	}
	return fmt.Sprintf("Machine: %s, %d cores, %s RAM, %s %s/%s; load average %s.",
		CPUModel(), runtime.NumCPU(), memTotal(), runtime.Version(), runtime.GOOS, runtime.GOARCH, load)
}

// CPUModel is the model name of /proc/cpuinfo.
func CPUModel() string {
	b, _ := os.ReadFile("/proc/cpuinfo")
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "model name"); ok {
			return strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
		}
	}
	return "unknown CPU"
}

// LoadAverage is the 1, 5 and 15 minute load average.
func LoadAverage() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}
	f := strings.Fields(string(b))
	if len(f) < 3 {
		return "unknown"
	}
	return strings.Join(f[:3], " ")
}

func memTotal() string {
	b, _ := os.ReadFile("/proc/meminfo")
	for line := range strings.SplitSeq(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
			kb, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 10, 64)
			if err == nil {
				return fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
			}
		}
	}
	return "unknown"
}

// Progress prints a line for the person watching, on stderr.
func Progress(format string, a ...any) {
	fmt.Fprintf(os.Stderr, format+"\n", a...)
}
