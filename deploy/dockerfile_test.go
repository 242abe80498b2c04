package deploy

import (
	"debug/elf"
	"errors"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/moby/buildkit/frontend/dockerfile/instructions"
	"github.com/moby/buildkit/frontend/dockerfile/linter"
	"github.com/moby/buildkit/frontend/dockerfile/parser"
	"github.com/moby/patternmatcher"
	"github.com/moby/patternmatcher/ignorefile"
	"golang.org/x/mod/semver"
)

// dockerfile parses the Dockerfile as BuildKit does, with the checks of
// `docker build --check` that need no image: any warning fails.
func dockerfile(t *testing.T) ([]instructions.Stage, []instructions.ArgCommand) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	for _, w := range res.Warnings {
		t.Errorf("Dockerfile: %s", w.Short)
	}
	lint := linter.New(&linter.Config{Warn: func(rule, _, _, msg string, loc []parser.Range) {
		line := 0
		if len(loc) > 0 {
			line = loc[0].Start.Line
		}
		t.Errorf("Dockerfile, line %d: %s: %s", line, rule, msg)
	}})
	stages, metaArgs, err := instructions.Parse(res.AST, lint)
	if err != nil {
		t.Fatalf("Dockerfile: %v", err)
	}
	return stages, metaArgs
}

// TestDockerfile checks the image's recipe without Docker: its syntax,
// a non-root numeric user, a HEALTHCHECK on /readyz, a Go new enough for
// go.mod. TestDockerBuildStage runs its build.
func TestDockerfile(t *testing.T) {
	stages, metaArgs := dockerfile(t)
	if len(stages) != 2 {
		t.Fatalf("%d stages, want build and runtime", len(stages))
	}
	build, final := stages[0], stages[1]
	args := map[string]string{}
	for _, a := range metaArgs {
		for _, kv := range a.Args {
			args[kv.Key] = kv.ValueString()
		}
	}
	// The golang image runs its own Go (GOTOOLCHAIN=local): older than
	// go.mod's go line, it refuses to build.
	goMod := string(readFile(t, filepath.Join(root, "go.mod")))
	want := regexp.MustCompile(`(?m)^go (\S+)$`).FindStringSubmatch(goMod)
	if want == nil {
		t.Fatal("go.mod has no go line")
	}
	base := strings.ReplaceAll(build.BaseName, "${GO_VERSION}", args["GO_VERSION"])
	m := regexp.MustCompile(`^golang:(\d+\.\d+(?:\.\d+)?)-alpine$`).FindStringSubmatch(base)
	if m == nil {
		t.Fatalf("build stage FROM %s (GO_VERSION %q): want golang:<version>-alpine", build.BaseName, args["GO_VERSION"])
	}
	if semver.Compare("v"+m[1], "v"+want[1]) < 0 {
		t.Errorf("the build stage's Go %s is older than go.mod's go %s", m[1], want[1])
	}
	if !strings.HasPrefix(final.BaseName, "alpine:") {
		t.Errorf("runtime stage FROM %s: the HEALTHCHECK and Kubernetes' preStop rely on busybox's wget and sleep", final.BaseName)
	}

	var user string
	var health *instructions.HealthCheckCommand
	var entrypoint []string
	var exposed []string
	env := map[string]string{}
	copied := map[string]bool{}
	for _, cmd := range final.Commands {
		switch c := cmd.(type) {
		case *instructions.UserCommand:
			user = c.User
		case *instructions.HealthCheckCommand:
			health = c
		case *instructions.EntrypointCommand:
			if c.PrependShell {
				t.Errorf("ENTRYPOINT in shell form: chatd would not get SIGTERM, the shell would")
			}
			entrypoint = c.CmdLine
		case *instructions.ExposeCommand:
			exposed = append(exposed, c.Ports...)
		case *instructions.EnvCommand:
			for _, kv := range c.Env {
				env[kv.Key] = kv.Value
			}
		case *instructions.CopyCommand:
			copied[c.DestPath] = true
		case *instructions.RunCommand:
			t.Errorf("the runtime stage runs %q: nothing checks it here", c.CmdLine)
		}
	}
	uid, _, _ := strings.Cut(user, ":")
	if n, err := strconv.Atoi(uid); err != nil || n == 0 {
		t.Errorf("USER %q: want a numeric user other than root, which runAsNonRoot can check", user)
	}
	if len(entrypoint) != 1 || !copied["/usr/local/bin/"+entrypoint[0]] {
		t.Errorf("ENTRYPOINT %q is not the binary copied to /usr/local/bin", entrypoint)
	}
	checkChatdConfig(t, "Dockerfile ENV", nil, withJWT(env))
	_, httpPort, _ := strings.Cut(env["CHATD_HTTP"], ":")
	if !slices.Contains(exposed, httpPort) || !slices.Contains(exposed, "6222") {
		t.Errorf("EXPOSE %v: want the HTTP port of CHATD_HTTP (%s) and the routes' 6222", exposed, env["CHATD_HTTP"])
	}
	if !copied[env["CHATD_DATA_DIR"]] {
		t.Errorf("CHATD_DATA_DIR %s is not the directory made for the user", env["CHATD_DATA_DIR"])
	}

	if health == nil {
		t.Fatal("no HEALTHCHECK")
	}
	h := health.Health
	if len(h.Test) != 2 || h.Test[0] != "CMD-SHELL" || !strings.Contains(h.Test[1], "/readyz") {
		t.Fatalf("HEALTHCHECK %q: want a shell command that GETs /readyz", h.Test)
	}
	if h.StartPeriod < 3*time.Minute || h.Timeout < 3*time.Second {
		t.Errorf("HEALTHCHECK start period %s, timeout %s: a node may wait 3 minutes for peers and PostgreSQL, and /readyz answers within 2 s",
			h.StartPeriod, h.Timeout)
	}
	// Run the check as Docker would, on this machine's wget (busybox's in
	// the image takes the same -q -O): 0 on a ready chatd, else not.
	wget, err := lookPath("wget")
	if err != nil {
		t.Skipf("HEALTHCHECK command not run: %v", err)
	}
	addr := startChatd(t, "--dev", "--data-dir", t.TempDir())
	check := func(httpAddr string) error {
		dir := t.TempDir()
		if err := os.Symlink(wget, filepath.Join(dir, "wget")); err != nil {
			t.Fatal(err)
		}
		cmd := exec.Command("/bin/sh", "-c", h.Test[1])
		cmd.Env = []string{"CHATD_HTTP=" + httpAddr, "PATH=" + dir}
		return cmd.Run()
	}
	if getStatus(t, "http://"+addr+"/readyz") != 200 {
		t.Fatal("chatd is not ready")
	}
	if err := check(strings.Replace(addr, "127.0.0.1", "0.0.0.0", 1)); err != nil {
		t.Errorf("HEALTHCHECK fails on a ready chatd: %v", err)
	}
	if err := check("0.0.0.0:1"); err == nil {
		t.Error("HEALTHCHECK passes with no chatd there")
	}
}

// withJWT adds the secret production needs to an environment that leaves
// it to the operator.
func withJWT(env map[string]string) map[string]string {
	out := map[string]string{"CHATD_JWT_SECRET": strings.Repeat("s", 48)}
	for k, v := range env {
		out[k] = v
	}
	return out
}

// TestDockerBuildStage runs the Dockerfile's build stage here, as
// `docker build` would, in a copy of the build context that .dockerignore
// leaves: its COPY and RUN lines, with /out in a temporary directory. The
// binary must be static (the runtime stage has no Go libc to match) and
// print the VERSION build argument. What it cannot show: that the images
// FROM names exist, and busybox's own wget; Docker is not run.
func TestDockerBuildStage(t *testing.T) {
	stages, _ := dockerfile(t)
	ctx := buildContext(t)
	out := t.TempDir()
	const version = "v0.0.0-dockertest"
	var runs int
	for _, cmd := range stages[0].Commands {
		switch c := cmd.(type) {
		case *instructions.CopyCommand:
			for _, src := range c.SourcePaths {
				if _, err := os.Stat(filepath.Join(ctx, src)); err != nil {
					t.Errorf("COPY %s: not in the build context: %v", src, err)
				}
			}
		case *instructions.RunCommand:
			if !c.PrependShell || len(c.CmdLine) != 1 {
				t.Fatalf("RUN %q: want the shell form", c.CmdLine)
			}
			line := strings.ReplaceAll(c.CmdLine[0], " /out/", " "+out+"/")
			cmd := exec.Command("/bin/sh", "-c", line)
			cmd.Dir = ctx
			cmd.Env = append(os.Environ(), "VERSION="+version)
			if b, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("RUN %s: %v\n%s", line, err, b)
			}
			runs++
		}
	}
	if runs == 0 {
		t.Fatal("the build stage runs nothing")
	}
	bin := filepath.Join(out, "chatd")
	for _, cmd := range stages[1].Commands {
		if c, ok := cmd.(*instructions.CopyCommand); ok && c.From == stages[0].Name {
			for _, src := range c.SourcePaths {
				if _, err := os.Stat(filepath.Join(out, strings.TrimPrefix(src, "/out/"))); err != nil {
					t.Errorf("COPY --from=%s %s: the build made no such thing", c.From, src)
				}
			}
		}
	}
	f, err := elf.Open(bin)
	if err != nil {
		t.Fatal(err)
	}
	defer func() { _ = f.Close() }()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			t.Error("the binary is dynamically linked (it names an interpreter): build it with CGO_ENABLED=0")
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("the binary needs %v", libs)
	}
	if b, err := exec.Command(bin, "--version").Output(); err != nil || string(b) != "chatd "+version+"\n" {
		t.Errorf("--version of the image's binary: %q %v, want chatd %s", b, err, version)
	}
}

// buildContext copies what `docker build .` sends, the repository less
// what .dockerignore names, to a temporary directory.
func buildContext(t *testing.T) string {
	t.Helper()
	patterns, err := ignorefile.ReadAll(strings.NewReader(string(readFile(t, filepath.Join(root, ".dockerignore")))))
	if err != nil {
		t.Fatal(err)
	}
	pm, err := patternmatcher.New(patterns)
	if err != nil {
		t.Fatal(err)
	}
	dst := t.TempDir()
	src, err := filepath.Abs(root)
	if err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(src, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, path)
		if rel == "." {
			return nil
		}
		if skip, err := pm.MatchesOrParentMatches(filepath.ToSlash(rel)); err != nil || skip {
			if d.IsDir() {
				return filepath.SkipDir
			}
			return err
		}
		to := filepath.Join(dst, rel)
		switch {
		case d.IsDir():
			return os.MkdirAll(to, 0o755)
		case d.Type().IsRegular():
			b, err := os.ReadFile(path)
			if err != nil {
				return err
			}
			return os.WriteFile(to, b, 0o644)
		}
		return nil // sockets and the like: nothing a build reads
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dst, "deploy")); !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(".dockerignore does not leave deploy/ out: the copy is not what Docker sends")
	}
	return dst
}
