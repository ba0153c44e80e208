package localcluster

import "testing"

func TestParseLockFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		content string
		want    lockFile
		err     bool
	}{
		{
			name:    "running server",
			content: "4711\n/tmp/c/pg1/data\n1764105600\n5432\n/tmp/c/pg1\n127.0.0.1\n  5432001     65538\nready   \n",
			want:    lockFile{pid: 4711, shmID: 65538},
		},
		{
			name:    "starting server without shared memory yet",
			content: "4711\n/tmp/c/pg1/data\n1764105600\n5432\n",
			want:    lockFile{pid: 4711, shmID: -1},
		},
		{name: "empty", content: "", err: true},
		{name: "garbage pid", content: "abc\n", err: true},
		{name: "zero pid", content: "0\n", err: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := parseLockFile(tc.content)
			if tc.err {
				if err == nil {
					t.Errorf("parsed as %+v, want an error", got)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Errorf("parseLockFile = %+v, %v; want %+v", got, err, tc.want)
			}
		})
	}
}

func TestParseSegment(t *testing.T) {
	for _, tc := range []struct {
		line string
		want segment
		ok   bool
	}{
		{"       key      shmid perms                  size  cpid  lpid nattch   uid   gid", segment{}, false},
		{"   9982274          9   600                    56 11447 11453      6   101   104   101   104", segment{id: 9, creatorPID: 11447, attached: 6}, true},
		{"", segment{}, false},
	} {
		got, ok := parseSegment(tc.line)
		if ok != tc.ok || got != tc.want {
			t.Errorf("parseSegment(%q) = %+v, %v; want %+v, %v", tc.line, got, ok, tc.want, tc.ok)
		}
	}
}
