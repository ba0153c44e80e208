package integration

import (
	"context"
	"errors"
	"fmt"
	"io"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"github.com/pgquorum/pgquorum/proxy"
	"github.com/pgquorum/pgquorum/testenv"
)

func (env *proxyEnv) testSimpleAndExtendedProtocol(t *testing.T) {
	ctx := proxyContext(t)
	for _, mode := range []string{"simple_protocol", "exec", "cache_statement", "cache_describe", "describe_exec"} {
		t.Run(mode, func(t *testing.T) {
			conn := proxyConnect(t, ctx, env.scram, "default_query_exec_mode="+mode)
			var sum int
			var text string
			if err := conn.QueryRow(ctx, "SELECT $1::int + $2::int, $3::text", 40, 2, "it's").Scan(&sum, &text); err != nil {
				t.Fatal(err)
			}
			if sum != 42 || text != "it's" {
				t.Fatalf("got %d %q", sum, text)
			}
			// Several statements, a transaction, and an error that leaves the session usable.
			if _, err := conn.Exec(ctx, "BEGIN"); err != nil {
				t.Fatal(err)
			}
			_, err := conn.Exec(ctx, "SELECT 1/0")
			proxyRequirePgError(t, err, "22012")
			if _, err := conn.Exec(ctx, "ROLLBACK"); err != nil {
				t.Fatal(err)
			}
			rows, err := conn.Query(ctx, "SELECT g FROM generate_series(1, 1000) g")
			if err != nil {
				t.Fatal(err)
			}
			got, err := pgx.CollectRows(rows, pgx.RowTo[int32])
			if err != nil || len(got) != 1000 || got[999] != 1000 {
				t.Fatalf("generate_series: %v, %d rows", err, len(got))
			}
		})
	}
	// A multi-statement simple query.
	conn := proxyConnect(t, ctx, env.scram, "")
	results, err := conn.PgConn().Exec(ctx, "SELECT 1; SELECT 2, 3; SET application_name = 'multi'").ReadAll()
	if err != nil {
		t.Fatal(err)
	}
	if len(results) != 3 || string(results[1].Rows[0][1]) != "3" || results[2].CommandTag.String() != "SET" {
		t.Fatalf("multi-statement results: %+v", results)
	}
}

func (env *proxyEnv) testPipelines(t *testing.T) {
	ctx := proxyContext(t)
	conn := proxyConnect(t, ctx, env.scram, "")

	// pgx Batch: many queries in one round trip, one of them failing.
	batch := &pgx.Batch{}
	for i := range 50 {
		batch.Queue("SELECT $1::int * 2", i)
	}
	results := conn.SendBatch(ctx, batch)
	for i := range 50 {
		var doubled int
		if err := results.QueryRow().Scan(&doubled); err != nil || doubled != 2*i {
			t.Fatalf("batch query %d: %v, %d", i, err, doubled)
		}
	}
	if err := results.Close(); err != nil {
		t.Fatal(err)
	}

	// pgconn pipeline: several syncs in flight, an error in the middle aborts only its segment.
	pipeline := conn.PgConn().StartPipeline(ctx)
	pipeline.SendQueryParams("SELECT 1", nil, nil, nil, nil)
	pipeline.SendPipelineSync()
	pipeline.SendQueryParams("SELECT 1/0", nil, nil, nil, nil)
	pipeline.SendQueryParams("SELECT 'skipped'", nil, nil, nil, nil)
	pipeline.SendPipelineSync()
	pipeline.SendQueryParams("SELECT 3", nil, nil, nil, nil)
	pipeline.SendPipelineSync()
	if err := pipeline.Flush(); err != nil {
		t.Fatal(err)
	}
	var seen []string
	for {
		result, err := pipeline.GetResults()
		if err != nil {
			var pgErr *pgconn.PgError
			if errors.As(err, &pgErr) {
				seen = append(seen, "error "+pgErr.Code)
				continue
			}
			t.Fatal(err)
		}
		if result == nil {
			break
		}
		switch r := result.(type) {
		case *pgconn.ResultReader:
			res := r.Read()
			if res.Err != nil {
				var pgErr *pgconn.PgError
				if errors.As(res.Err, &pgErr) {
					seen = append(seen, "error "+pgErr.Code)
					continue
				}
				t.Fatal(res.Err)
			}
			seen = append(seen, "row "+string(res.Rows[0][0]))
		case *pgconn.PipelineSync:
			seen = append(seen, "sync")
		}
	}
	if err := pipeline.Close(); err != nil {
		t.Fatal(err)
	}
	want := "row 1,sync,error 22012,sync,row 3,sync"
	if got := strings.Join(seen, ","); got != want {
		t.Fatalf("pipeline results %q, want %q", got, want)
	}
	var n int
	if err := conn.QueryRow(ctx, "SELECT 5").Scan(&n); err != nil || n != 5 {
		t.Fatalf("query after pipeline: %v", err)
	}
}

func (env *proxyEnv) testCopy(t *testing.T) {
	ctx := proxyContext(t)
	conn := proxyConnect(t, ctx, env.scram, "")
	if _, err := conn.Exec(ctx, "CREATE TABLE px_copy (id int, payload text)"); err != nil {
		t.Fatal(err)
	}
	const rowCount = 20000
	rows := make([][]any, rowCount)
	for i := range rows {
		rows[i] = []any{i, strings.Repeat("p", i%300)}
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"px_copy"}, []string{"id", "payload"}, pgx.CopyFromRows(rows))
	if err != nil || n != rowCount {
		t.Fatalf("CopyFrom: %d rows, %v", n, err)
	}
	// COPY TO STDOUT through the proxy.
	var out strings.Builder
	tag, err := conn.PgConn().CopyTo(ctx, &out, "COPY (SELECT id, payload FROM px_copy ORDER BY id) TO STDOUT")
	if err != nil || tag.RowsAffected() != rowCount {
		t.Fatalf("CopyTo: %v, %v", tag, err)
	}
	lines := strings.Split(strings.TrimSuffix(out.String(), "\n"), "\n")
	if len(lines) != rowCount || lines[299] != "299\t"+strings.Repeat("p", 299) {
		t.Fatalf("CopyTo returned %d lines, line 299 %.40q", len(lines), lines[299])
	}
	// COPY FROM STDIN with text data and a failing row: the error arrives, the session survives.
	_, err = conn.PgConn().CopyFrom(ctx, strings.NewReader("1\tok\nnot-a-number\tbad\n"), "COPY px_copy FROM STDIN")
	proxyRequirePgError(t, err, "22P02")
	var count int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM px_copy").Scan(&count); err != nil || count != rowCount {
		t.Fatalf("count after failed COPY: %d, %v", count, err)
	}
}

func (env *proxyEnv) testListenNotify(t *testing.T) {
	ctx := proxyContext(t)
	listener := proxyConnect(t, ctx, env.scram, "")
	notifier := proxyConnect(t, ctx, env.md5, "")
	if _, err := listener.Exec(ctx, "LISTEN px_channel"); err != nil {
		t.Fatal(err)
	}
	if _, err := notifier.Exec(ctx, "SELECT pg_notify('px_channel', 'hello through the proxy')"); err != nil {
		t.Fatal(err)
	}
	// The notification arrives while the listener is idle: the relay forwards it unasked.
	n, err := listener.WaitForNotification(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if n.Channel != "px_channel" || n.Payload != "hello through the proxy" {
		t.Fatalf("notification %+v", n)
	}
}

func (env *proxyEnv) testNotices(t *testing.T) {
	ctx := proxyContext(t)
	var mu sync.Mutex
	var notices []*pgconn.Notice
	cfg, err := pgx.ParseConfig(proxyConnString(env.scram, proxySCRAMUser, proxySCRAMPassword, ""))
	if err != nil {
		t.Fatal(err)
	}
	cfg.OnNotice = func(_ *pgconn.PgConn, n *pgconn.Notice) {
		mu.Lock()
		defer mu.Unlock()
		notices = append(notices, n)
	}
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, `DO $$ BEGIN RAISE NOTICE 'first %', 1; RAISE WARNING 'second' USING HINT = 'a hint'; END $$`); err != nil {
		t.Fatal(err)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(notices) != 2 || notices[0].Message != "first 1" || notices[0].Severity != "NOTICE" ||
		notices[1].Severity != "WARNING" || notices[1].Hint != "a hint" {
		t.Fatalf("notices: %+v", notices)
	}
}

func (env *proxyEnv) testErrorFields(t *testing.T) {
	ctx := proxyContext(t)
	direct := env.connectDirect(t, ctx)
	proxied := proxyConnect(t, ctx, env.scram, "")
	if _, err := direct.Exec(ctx, `CREATE TABLE px_err (id int PRIMARY KEY, v int CONSTRAINT px_err_v_positive CHECK (v > 0));
		INSERT INTO px_err VALUES (1, 1)`); err != nil {
		t.Fatal(err)
	}
	for _, sql := range []string{
		"INSERT INTO px_err VALUES (1, 5)",  // unique violation: detail, schema, table, constraint
		"INSERT INTO px_err VALUES (2, -1)", // check violation
		"INSERT INTO px_err (id) VALUES (NULL)",
		"SELECT no_such_column FROM px_err", // position
		`DO $$ BEGIN RAISE EXCEPTION 'boom %', 7 USING DETAIL = 'the detail', HINT = 'the hint', ERRCODE = 'P0001'; END $$`, // where
	} {
		_, directErr := direct.Exec(ctx, sql)
		_, proxiedErr := proxied.Exec(ctx, sql)
		var want, got *pgconn.PgError
		if !errors.As(directErr, &want) || !errors.As(proxiedErr, &got) {
			t.Fatalf("%s: direct error %v, proxied error %v", sql, directErr, proxiedErr)
		}
		if !reflect.DeepEqual(*got, *want) {
			t.Fatalf("%s: error fields differ\nproxied: %+v\ndirect:  %+v", sql, *got, *want)
		}
	}
	var pgErr *pgconn.PgError
	_, err := proxied.Exec(ctx, "INSERT INTO px_err VALUES (1, 5)")
	if errors.As(err, &pgErr); pgErr.ConstraintName != "px_err_pkey" || pgErr.TableName != "px_err" ||
		pgErr.SchemaName != "public" || pgErr.Detail != "Key (id)=(1) already exists." {
		t.Fatalf("unique violation fields: %+v", pgErr)
	}
}

func (env *proxyEnv) testCancel(t *testing.T) {
	for _, extra := range []string{"", "max_protocol_version=3.2"} {
		t.Run("protocol "+map[string]string{"": "3.0", "max_protocol_version=3.2": "3.2"}[extra], func(t *testing.T) {
			ctx := proxyContext(t)
			conn := proxyConnect(t, ctx, env.scram, extra)
			wantKeyLen := 4 // PostgreSQL 15 speaks 3.0: a 3.2 client gets its 4-byte key, as directly
			if got := len(conn.PgConn().SecretKey()); got != wantKeyLen {
				t.Fatalf("cancel key of %d bytes, want %d", got, wantKeyLen)
			}
			queryErr := make(chan error, 1)
			go func() {
				_, err := conn.Exec(context.Background(), "SELECT pg_sleep(60)")
				queryErr <- err
			}()
			direct := env.connectDirect(t, ctx)
			testenv.Eventually(t, ctx, 0, "pg_sleep to run", func() (bool, error) {
				var n int
				err := direct.QueryRow(ctx, `SELECT count(*) FROM pg_stat_activity
					WHERE query = 'SELECT pg_sleep(60)' AND state = 'active'`).Scan(&n)
				return n == 1, err
			})
			start := time.Now()
			if err := conn.PgConn().CancelRequest(ctx); err != nil {
				t.Fatal(err)
			}
			select {
			case err := <-queryErr:
				proxyRequirePgError(t, err, "57014")
			case <-time.After(10 * time.Second):
				t.Fatal("query not cancelled within 10s")
			}
			if elapsed := time.Since(start); elapsed > 5*time.Second {
				t.Fatalf("cancel took %s", elapsed)
			}
			var n int
			if err := conn.QueryRow(ctx, "SELECT 1").Scan(&n); err != nil {
				t.Fatalf("session after cancel: %v", err)
			}
		})
	}
}

func (env *proxyEnv) testLargeResult(t *testing.T) {
	ctx := proxyContext(t)
	// readLarge reads the 100 MB result and returns the bytes this process allocated meanwhile.
	readLarge := func(conn *pgconn.PgConn) uint64 {
		t.Helper()
		var before, after runtime.MemStats
		runtime.GC()
		runtime.ReadMemStats(&before)
		result := conn.ExecParams(ctx, "SELECT repeat('x', 1000000) FROM generate_series(1, 100)", nil, nil, nil, nil)
		total, rows := 0, 0
		for result.NextRow() {
			value := result.Values()[0]
			if len(value) > 0 && (value[0] != 'x' || value[len(value)-1] != 'x') {
				t.Fatal("row content changed in transit")
			}
			total += len(value)
			rows++
		}
		if _, err := result.Close(); err != nil {
			t.Fatal(err)
		}
		runtime.ReadMemStats(&after)
		if rows != 100 || total != 100_000_000 {
			t.Fatalf("got %d rows, %d bytes; want 100 rows, 100000000 bytes", rows, total)
		}
		return after.TotalAlloc - before.TotalAlloc
	}
	direct := readLarge(env.connectDirect(t, ctx).PgConn())
	proxied := readLarge(proxyConnect(t, ctx, env.scram, "").PgConn())
	// The proxy streams each 1 MB DataRow through pooled buffers; buffering whole messages
	// would allocate at least another 100 MB in this process (client and proxy share it).
	if proxied > direct+20<<20 && !proxyRaceEnabled {
		t.Fatalf("streaming 100 MB through the proxy allocated %d MB, directly %d MB", proxied>>20, direct>>20)
	}
	t.Logf("allocated while reading 100 MB: directly %d MB, through the proxy %d MB", direct>>20, proxied>>20)
}

func (env *proxyEnv) testBinaryFormat(t *testing.T) {
	ctx := proxyContext(t)
	conn := proxyConnect(t, ctx, env.scram, "")
	var (
		i8    int64
		f8    float64
		ts    time.Time
		bytea []byte
		arr   []int32
		num   pgtype.Numeric
		js    map[string]any
	)
	err := conn.QueryRow(ctx, `SELECT 9223372036854775807::int8, 2.5::float8, '2024-02-29 12:34:56.789+00'::timestamptz,
		'\x00ff10'::bytea, ARRAY[1, 2, 3]::int4[], 12345.678::numeric, '{"a": [1, "b"]}'::jsonb`).
		Scan(&i8, &f8, &ts, &bytea, &arr, &num, &js)
	if err != nil {
		t.Fatal(err)
	}
	if i8 != 9223372036854775807 || f8 != 2.5 || !ts.Equal(time.Date(2024, 2, 29, 12, 34, 56, 789e6, time.UTC)) ||
		string(bytea) != "\x00\xff\x10" || !reflect.DeepEqual(arr, []int32{1, 2, 3}) || fmt.Sprint(js["a"]) != "[1 b]" {
		t.Fatalf("binary values: %v %v %v %x %v %v", i8, f8, ts, bytea, arr, js)
	}
	// Binary parameters and results explicitly through pgconn.
	result := conn.PgConn().ExecParams(ctx, "SELECT $1::bytea", [][]byte{{0, 1, 2, 255}}, nil, []int16{1}, []int16{1}).Read()
	if result.Err != nil || string(result.Rows[0][0]) != "\x00\x01\x02\xff" {
		t.Fatalf("binary round trip: %v %x", result.Err, result.Rows)
	}
}

func (env *proxyEnv) testStartupParameters(t *testing.T) {
	ctx := proxyContext(t)
	cfg, err := pgx.ParseConfig(proxyConnString(env.scram, proxySCRAMUser, proxySCRAMPassword,
		"application_name=px-app options='-c search_path=px_schema,public -c work_mem=8MB'"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.RuntimeParams["statement_timeout"] = "4321"
	conn, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	var app, searchPath, workMem, timeout string
	if err := conn.QueryRow(ctx, `SELECT current_setting('application_name'), current_setting('search_path'),
		current_setting('work_mem'), current_setting('statement_timeout')`).Scan(&app, &searchPath, &workMem, &timeout); err != nil {
		t.Fatal(err)
	}
	if app != "px-app" || searchPath != "px_schema,public" || workMem != "8MB" || timeout != "4321ms" {
		t.Fatalf("backend settings: application_name=%q search_path=%q work_mem=%q statement_timeout=%q", app, searchPath, workMem, timeout)
	}
	// The backend's ParameterStatus messages reach the client.
	if got := conn.PgConn().ParameterStatus("application_name"); got != "px-app" {
		t.Fatalf("ParameterStatus application_name = %q", got)
	}
	if got := conn.PgConn().ParameterStatus("server_version"); !strings.HasPrefix(got, "15") {
		t.Fatalf("ParameterStatus server_version = %q", got)
	}
	// A database that does not exist: the backend's own error reaches the client.
	_, err = pgx.Connect(ctx, strings.Replace(proxyConnString(env.scram, proxySCRAMUser, proxySCRAMPassword, ""),
		"dbname=postgres", "dbname=px_missing", 1))
	if pgErr := proxyRequirePgError(t, err, "3D000"); !strings.Contains(pgErr.Message, `"px_missing"`) {
		t.Fatalf("missing database error: %q", pgErr.Message)
	}
}

func (env *proxyEnv) testReplicationRefused(t *testing.T) {
	ctx := proxyContext(t)
	for _, mode := range []string{"database", "true"} {
		_, err := pgconn.Connect(ctx, proxyConnString(env.scram, proxySCRAMUser, proxySCRAMPassword, "replication="+mode))
		pgErr := proxyRequirePgError(t, err, "0A000")
		if pgErr.Severity != "FATAL" || !strings.Contains(pgErr.Message, "replication connections are not supported") {
			t.Fatalf("replication=%s: %s %q", mode, pgErr.Severity, pgErr.Message)
		}
	}
	proxyRequireWorks(t, env.scram)
}

func (env *proxyEnv) testShutdown(t *testing.T) {
	ctx := proxyContext(t)
	srv, err := proxy.NewServer(proxy.Config{NodeID: 9, ListenAddr: "127.0.0.1:0", Router: env.router,
		AuthMethod: proxy.AuthTrust})
	if err != nil {
		t.Fatal(err)
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(context.Background()) }()
	testenv.Eventually(t, ctx, 0, "listener", func() (bool, error) { return srv.Addr() != nil, nil })
	conn, err := pgx.Connect(ctx, proxyConnString(srv, proxyTrustUser, "", ""))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "SELECT 1"); err != nil {
		t.Fatal(err)
	}
	shutdownCtx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	start := time.Now()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		t.Fatalf("Shutdown with one idle session: %v", err)
	}
	if elapsed := time.Since(start); elapsed > 2*time.Second {
		t.Fatalf("Shutdown took %s for an idle session", elapsed)
	}
	if err := <-served; !errors.Is(err, proxy.ErrServerClosed) {
		t.Fatalf("Serve returned %v", err)
	}
	if _, err := conn.Exec(ctx, "SELECT 1"); err == nil {
		t.Fatal("session still works after Shutdown")
	}
	if stats := srv.Stats(); stats.ClientConnections != 0 || stats.Sessions != 0 {
		t.Fatalf("after Shutdown: %+v", stats)
	}
	if _, err := pgconn.Connect(ctx, proxyConnString(srv, proxyTrustUser, "", "")); err == nil {
		t.Fatal("connection accepted after Shutdown")
	}
}

func (env *proxyEnv) testStats(t *testing.T) {
	ctx := proxyContext(t)
	// The earlier subtests' connections close when they end; the proxy notices that a moment
	// later. Start from none.
	testenv.Eventually(t, ctx, 0, "the earlier subtests' connections to be released", func() (bool, error) {
		now := env.scram.Stats()
		return now.ClientConnections == 0 && now.Sessions == 0, nil
	})
	before := env.scram.Stats()
	conn := proxyConnect(t, ctx, env.scram, "")
	var n int
	if err := conn.QueryRow(ctx, "SELECT count(*) FROM generate_series(1, 100000)").Scan(&n); err != nil {
		t.Fatal(err)
	}
	during := env.scram.Stats()
	conn.Close(ctx)
	cancelConn := proxyDial(t, env.scram)
	cancelConn.Write([]byte{0, 0, 0, 16, 0x04, 0xd2, 0x16, 0x2e, 0, 0, 0, 1, 1, 2, 3, 4}) // unknown key: ignored
	io.ReadAll(cancelConn)
	bad := proxyDial(t, env.scram)
	bad.Write([]byte{0xff, 0xff, 0xff, 0xff})
	io.ReadAll(bad)
	after := env.scram.Stats()

	if during.Sessions != before.Sessions+1 || during.ClientConnections != before.ClientConnections+1 {
		t.Fatalf("one more session expected while connected: before %+v, during %+v", before, during)
	}
	if after.TotalClientConnections != before.TotalClientConnections+3 || after.TotalSessions != before.TotalSessions+1 ||
		after.CancelRequests != before.CancelRequests+1 || after.StartupFailures != before.StartupFailures+1 ||
		after.BytesFromClients <= before.BytesFromClients || after.BytesToClients <= before.BytesToClients {
		t.Fatalf("counters did not move as expected: before %+v, after %+v", before, after)
	}
	testenv.Eventually(t, ctx, 0, "connections to be released", func() (bool, error) {
		now := env.scram.Stats()
		return now.ClientConnections == before.ClientConnections && now.Sessions == before.Sessions, nil
	})
}
