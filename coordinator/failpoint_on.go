//go:build failpoints

package coordinator

import (
	"context"
	"log/slog"
	"os"
	"strings"
)

// FailpointFileEnv names the file that arms a failpoint in binaries built with
// the "failpoints" tag (the fault-injection tests only; never a release). When
// the file holds a failpoint's name, the leader that reaches that point writes
// the name to FILE.hit and stops there until its context ends: the test then
// kills it with SIGKILL, at exactly that point of the failover.
const FailpointFileEnv = "PGQUORUM_FAILPOINT_FILE"

// failpoint stops here if the armed failpoint is name. Points: "before:STEP"
// (nothing of STEP done yet) and "after:STEP" (its PostgreSQL action done, not
// recorded in the Raft log).
func failpoint(ctx context.Context, logger *slog.Logger, name string) {
	path := os.Getenv(FailpointFileEnv)
	if path == "" {
		return
	}
	armed, err := os.ReadFile(path)
	if err != nil || strings.TrimSpace(string(armed)) != name {
		return
	}
	logger.Warn("failpoint reached: stopping here until killed", "failpoint", name)
	if err := os.WriteFile(path+".hit", []byte(name+"\n"), 0o644); err != nil {
		logger.Error("failpoint: cannot write the hit file", "err", err)
	}
	<-ctx.Done()
}
