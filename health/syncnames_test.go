package health

import (
	"reflect"
	"strings"
	"testing"
)

// syncNamesCases is shared with the real-PostgreSQL test, which checks that
// PostgreSQL accepts exactly the values we accept.
var syncNamesCases = []struct {
	in   string
	want SyncSpec // ignored when wantErr
	// wantErr is a substring of the error; "" means the value is valid.
	wantErr string
	// postgresDiffers explains a deliberate difference from PostgreSQL's
	// own check, which the real-PostgreSQL test then skips.
	postgresDiffers string
}{
	// The forms of the grammar.
	{in: "", want: SyncSpec{Method: SyncOff}},
	{in: "ANY 1 (pg2, pg3)", want: AnyOf(1, "pg2", "pg3")},
	{in: "FIRST 2 (a, b, c)", want: FirstOf(2, "a", "b", "c")},
	{in: "2 (a, b)", want: FirstOf(2, "a", "b")},
	{in: "a, b", want: FirstOf(1, "a", "b")},
	{in: "a", want: FirstOf(1, "a")},
	{in: "*", want: FirstOf(1, "*")},
	{in: "ANY 1 (*)", want: AnyOf(1, "*")},
	{in: `ANY 1 ("*")`, want: AnyOf(1, "*")},
	// Keywords in any case, whitespace anywhere.
	{in: "any 1 (a)", want: AnyOf(1, "a")},
	{in: "First 1 (a)", want: FirstOf(1, "a")},
	{in: " \t\nANY\r\f\v3(a,b ,  c)\n", want: AnyOf(3, "a", "b", "c")},
	{in: "ANY 01 (a)", want: AnyOf(1, "a")},
	// Unquoted names fold to lower case, quoted ones keep everything.
	{in: "ANY 1 (Pg2, PG3)", want: AnyOf(1, "pg2", "pg3")},
	{in: `ANY 1 ("Pg 2", "a""b", "")`, want: AnyOf(1, "Pg 2", `a"b`, "")},
	{in: `"any", "FIRST"`, want: FirstOf(1, "any", "FIRST")},
	{in: "anyone, firstly, any_1", want: FirstOf(1, "anyone", "firstly", "any_1")},
	{in: "_x, a$b, é", want: FirstOf(1, "_x", "a$b", "é")},
	{in: "1, 22", want: FirstOf(1, "1", "22")},
	{in: "ANY 2 (1, 2)", want: AnyOf(2, "1", "2")},
	{in: "ANY 3 (a, b)", want: AnyOf(3, "a", "b")}, // k > |names| is accepted by PostgreSQL too
	// Errors.
	{in: " ", wantErr: "end of input"},
	{in: "ANY", wantErr: "end of input"},
	{in: "any", wantErr: "end of input"},
	{in: "a, any", wantErr: `"any"`},
	{in: "ANY (a)", wantErr: `"("`},
	{in: "ANY 1 a", wantErr: `"a"`},
	{in: "ANY 1 (a", wantErr: "end of input"},
	{in: "ANY 1 (a))", wantErr: `")"`},
	{in: "ANY 1 ()", wantErr: `")"`},
	{in: "ANY 0 (a)", wantErr: "greater than zero"},
	{in: "0 (a)", wantErr: "greater than zero"},
	{in: "ANY 99999999999 (a)", wantErr: "out of range",
		postgresDiffers: "PostgreSQL reads k with atoi and silently truncates it to 32 bits"},
	{in: "ANY 1 (a) b", wantErr: `"b"`},
	{in: "a b", wantErr: `"b"`},
	{in: "a,", wantErr: "end of input"},
	{in: ",a", wantErr: `","`},
	{in: "a,,b", wantErr: `","`},
	{in: "1a", wantErr: `"a"`},
	{in: "$a", wantErr: `"$"`},
	{in: "a-b", wantErr: `"-"`},
	{in: `"unterminated`, wantErr: "unterminated"},
	{in: `"a""`, wantErr: "unterminated"},
	{in: `"a"""`, want: FirstOf(1, `a"`)},
	{in: "ANY 1 (a), b", wantErr: `","`},
	{in: "(a)", wantErr: `"("`},
	{in: "**", wantErr: `"*"`},
	{in: "a\x00b", wantErr: "NUL"},
}

func TestParseSyncStandbyNames(t *testing.T) {
	for _, tt := range syncNamesCases {
		got, err := ParseSyncStandbyNames(tt.in)
		if tt.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Errorf("ParseSyncStandbyNames(%q) = %+v, %v; want an error containing %q", tt.in, got, err, tt.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tt.want) {
			t.Errorf("ParseSyncStandbyNames(%q) = %#v, %v; want %#v", tt.in, got, err, tt.want)
		}
	}
}

func TestSyncSpecString(t *testing.T) {
	tests := []struct {
		spec SyncSpec
		want string
	}{
		{SyncSpec{Method: SyncOff}, ""},
		{AnyOf(1, "pg2", "pg3"), "ANY 1 (pg2, pg3)"},
		{FirstOf(2, "a", "b"), "FIRST 2 (a, b)"},
		{AnyOf(1, "*"), "ANY 1 (*)"},
		{AnyOf(1, "Pg 2", `a"b`, ""), `ANY 1 ("Pg 2", "a""b", "")`},
		{AnyOf(1, "Upper"), `ANY 1 ("Upper")`},
		{AnyOf(1, "any", "first", "ANY"), `ANY 1 ("any", "first", "ANY")`},
		{AnyOf(1, "12", "a$1", "_x", "é"), "ANY 1 (12, a$1, _x, é)"},
		{AnyOf(1, "1a", "$a", "a-b", "a b"), `ANY 1 ("1a", "$a", "a-b", "a b")`},
	}
	for _, tt := range tests {
		if err := tt.spec.Validate(); err != nil {
			t.Errorf("%#v.Validate() = %v", tt.spec, err)
		}
		got := tt.spec.String()
		if got != tt.want {
			t.Errorf("%#v.String() = %q, want %q", tt.spec, got, tt.want)
		}
		back, err := ParseSyncStandbyNames(got)
		if err != nil || !reflect.DeepEqual(back, tt.spec) {
			t.Errorf("ParseSyncStandbyNames(%q) = %#v, %v; want the spec back", got, back, err)
		}
	}
}

func TestSyncSpecValidate(t *testing.T) {
	for _, spec := range []SyncSpec{
		{Method: SyncOff, Num: 1},
		{Method: SyncOff, Names: []string{"a"}},
		{Method: SyncAny, Num: 0, Names: []string{"a"}},
		{Method: SyncAny, Num: 1},
		{Method: SyncFirst, Num: 1, Names: []string{"a\x00"}},
		{Method: SyncMethod(7), Num: 1, Names: []string{"a"}},
	} {
		if err := spec.Validate(); err == nil {
			t.Errorf("%#v.Validate() = nil, want an error", spec)
		}
	}
}

func TestSyncSpecMatchesLikePostgreSQL(t *testing.T) {
	spec := AnyOf(1, "pg2", "Pg 3")
	tests := []struct {
		applicationName string
		want            bool
	}{
		{"pg2", true},
		{"PG2", true}, // PostgreSQL compares case-insensitively, quoted or not
		{"pg 3", true},
		{"pg3", false},
		{"pg2 ", false},
		{"", false},
	}
	for _, tt := range tests {
		if got := spec.Matches(tt.applicationName); got != tt.want {
			t.Errorf("Matches(%q) = %v, want %v", tt.applicationName, got, tt.want)
		}
	}
	if !AnyOf(1, "*").Matches("anything") {
		t.Error("* does not match")
	}
	if (SyncSpec{Method: SyncOff}).Matches("pg2") {
		t.Error("an empty spec matches")
	}
}

// FuzzParseSyncStandbyNames checks that the parser never panics and that
// every accepted value survives String and a second parse unchanged.
func FuzzParseSyncStandbyNames(f *testing.F) {
	for _, tt := range syncNamesCases {
		f.Add(tt.in)
	}
	f.Fuzz(func(t *testing.T, in string) {
		spec, err := ParseSyncStandbyNames(in)
		if err != nil {
			return
		}
		if err := spec.Validate(); err != nil {
			t.Fatalf("ParseSyncStandbyNames(%q) = %#v, which is invalid: %v", in, spec, err)
		}
		rendered := spec.String()
		back, err := ParseSyncStandbyNames(rendered)
		if err != nil {
			t.Fatalf("ParseSyncStandbyNames(%q) -> %q, which does not parse: %v", in, rendered, err)
		}
		if !reflect.DeepEqual(back, spec) {
			t.Fatalf("ParseSyncStandbyNames(%q) = %#v, rendered %q, parsed back as %#v", in, spec, rendered, back)
		}
		if again := back.String(); again != rendered {
			t.Fatalf("String is not stable: %q then %q", rendered, again)
		}
	})
}
