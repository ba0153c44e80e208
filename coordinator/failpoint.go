//go:build !failpoints

package coordinator

import (
	"context"
	"log/slog"
)

// failpoint marks a point of the failover where the fault-injection tests kill
// the leader (integration/faults). Built without the "failpoints" tag it does
// nothing and costs nothing; see failpoint_on.go.
func failpoint(context.Context, *slog.Logger, string) {}
