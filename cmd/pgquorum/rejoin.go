package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"strings"
	"time"

	"github.com/pgquorum/pgquorum/rejoin"
)

// rejoinCommand is `pgquorum rejoin --pgdata DIR`: on a database host, rewind
// the old primary (or re-clone it) and start it as a standby of the agreed
// primary, then have the cluster unfence it.
func rejoinCommand(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("rejoin", stderr)
	client := adminFlags(fs)
	pgdata := fs.String("pgdata", os.Getenv("PGDATA"), "the node's data directory (default $PGDATA)")
	node := fs.String("node", "", "this node's backend name (default: the backend whose port the data directory's configuration uses)")
	reclone := fs.Bool("reclone", false, "copy the primary afresh with pg_basebackup instead of pg_rewind; the data directory is moved aside, not deleted")
	binDir := fs.String("bin-dir", "", "directory of pg_ctl, pg_rewind and pg_basebackup (default: found from the data directory's PG_VERSION)")
	sourceUser := fs.String("source-user", rejoin.DefaultSourceUser, "superuser role on the primary for pg_rewind and rejoin's checks")
	sourcePasswordFile := fs.String("source-password-file", "", "file holding --source-user's password (default: none, or ~/.pgpass of the data directory's owner)")
	sslmode := fs.String("sslmode", "", "sslmode of the connections to the cluster (default: libpq's, prefer)")
	replicationUser := fs.String("replication-user", "", "role of the new primary_conninfo (default: from the node's previous primary_conninfo or another standby's)")
	replicationPasswordFile := fs.String("replication-password-file", "", "file holding --replication-user's password")
	serverLog := fs.String("log", "", "file the started server's output is appended to (default DIR.rejoin.log)")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long (a --reclone of a large database needs more)")
	quiet := fs.Bool("quiet", false, "log warnings only, not each step")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if *pgdata == "" {
		return fmt.Errorf("%w: --pgdata DIR is required", errUsage)
	}
	sourcePassword, err := readSecretFile(*sourcePasswordFile, "--source-password-file")
	if err != nil {
		return err
	}
	replicationPassword, err := readSecretFile(*replicationPasswordFile, "--replication-password-file")
	if err != nil {
		return err
	}
	level := slog.LevelInfo
	if *quiet {
		level = slog.LevelWarn
	}
	c := client()
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := rejoin.Run(ctx, rejoin.Options{
		PGData:              *pgdata,
		BinDir:              *binDir,
		AdminURL:            c.BaseURL,
		Token:               c.Token,
		NodeName:            *node,
		Reclone:             *reclone,
		SourceUser:          *sourceUser,
		SourcePassword:      sourcePassword,
		SSLMode:             *sslmode,
		ReplicationUser:     *replicationUser,
		ReplicationPassword: replicationPassword,
		ServerLog:           *serverLog,
		Logger:              slog.New(slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})),
	})
	if err != nil {
		var rewindErr *rejoin.RewindError
		if errors.As(err, &rewindErr) && rewindErr.Output != "" {
			fmt.Fprintf(stderr, "--- pg_rewind output ---\n%s\n---\n", rewindErr.Output)
		}
		return err
	}
	how := "rewound with pg_rewind"
	if res.Method == "reclone" {
		how = "re-cloned with pg_basebackup"
	}
	fmt.Fprintf(stdout, "%s rejoined: %s, streaming from the primary %s (epoch %d).\n", res.Node, how, res.Primary, res.Epoch)
	if res.Unfenced {
		fmt.Fprintf(stdout, "%s is no longer fenced: a later failover may choose it again.\n", res.Node)
	}
	if res.OldDataDir != "" {
		fmt.Fprintf(stdout, "The previous data directory is kept at %s; remove it once the node is healthy.\n", res.OldDataDir)
	}
	return nil
}

// readSecretFile returns the first line of path ("" when path is "").
func readSecretFile(path, flagName string) (string, error) {
	if path == "" {
		return "", nil
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", errUsage, flagName, err)
	}
	line, _, _ := strings.Cut(string(data), "\n")
	return strings.TrimRight(line, "\r"), nil
}
