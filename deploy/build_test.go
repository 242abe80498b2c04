package deploy

import (
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// TestBuildStampsGitDescribe runs scripts/build in a clone of the
// repository that the test tags, and reads the stamp back from --version:
// the tag on the tagged commit, then the tag, the commits since and the
// commit, with -dirty, once the tree has moved on and changed.
func TestBuildStampsGitDescribe(t *testing.T) {
	if _, err := lookPath("git"); err != nil {
		t.Fatal(err)
	}
	repo, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	clone := filepath.Join(t.TempDir(), "chatd")
	git := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("git", append([]string{"-C", clone, "-c", "user.name=test", "-c", "user.email=test@invalid",
			"-c", "commit.gpgsign=false", "-c", "tag.gpgsign=false"}, args...)...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return strings.TrimSpace(string(out))
	}
	if out, err := exec.Command("git", "clone", "--quiet", "--shared", repo, clone).CombinedOutput(); err != nil {
		t.Fatalf("git clone: %v\n%s", err, out)
	}
	// The script under test is the working tree's, committed in the clone
	// so that the tree is clean; the commit is the clone's own, so the tag
	// is the only one on it.
	if err := os.WriteFile(filepath.Join(clone, "scripts", "build"), readFile(t, filepath.Join(root, "scripts", "build")), 0o755); err != nil {
		t.Fatal(err)
	}
	git("add", "scripts/build")
	git("commit", "--quiet", "--allow-empty", "-m", "build under test")
	git("tag", "v9.8.7-deploytest")

	version := func() string {
		t.Helper()
		bin := filepath.Join(t.TempDir(), "chatd")
		// From another directory: the output path is the caller's.
		cmd := exec.Command(filepath.Join(clone, "scripts", "build"), filepath.Base(bin))
		cmd.Dir = filepath.Dir(bin)
		cmd.Env = append(os.Environ(), "VERSION=") // the stamp comes from git
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("scripts/build: %v\n%s", err, out)
		}
		out, err := exec.Command(bin, "--version").Output()
		if err != nil {
			t.Fatalf("--version: %v", err)
		}
		return strings.TrimSpace(string(out))
	}
	if got := version(); got != "chatd v9.8.7-deploytest" {
		t.Errorf("tagged commit: --version says %q, want chatd v9.8.7-deploytest", got)
	}

	git("commit", "--quiet", "--allow-empty", "-m", "one past the tag")
	if err := os.WriteFile(filepath.Join(clone, "README.md"), []byte("changed\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	want := regexp.MustCompile(`^chatd v9\.8\.7-deploytest-1-g` + git("rev-parse", "--short", "HEAD") + `[0-9a-f]*-dirty$`)
	if got := version(); !want.MatchString(got) {
		t.Errorf("a changed tree one commit past the tag: --version says %q, want %s", got, want)
	}
}
