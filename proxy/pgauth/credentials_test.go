package pgauth_test

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"github.com/pgquorum/pgquorum/proxy/pgauth"
)

func TestCredentialsFormattingRedactsKeys(t *testing.T) {
	clientKey := bytes.Repeat([]byte{0xAB}, 32)
	serverKey := bytes.Repeat([]byte{0xCD}, 32)
	creds := pgauth.Credentials{
		User:      "alice",
		Method:    pgauth.MethodSCRAMSHA256,
		ClientKey: clientKey,
		ServerKey: serverKey,
		MD5:       pencilMD5Verifier,
	}
	secrets := []string{"4c21b325d75177d5e9b9789a50ab0c9c", "abab", "cdcd", "ABAB", "CDCD", "171, 171", "205, 205", "[171 171", "[205 205"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q"} {
		out := fmt.Sprintf(verb, creds) + fmt.Sprintf(verb, &creds) +
			fmt.Sprintf(verb, struct{ C pgauth.Credentials }{creds}) +
			fmt.Sprintf(verb, []pgauth.Credentials{creds})
		assertNoSecret(t, verb, out, secrets, clientKey, serverKey)
		if !strings.Contains(out, "alice") {
			t.Fatalf("%s lost the user name: %s", verb, out)
		}
	}
	out := logThroughSlog(t, "creds", creds)
	assertNoSecret(t, "slog", out, secrets, clientKey, serverKey)
	if !strings.Contains(out, "alice") || !strings.Contains(out, "scram-sha-256") {
		t.Fatalf("slog output lost user or method: %s", out)
	}
}

// logThroughSlog logs value with both standard handlers and returns the output.
func logThroughSlog(t *testing.T, key string, value any) string {
	t.Helper()
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).Info("test", key, value)
	slog.New(slog.NewTextHandler(&out, nil)).Info("test", key, value)
	slog.New(slog.NewTextHandler(&out, nil)).Info("test", slog.Any(key, value))
	return out.String()
}

// assertNoSecret fails if out contains any of the secret strings or any
// common encoding of the secret byte slices.
func assertNoSecret(t *testing.T, context, out string, secrets []string, keys ...[]byte) {
	t.Helper()
	for _, key := range keys {
		secrets = append(secrets,
			hex.EncodeToString(key), strings.ToUpper(hex.EncodeToString(key)),
			base64.StdEncoding.EncodeToString(key), base64.RawStdEncoding.EncodeToString(key),
			fmt.Sprint(key), fmt.Sprintf("%x", key), string(key))
	}
	for _, secret := range secrets {
		if secret != "" && strings.Contains(out, secret) {
			t.Fatalf("%s output contains secret %q: %s", context, secret, out)
		}
	}
}
