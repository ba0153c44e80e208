package main

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
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
	options := hostFlags(fs, "rejoin")
	reclone := fs.Bool("reclone", false, "copy the primary afresh with pg_basebackup instead of pg_rewind; the data directory is moved aside, not deleted")
	timeout := fs.Duration("timeout", 30*time.Minute, "give up after this long (a --reclone of a large database needs more)")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	opts, err := options(stderr)
	if err != nil {
		return err
	}
	opts.Reclone = *reclone
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	res, err := rejoin.Run(ctx, opts)
	if err != nil {
		var rewindErr *rejoin.RewindError
		if errors.As(err, &rewindErr) && rewindErr.Output != "" {
			fmt.Fprintf(stderr, "--- pg_rewind output ---\n%s\n---\n", rewindErr.Output)
		}
		return err
	}
	how := "started as a standby"
	switch {
	case res.Method == "rewind":
		how = "rewound with pg_rewind"
	case res.Method == "reclone":
		how = "re-cloned with pg_basebackup"
	case !res.Started && !res.Unfenced:
		fmt.Fprintf(stdout, "%s already streams from the primary %s (epoch %d) and is not fenced: nothing to do.\n", res.Node, res.Primary, res.Epoch)
		return nil
	case !res.Started:
		how = "it already streamed"
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

// hostFlags adds the flags that `rejoin` and `agent` share to fs and returns a
// function that builds the options once the flags are parsed.
func hostFlags(fs *flag.FlagSet, command string) func(stderr io.Writer) (rejoin.Options, error) {
	admin := fs.String("admin", defaultAdmin, "admin API of pgquorum nodes: ADDR[,ADDR...] (host:port or URLs; the next is tried when one does not answer)")
	token := fs.String("token", "", "the cluster's admin token (prefer --token-file)")
	tokenFile := fs.String("token-file", "", "file holding the cluster's admin token; read again before every call that needs it")
	ca := fs.String("ca", "", "CA certificate (PEM) that verifies an HTTPS admin API; makes host:port https://")
	pgdata := fs.String("pgdata", os.Getenv("PGDATA"), "the node's data directory (default $PGDATA)")
	configFile := fs.String("config-file", "", "the server's postgresql.conf when it is not in the data directory (default: found in the data directory, or the Debian /etc/postgresql/*/*/ file whose data_directory it is)")
	node := fs.String("node", "", "this node's backend name (default: the backend whose port the data directory's configuration uses)")
	binDir := fs.String("bin-dir", "", "directory of pg_ctl, pg_rewind, pg_basebackup and pg_controldata (default: found from the data directory's PG_VERSION)")
	sourceUser := fs.String("source-user", rejoin.DefaultSourceUser, "superuser role on the primary for pg_rewind and the checks")
	sourcePasswordFile := fs.String("source-password-file", "", "file holding --source-user's password (default: none, or ~/.pgpass of the data directory's owner)")
	sslmode := fs.String("sslmode", "", "sslmode of the connections to the cluster (default: libpq's, prefer)")
	sslrootcert := fs.String("sslrootcert", "", "CA file that verifies the PostgreSQL servers (sslrootcert) for --sslmode verify-ca or verify-full")
	replicationUser := fs.String("replication-user", "", "role of the new primary_conninfo (default: from the node's previous primary_conninfo or another standby's)")
	replicationPasswordFile := fs.String("replication-password-file", "", "file holding --replication-user's password")
	serverLog := fs.String("log", "", "file the started server's output (and pg_rewind's, pg_basebackup's) is appended to (default DIR.rejoin.log)")
	streamTimeout := fs.Duration("stream-timeout", rejoin.DefaultStreamTimeout, "how long a started standby may take to stream from the primary (then it is rewound, or the run fails)")
	quiet := fs.Bool("quiet", false, "log warnings only, not each step")
	jsonLog := fs.Bool("log-json", false, "log as JSON lines instead of text")
	return func(stderr io.Writer) (rejoin.Options, error) {
		if *pgdata == "" {
			return rejoin.Options{}, fmt.Errorf("%w: --pgdata DIR is required", errUsage)
		}
		sourcePassword, err := readSecretFile(*sourcePasswordFile, "--source-password-file")
		if err != nil {
			return rejoin.Options{}, err
		}
		replicationPassword, err := readSecretFile(*replicationPasswordFile, "--replication-password-file")
		if err != nil {
			return rejoin.Options{}, err
		}
		if *tokenFile != "" {
			if _, err := readSecretFile(*tokenFile, "--token-file"); err != nil {
				return rejoin.Options{}, err
			}
		}
		adminTLS, err := adminTLSConfig(*ca)
		if err != nil {
			return rejoin.Options{}, err
		}
		level := slog.LevelInfo
		if *quiet {
			level = slog.LevelWarn
		}
		var handler slog.Handler = slog.NewTextHandler(stderr, &slog.HandlerOptions{Level: level})
		if *jsonLog {
			handler = slog.NewJSONHandler(stderr, &slog.HandlerOptions{Level: level})
		}
		return rejoin.Options{
			PGData:              *pgdata,
			ConfigFile:          *configFile,
			BinDir:              *binDir,
			Admin:               strings.Split(*admin, ","),
			Token:               *token,
			TokenFile:           *tokenFile,
			AdminTLS:            adminTLS,
			NodeName:            *node,
			SourceUser:          *sourceUser,
			SourcePassword:      sourcePassword,
			SSLMode:             *sslmode,
			SSLRootCert:         *sslrootcert,
			ReplicationUser:     *replicationUser,
			ReplicationPassword: replicationPassword,
			ServerLog:           *serverLog,
			StreamTimeout:       *streamTimeout,
			Logger:              slog.New(handler).With("command", command),
		}, nil
	}
}

// adminTLSConfig trusts caFile's certificates for an HTTPS admin API (nil
// without one: plain HTTP, or https:// URLs verified with the system's roots).
func adminTLSConfig(caFile string) (*tls.Config, error) {
	if caFile == "" {
		return nil, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("%w: --ca: %v", errUsage, err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("%w: --ca %s holds no PEM certificate", errUsage, caFile)
	}
	return &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}, nil
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
