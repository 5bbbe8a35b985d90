package repocheck

import (
	"os"
	"regexp"
	"strings"
	"testing"
)

func read(t *testing.T, path string) string {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

var goTestLine = regexp.MustCompile(`(?m)^(go test [^#\n]*?)\s*(#.*)?$`)

// TestCIRunsTheReadmeTestCommand: .ci/run must run exactly the test command
// the README gives a newcomer.
func TestCIRunsTheReadmeTestCommand(t *testing.T) {
	readme := read(t, "../../../README.md")
	ci := read(t, "../../../.ci/run")
	m := goTestLine.FindStringSubmatch(readme)
	if m == nil {
		t.Fatal("README.md has no `go test` command line")
	}
	cmd := strings.TrimSpace(m[1])
	found := false
	for _, line := range strings.Split(ci, "\n") {
		if strings.TrimSpace(line) == cmd {
			found = true
		}
	}
	if !found {
		t.Fatalf(".ci/run does not run the README's test command %q", cmd)
	}
}

// TestReadmeFirstScreen: the two commands are within the first 40 lines.
func TestReadmeFirstScreen(t *testing.T) {
	lines := strings.Split(read(t, "../../../README.md"), "\n")
	first := strings.Join(lines[:min(40, len(lines))], "\n")
	for _, want := range []string{"go run ./cmd/ptproxy demo", "go test "} {
		if !strings.Contains(first, want) {
			t.Errorf("README's first screen lacks %q", want)
		}
	}
}
