package localcluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

// BinDirEnv names the environment variable that says where the PostgreSQL
// server programs are, when FindBinDir is not told.
const BinDirEnv = "PGQUORUM_PG_BINDIR"

// ErrPostgresNotFound is wrapped by the errors of FindBinDir and Start when the PostgreSQL server
// programs are not installed; callers use it to tell "install PostgreSQL" from a real failure.
var ErrPostgresNotFound = errors.New("PostgreSQL server programs not found")

// serverPrograms are what a bin dir must hold for localcluster.
var serverPrograms = []string{"initdb", "pg_ctl", "pg_basebackup", "postgres"}

// hasServerPrograms reports whether dir holds the server programs.
func hasServerPrograms(dir string) bool {
	for _, program := range serverPrograms {
		info, err := os.Stat(filepath.Join(dir, program))
		if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
			return false
		}
	}
	return true
}

// FindBinDir returns the directory holding the PostgreSQL server programs
// (any major version pgquorum supports: 15, 16, 17). A non-empty binDir is
// checked and returned as is; otherwise, in order: $PGQUORUM_PG_BINDIR, the
// --bindir of pg_config on PATH, the directory of pg_ctl on PATH, and the
// newest version in the Debian (/usr/lib/postgresql/N/bin) and Red Hat
// (/usr/pgsql-N/bin) layouts.
func FindBinDir(binDir string) (string, error) {
	if binDir == "" {
		binDir = os.Getenv(BinDirEnv)
	}
	if binDir != "" {
		if !hasServerPrograms(binDir) {
			return "", fmt.Errorf("%w: bin dir %s lacks one of %s", ErrPostgresNotFound, binDir, strings.Join(serverPrograms, ", "))
		}
		return binDir, nil
	}
	var tried []string
	if path, err := exec.LookPath("pg_config"); err == nil {
		if out, err := exec.Command(path, "--bindir").Output(); err == nil {
			if dir := strings.TrimSpace(string(out)); hasServerPrograms(dir) {
				return dir, nil
			}
		}
		tried = append(tried, "pg_config --bindir")
	}
	if path, err := exec.LookPath("pg_ctl"); err == nil {
		// pg_ctl on PATH is often a symlink into the real bin dir, next to postgres and initdb.
		if resolved, err := filepath.EvalSymlinks(path); err == nil {
			path = resolved
		}
		if dir := filepath.Dir(path); hasServerPrograms(dir) {
			return dir, nil
		}
		tried = append(tried, "pg_ctl on PATH")
	}
	if dirs := InstalledBinDirs(); len(dirs) > 0 {
		return dirs[len(dirs)-1], nil
	}
	tried = append(tried, "/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin")
	return "", fmt.Errorf("%w (looked at $%s, %s): install PostgreSQL 15, 16 or 17, or set %s",
		ErrPostgresNotFound, BinDirEnv, strings.Join(tried, ", "), BinDirEnv)
}

// InstalledBinDirs lists the bin dirs of every PostgreSQL major version
// installed in the Debian and Red Hat layouts, oldest version first.
func InstalledBinDirs() []string {
	type found struct {
		version int
		dir     string
	}
	var all []found
	for _, pattern := range []string{"/usr/lib/postgresql/*/bin", "/usr/pgsql-*/bin"} {
		matches, _ := filepath.Glob(pattern)
		for _, dir := range matches {
			name := filepath.Base(filepath.Dir(dir))
			version, err := strconv.Atoi(strings.TrimPrefix(name, "pgsql-"))
			if err != nil || !hasServerPrograms(dir) {
				continue
			}
			all = append(all, found{version, dir})
		}
	}
	slices.SortFunc(all, func(a, b found) int { return a.version - b.version })
	dirs := make([]string, len(all))
	for i, f := range all {
		dirs[i] = f.dir
	}
	return dirs
}

// runner runs PostgreSQL programs and creates files as the OS user that owns the cluster: the
// postgres user when this process is root (PostgreSQL refuses to run as root), else the current
// user. It holds no mutable state and is safe for concurrent use.
type runner struct {
	binDir  string
	workDir string // working directory of every program; must be traversable by the run user
	// cred is nil when we run as ourselves; otherwise the postgres user's uid/gid.
	cred *syscall.Credential
}

func newRunner(binDir, workDir string) (*runner, error) {
	r := &runner{binDir: binDir, workDir: workDir}
	if os.Geteuid() != 0 {
		return r, nil
	}
	u, err := user.Lookup(SuperUser)
	if err != nil {
		return nil, fmt.Errorf("running as root, so PostgreSQL must run as OS user %q: %w", SuperUser, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("uid of OS user %q: %w", SuperUser, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("gid of OS user %q: %w", SuperUser, err)
	}
	// Groups is empty on purpose: the child must not keep root's supplementary groups.
	r.cred = &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid), Groups: []uint32{}}
	return r, nil
}

// command prepares program (a file in binDir) with a minimal environment, so PG* variables of the
// caller cannot redirect it, in its own process group, so a terminal's Ctrl-C does not reach it.
func (r *runner) command(ctx context.Context, program string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(r.binDir, program), args...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "LC_ALL=C", "LANG=C"}
	cmd.Dir = r.workDir
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: r.cred, Setpgid: true}
	// pg_ctl's server inherits nothing of ours, but bound the wait for output pipes anyway.
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs program to completion; the error carries its output.
func (r *runner) run(ctx context.Context, program string, args ...string) error {
	var out bytes.Buffer
	cmd := r.command(ctx, program, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", err, ctxErr)
		}
		return fmt.Errorf("%s %s: %w: %s", program, strings.Join(args, " "), err, strings.TrimSpace(out.String()))
	}
	return nil
}

// own gives path to the run user (a no-op when we are not root).
func (r *runner) own(path string) error {
	if r.cred == nil {
		return nil
	}
	if err := os.Chown(path, int(r.cred.Uid), int(r.cred.Gid)); err != nil {
		return fmt.Errorf("chown %s to %s: %w", path, SuperUser, err)
	}
	return nil
}

// mkdir creates a 0700 directory owned by the run user; it fails if path exists.
func (r *runner) mkdir(path string) error {
	if err := os.Mkdir(path, 0o700); err != nil {
		return fmt.Errorf("create directory: %w", err)
	}
	return r.own(path)
}

// writeFile writes a 0600 file owned by the run user, replacing any previous content.
func (r *runner) writeFile(path string, data []byte) error {
	if err := os.WriteFile(path, data, 0o600); err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	return r.own(path)
}

// appendFile appends to an existing file, keeping its owner.
func appendFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		return fmt.Errorf("open %s: %w", path, err)
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

// checkTraversable verifies that the run user can reach dir: every ancestor must be searchable
// by it. Root-created temporary directories are 0700, which locks the postgres user out with a
// confusing "Permission denied" deep inside initdb; this says which directory to fix instead.
func (r *runner) checkTraversable(dir string) error {
	if r.cred == nil {
		return nil
	}
	for d := dir; ; d = filepath.Dir(d) {
		info, err := os.Stat(d)
		if err != nil {
			return err
		}
		st, ok := info.Sys().(*syscall.Stat_t)
		if !ok {
			return nil
		}
		mode := info.Mode().Perm()
		searchable := mode&0o001 != 0 ||
			(st.Uid == r.cred.Uid && mode&0o100 != 0) ||
			(st.Gid == r.cred.Gid && mode&0o010 != 0)
		if !searchable {
			return fmt.Errorf("OS user %s cannot traverse %s (mode %v): chmod o+x it or choose another directory", SuperUser, d, mode)
		}
		if d == filepath.Dir(d) {
			return nil
		}
	}
}
