package rejoin

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/pgquorum/pgquorum/conninfo"
)

// This file runs PostgreSQL's programs (pg_ctl, pg_rewind, pg_basebackup,
// pg_controldata) as the data directory's owner and writes files that belong to
// it. PostgreSQL refuses to run as root, so when we are root every program runs
// with the owner's uid, gid and groups, and every file we write is given to the
// owner.
//
// pg_rewind and pg_basebackup run detached (runLogged): their output goes to a
// file, not a pipe, and when our context ends they are left running instead of
// being killed half way. Killing pg_rewind in the middle can leave a data
// directory that nothing can repair; leaving it running lets it finish, and the
// next run (of the agent or of rejoin) waits for it, seeing a process at work in
// the data directory (the programs run with the data directory as their working
// directory for that reason).

// programs runs PostgreSQL programs for one data directory. It holds no mutable
// state after newPrograms.
type programs struct {
	binDir  string
	dataDir string
	// configOption is the server option naming an outside configuration file
	// (configFileOption), "" when postgresql.conf is in the data directory.
	configOption string
	// cred is nil when we run as ourselves; otherwise the data directory owner's.
	cred   *syscall.Credential
	home   string // the owner's home directory ("" = keep ours), so ~/.pgpass works
	logger *slog.Logger
}

// newPrograms finds the PostgreSQL programs and the data directory's owner.
// When the data directory is missing (a re-clone was interrupted between moving
// it aside and putting the copy in its place), owner and version are taken from
// ownerDir (the copy) instead.
func newPrograms(binDir, dataDir, ownerDir string, logger *slog.Logger) (*programs, error) {
	probe := dataDir
	info, err := os.Stat(dataDir)
	if errors.Is(err, os.ErrNotExist) && ownerDir != "" {
		if oinfo, oerr := os.Stat(ownerDir); oerr == nil {
			info, err, probe = oinfo, nil, ownerDir
		}
	}
	if err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	if !info.IsDir() {
		return nil, fmt.Errorf("data directory %s is not a directory", probe)
	}
	binDir, err = findBinDir(binDir, probe)
	if err != nil {
		return nil, err
	}
	p := &programs{binDir: binDir, dataDir: dataDir, logger: logger}
	if os.Geteuid() != 0 {
		return p, nil
	}
	st, ok := info.Sys().(*syscall.Stat_t)
	if !ok {
		return nil, fmt.Errorf("cannot tell the owner of %s", probe)
	}
	if st.Uid == 0 {
		return nil, fmt.Errorf("data directory %s is owned by root; PostgreSQL refuses to run as root: chown it to the OS user that runs PostgreSQL", probe)
	}
	groups := []uint32{}
	if u, err := user.LookupId(strconv.FormatUint(uint64(st.Uid), 10)); err == nil {
		p.home = u.HomeDir
		if ids, err := u.GroupIds(); err == nil {
			for _, id := range ids {
				if g, err := strconv.ParseUint(id, 10, 32); err == nil && uint32(g) != st.Gid {
					groups = append(groups, uint32(g))
				}
			}
		}
	}
	p.cred = &syscall.Credential{Uid: st.Uid, Gid: st.Gid, Groups: groups}
	return p, nil
}

// requiredPrograms are the PostgreSQL programs rejoin and the agent run.
var requiredPrograms = []string{"pg_ctl", "pg_rewind", "pg_basebackup", "pg_controldata"}

// findBinDir returns binDir if set, else the bin directory of the data
// directory's major version (PG_VERSION) in the Debian or Red Hat layout, else
// the directory of pg_rewind on PATH.
func findBinDir(binDir, dataDir string) (string, error) {
	has := func(dir string) bool {
		for _, program := range requiredPrograms {
			info, err := os.Stat(filepath.Join(dir, program))
			if err != nil || info.IsDir() || info.Mode()&0o111 == 0 {
				return false
			}
		}
		return true
	}
	if binDir != "" {
		if !has(binDir) {
			return "", fmt.Errorf("bin dir %s lacks one of %s", binDir, strings.Join(requiredPrograms, ", "))
		}
		return binDir, nil
	}
	var tried []string
	if data, err := os.ReadFile(filepath.Join(dataDir, "PG_VERSION")); err == nil {
		version := strings.TrimSpace(string(data))
		for _, dir := range []string{"/usr/lib/postgresql/" + version + "/bin", "/usr/pgsql-" + version + "/bin"} {
			if has(dir) {
				return dir, nil
			}
			tried = append(tried, dir)
		}
	}
	if path, err := exec.LookPath("pg_rewind"); err == nil {
		if resolved, err := filepath.EvalSymlinks(path); err == nil {
			path = resolved
		}
		if dir := filepath.Dir(path); has(dir) {
			return dir, nil
		}
	}
	tried = append(tried, "PATH")
	return "", fmt.Errorf("PostgreSQL programs (%s) not found in %s: pass --bin-dir",
		strings.Join(requiredPrograms, ", "), strings.Join(tried, ", "))
}

// environment is the programs' environment: ours without PG* variables (so the
// caller's PGHOST and friends cannot redirect them), with the owner's HOME, plus extra.
func (p *programs) environment(extra ...string) []string {
	var env []string
	for _, kv := range os.Environ() {
		key, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(key, "PG") {
			continue
		}
		if p.home != "" && (key == "HOME" || key == "USER" || key == "LOGNAME") {
			continue
		}
		env = append(env, kv)
	}
	if p.home != "" {
		env = append(env, "HOME="+p.home)
	}
	return append(env, extra...)
}

// command prepares program in its own process group (a terminal's Ctrl-C
// reaches us, not a server that pg_ctl starts), working in dir ("" = the data
// directory's parent).
func (p *programs) command(ctx context.Context, dir string, env []string, program string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(p.binDir, program), args...)
	cmd.Env = p.environment(env...)
	cmd.Dir = dir
	if dir == "" {
		cmd.Dir = filepath.Dir(p.dataDir)
	}
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// run runs program to completion and returns its combined output; the error
// carries the output too.
func (p *programs) run(ctx context.Context, env []string, program string, args ...string) (string, error) {
	var out bytes.Buffer
	cmd := p.command(ctx, "", env, program, args...)
	cmd.Stdout = &out
	cmd.Stderr = &out
	err := cmd.Run()
	output := strings.TrimSpace(out.String())
	if err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			err = fmt.Errorf("%w (%w)", err, ctxErr)
		}
		return output, fmt.Errorf("%s: %w: %s", program, err, output)
	}
	return output, nil
}

// LeftRunningError says that a pg_rewind or pg_basebackup was still running
// when the caller's context ended, and was left to finish on its own.
type LeftRunningError struct {
	Program string
	PID     int
	Err     error // the context's error
}

func (e *LeftRunningError) Error() string {
	return fmt.Sprintf("%s (pid %d) left running to finish on its own (stopping it half way could ruin the data directory): %v",
		e.Program, e.PID, e.Err)
}

func (e *LeftRunningError) Unwrap() error { return e.Err }

// runLogged runs program detached, in dir, its output appended to logPath, and
// returns that output. If ctx ends first the program is left running and the
// error is a *LeftRunningError; its exit is then nobody's to see, which is why
// callers derive the outcome from the data directory, never from this error.
func (p *programs) runLogged(ctx context.Context, logPath, dir string, env []string, program string, args ...string) (string, error) {
	logFile, err := p.openLog(logPath)
	if err != nil {
		return "", err
	}
	defer logFile.Close()
	offset, _ := logFile.Seek(0, io.SeekEnd)
	fmt.Fprintf(logFile, "--- pgquorum: %s %s at %s ---\n", program, strings.Join(redactArgs(args), " "), time.Now().UTC().Format(time.RFC3339))
	cmd := p.command(context.WithoutCancel(ctx), dir, env, program, args...)
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Start(); err != nil {
		return "", fmt.Errorf("%s: %w", program, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err = <-done:
	case <-ctx.Done():
		return "", &LeftRunningError{Program: program, PID: cmd.Process.Pid, Err: ctx.Err()}
	}
	output := strings.TrimSpace(logTail(logPath, offset, 200))
	if err != nil {
		return output, fmt.Errorf("%s: %w: %s", program, err, lastLine(output))
	}
	return output, nil
}

// redactArgs hides password=... inside connection strings of a command line
// (we never put one there, but a caller's template might carry one).
func redactArgs(args []string) []string {
	out := make([]string, len(args))
	for i, a := range args {
		if strings.Contains(a, "password") {
			a = conninfo.Redact(a)
		}
		out[i] = a
	}
	return out
}

// controlData runs pg_controldata on the data directory.
func (p *programs) controlData(ctx context.Context) (controlData, error) {
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	output, err := p.run(ctx, []string{"LC_ALL=C"}, "pg_controldata", "--pgdata", p.dataDir)
	if err != nil {
		return controlData{}, err
	}
	return parseControlData(output)
}

// pgCtlStatus asks pg_ctl status whether a server runs in the data directory.
func (p *programs) pgCtlStatus(ctx context.Context) (bool, error) {
	_, err := p.run(ctx, nil, "pg_ctl", "status", "--pgdata", p.dataDir)
	var exit *exec.ExitError
	switch {
	case err == nil:
		return true, nil
	case errors.As(err, &exit) && (exit.ExitCode() == 3 || exit.ExitCode() == 4):
		// 3: no server running; 4: not a usable data directory (nothing runs in it).
		return false, nil
	default:
		return false, fmt.Errorf("pg_ctl status: %w", err)
	}
}

// stopServer stops the server with pg_ctl stop -m fast, then -m immediate if
// that does not finish within timeout (pg_rewind recovers a server that was not
// shut down cleanly).
func (p *programs) stopServer(ctx context.Context, timeout time.Duration) error {
	fastCtx, cancel := context.WithTimeout(ctx, timeout)
	_, err := p.run(fastCtx, nil, "pg_ctl", "stop", "--pgdata", p.dataDir, "--mode", "fast", "--wait",
		"--timeout", seconds(timeout))
	cancel()
	if err == nil {
		return nil
	}
	if ctx.Err() != nil {
		return err
	}
	immediateCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	if _, err2 := p.run(immediateCtx, nil, "pg_ctl", "stop", "--pgdata", p.dataDir, "--mode", "immediate", "--wait",
		"--timeout", seconds(timeout)); err2 != nil {
		return fmt.Errorf("stop with -m fast: %w; with -m immediate: %w", err, err2)
	}
	return nil
}

// startServer starts the server with pg_ctl start --wait; the server's output is
// appended to logPath. On failure the error ends with the new lines of the log.
func (p *programs) startServer(ctx context.Context, logPath string, timeout time.Duration) error {
	logFile, err := p.openLog(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()
	offset, _ := logFile.Seek(0, io.SeekEnd)
	startCtx, cancel := context.WithTimeout(ctx, timeout+10*time.Second)
	defer cancel()
	args := []string{"start", "--pgdata", p.dataDir, "--wait", "--timeout", seconds(timeout)}
	if p.configOption != "" {
		args = append(args, "-o", p.configOption)
	}
	cmd := p.command(startCtx, "", nil, "pg_ctl", args...)
	// The postmaster inherits these descriptors: a file, not a pipe, so nothing
	// here waits for the server to close them.
	cmd.Stdout = logFile
	cmd.Stderr = logFile
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("pg_ctl start: %w\n--- %s ---\n%s", err, logPath, logTail(logPath, offset, 20))
	}
	return nil
}

// openLog opens (creating) the server log for appending, owned by the data
// directory's owner.
func (p *programs) openLog(path string) (*os.File, error) {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("server log: %w", err)
	}
	if err := p.own(path); err != nil {
		f.Close()
		return nil, err
	}
	return f, nil
}

// own gives path to the data directory's owner (a no-op when we are not root).
func (p *programs) own(path string) error {
	if p.cred == nil {
		return nil
	}
	if err := os.Lchown(path, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
		return fmt.Errorf("chown %s: %w", path, err)
	}
	return nil
}

// writeFile replaces path atomically (temporary file, fsync, rename) with data,
// owned by the data directory's owner.
func (p *programs) writeFile(path string, data []byte, mode os.FileMode) error {
	tmp := path + ".pgquorum-tmp"
	f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, mode)
	if err != nil {
		return fmt.Errorf("write %s: %w", path, err)
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = p.own(tmp)
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		_ = os.Remove(tmp)
		return fmt.Errorf("write %s: %w", path, err)
	}
	return syncDir(filepath.Dir(path))
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", dir, err)
	}
	return nil
}

func seconds(d time.Duration) string {
	return strconv.Itoa(max(1, int(d.Round(time.Second)/time.Second)))
}

// logTail returns at most maxLines last lines written to path after offset.
func logTail(path string, offset int64, maxLines int) string {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	defer f.Close()
	if size, err := f.Seek(0, io.SeekEnd); err == nil && size-offset > 64<<10 {
		offset = size - 64<<10
	}
	if _, err := f.Seek(offset, io.SeekStart); err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	data, err := io.ReadAll(io.LimitReader(f, 64<<10))
	if err != nil {
		return fmt.Sprintf("(cannot read the log: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > maxLines {
		lines = lines[len(lines)-maxLines:]
	}
	return strings.Join(lines, "\n")
}
