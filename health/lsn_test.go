package health

import (
	"encoding/json"
	"testing"
)

func TestLSNStringAndParse(t *testing.T) {
	tests := []struct {
		text string
		lsn  LSN
	}{
		{"0/0", 0},
		{"0/3000060", 0x3000060},
		{"16/B374D848", 0x16_B374D848},
		{"FFFFFFFF/FFFFFFFF", ^LSN(0)},
		{"1/0", 1 << 32},
	}
	for _, tt := range tests {
		if got := tt.lsn.String(); got != tt.text {
			t.Errorf("LSN(%#x).String() = %q, want %q", uint64(tt.lsn), got, tt.text)
		}
		got, err := ParseLSN(tt.text)
		if err != nil || got != tt.lsn {
			t.Errorf("ParseLSN(%q) = %#x, %v; want %#x", tt.text, uint64(got), err, uint64(tt.lsn))
		}
	}
}

func TestParseLSNAcceptsWhatPostgreSQLAccepts(t *testing.T) {
	accepted := map[string]LSN{
		"16/b374d848":       0x16_B374D848, // lower case
		"00000000/00000001": 1,             // 8 digits with leading zeros
	}
	for text, want := range accepted {
		if got, err := ParseLSN(text); err != nil || got != want {
			t.Errorf("ParseLSN(%q) = %v, %v; want %v", text, got, err, want)
		}
	}
	for _, text := range []string{
		"", "/", "0/", "/0", "0", "0/0/0", "x/0", "0/g", " 0/0", "0/0 ",
		"+1/0", "0x1/0", "-1/0", "123456789/0", "0/123456789",
	} {
		if got, err := ParseLSN(text); err == nil {
			t.Errorf("ParseLSN(%q) = %v, want an error", text, got)
		}
	}
}

func TestLSNJSONIsPostgreSQLText(t *testing.T) {
	data, err := json.Marshal(struct{ LSN LSN }{0x3000060})
	if err != nil {
		t.Fatal(err)
	}
	if string(data) != `{"LSN":"0/3000060"}` {
		t.Fatalf("json = %s", data)
	}
	var back struct{ LSN LSN }
	if err := json.Unmarshal(data, &back); err != nil || back.LSN != 0x3000060 {
		t.Fatalf("unmarshal = %v, %v", back.LSN, err)
	}
	if err := json.Unmarshal([]byte(`{"LSN":"nope"}`), &back); err == nil {
		t.Fatal("unmarshal of a bad LSN succeeded")
	}
}
