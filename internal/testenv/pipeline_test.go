package testenv_test

import (
	"os"
	"slices"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

// TestHostedPipelineRunsTheFullSuite: the Woodpecker pipeline that gates the image push runs
// the same command as `make test` (.ci/run → make test → scripts/test.sh), privileged so that
// its dockerd can start, on every event that can lead to a push; not a subset of the packages.
func TestHostedPipelineRunsTheFullSuite(t *testing.T) {
	var pipeline struct {
		When []struct {
			Event []string `yaml:"event"`
		} `yaml:"when"`
		Steps []struct {
			Name       string   `yaml:"name"`
			Privileged bool     `yaml:"privileged"`
			Commands   []string `yaml:"commands"`
		} `yaml:"steps"`
	}
	data, err := os.ReadFile("../../.woodpecker/test.yml")
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.Unmarshal(data, &pipeline); err != nil {
		t.Fatal(err)
	}
	var events []string
	for _, w := range pipeline.When {
		events = append(events, w.Event...)
	}
	for _, e := range []string{"push", "pull_request", "tag", "manual"} {
		if !slices.Contains(events, e) {
			t.Errorf("the test pipeline does not run on %s", e)
		}
	}
	full := false
	for _, s := range pipeline.Steps {
		for _, c := range s.Commands {
			if strings.TrimSpace(c) == "bash .ci/run" {
				full = true
				if !s.Privileged {
					t.Errorf("step %s runs the suite unprivileged: its dockerd cannot start", s.Name)
				}
			}
			if strings.Contains(c, "go test") {
				t.Errorf("step %s runs go test itself (%q): a subset of what make test runs", s.Name, c)
			}
		}
	}
	if !full {
		t.Error("no step runs `bash .ci/run`")
	}
	ci, err := os.ReadFile("../../.ci/run")
	if err != nil || !strings.Contains(string(ci), "exec make test") {
		t.Errorf(".ci/run does not run make test (%v)", err)
	}
	mk, err := os.ReadFile("../../Makefile")
	if err != nil || !strings.Contains(string(mk), "test:\n\tbash scripts/test.sh\n") {
		t.Errorf("make test is not bash scripts/test.sh (%v)", err)
	}
}
