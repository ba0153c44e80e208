package clusterstate

import (
	"reflect"
	"strings"
	"testing"
)

func TestEncodeDecodeRoundTripsEveryCommand(t *testing.T) {
	for _, c := range sampleCommands() {
		data, err := Encode(c)
		if err != nil {
			t.Fatalf("Encode(%s): %v", describe(c), err)
		}
		got, err := Decode(data)
		if err != nil {
			t.Fatalf("Decode(%s): %v", data, err)
		}
		if !reflect.DeepEqual(got, c) {
			t.Fatalf("round trip of %s gave %s", describe(c), describe(got))
		}
	}
}

// TestEncodeWireFormat pins the wire format: other versions of pgquorum read it.
func TestEncodeWireFormat(t *testing.T) {
	data, err := Encode(Command{CompleteFailover: &CompleteFailover{ExpectEpoch: 7, NewPrimary: "pg2", At: at(0)}})
	if err != nil {
		t.Fatal(err)
	}
	const want = `{"version":1,"type":"complete_failover","complete_failover":{"expect_epoch":7,"new_primary":"pg2","at":"2025-03-14T09:26:53Z"}}`
	if string(data) != want {
		t.Fatalf("got  %s\nwant %s", data, want)
	}
}

func TestEncodeRefusesMalformedCommands(t *testing.T) {
	if _, err := Encode(Command{}); err == nil {
		t.Error("empty command encoded")
	}
	if _, err := Encode(Command{SetPaused: &SetPaused{}, Unfence: &Unfence{}}); err == nil {
		t.Error("two payloads encoded")
	}
}

func TestDecodeRejectsGarbage(t *testing.T) {
	cases := []struct {
		name, data, errPart string
	}{
		{"empty input", ``, "EOF"},
		{"not JSON", `\x00\xff garbage`, "invalid character"},
		{"JSON null", `null`, "no payload"},
		{"an array", `[1,2]`, "cannot unmarshal"},
		{"empty object", `{}`, "no payload"},
		{"newer version", `{"version":99,"type":"set_paused","set_paused":{"paused":true}}`, "version 99 needs a newer pgquorum"},
		{"version of another type", `{"version":0,"type":"set_paused","set_paused":{"paused":true}}`, "version 1 command, the entry says version 0"},
		{"no payload", `{"version":1,"type":"set_paused"}`, "no payload"},
		{"null payload", `{"version":1,"type":"set_paused","set_paused":null}`, "no payload"},
		{"two payloads", `{"version":1,"type":"set_paused","set_paused":{},"unfence":{"node":"pg1"}}`, "exactly one"},
		{"type does not match payload", `{"version":1,"type":"unfence","set_paused":{"paused":true}}`, "payload is set_paused"},
		{"unknown field", `{"version":1,"type":"set_paused","set_paused":{"paused":true,"really":1}}`, "unknown field"},
		{"unknown top-level field", `{"version":1,"type":"set_paused","set_paused":{},"x":1}`, "unknown field"},
		{"trailing data", `{"version":1,"type":"set_paused","set_paused":{}} {}`, "trailing data"},
		{"truncated", `{"version":1,"type":"set_paused","set_paused":{`, "EOF"},
		{"wrong field type", `{"version":1,"type":"unfence","unfence":{"node":5}}`, "cannot unmarshal"},
		{"negative epoch", `{"version":1,"type":"abort_failover","abort_failover":{"expect_epoch":-1}}`, "cannot unmarshal"},
		{"bad time", `{"version":1,"type":"abort_failover","abort_failover":{"at":"yesterday"}}`, "parsing time"},
		{"too large", `{"version":1,"type":"unfence","unfence":{"node":"` + strings.Repeat("a", MaxCommandBytes) + `"}}`, "exceeds the limit"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Decode([]byte(tc.data))
			if err == nil {
				t.Fatal("decoded without error")
			}
			if !strings.Contains(err.Error(), tc.errPart) {
				t.Fatalf("error %q does not mention %q", err, tc.errPart)
			}
		})
	}
}

func TestDecodeResult(t *testing.T) {
	want := Result{Code: Stale, Reason: "epoch moved on", Epoch: 4}
	got, err := DecodeResult(encodeResult(want))
	if err != nil || got != want {
		t.Fatalf("DecodeResult = %+v, %v", got, err)
	}
	for _, bad := range []string{``, `{}`, `{"code":"maybe"}`, `{"code":"applied","x":1}`, `[]`} {
		if _, err := DecodeResult([]byte(bad)); err == nil {
			t.Errorf("DecodeResult(%q) succeeded", bad)
		}
	}
	if !(Result{Code: Duplicate}).OK() || (Result{Code: Stale}).OK() || (Result{Code: Rejected}).OK() {
		t.Error("OK must be true exactly for applied and duplicate")
	}
}
