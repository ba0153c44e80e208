package clusterstate

import (
	"testing"
	"time"
)

func TestMajorityDown(t *testing.T) {
	type report struct {
		proxy uint64
		up    bool
		at    int
	}
	cases := []struct {
		name      string
		reports   []report // observations of pg1, applied in order
		voters    []uint64
		notBefore time.Time
		want      bool
		wantDown  int
		wantVote  int
	}{
		{name: "2 of 3 voters observe down", reports: []report{{1, false, 1}, {2, false, 1}, {3, true, 1}},
			voters: []uint64{1, 2, 3}, want: true, wantDown: 2, wantVote: 3},
		{name: "1 of 3 is not a majority (one proxy's bad network)", reports: []report{{1, false, 1}, {2, true, 1}, {3, true, 1}},
			voters: []uint64{1, 2, 3}, want: false, wantDown: 1, wantVote: 3},
		{name: "a tie is not a majority", reports: []report{{1, false, 1}, {2, false, 1}, {3, true, 1}, {4, true, 1}},
			voters: []uint64{1, 2, 3, 4}, want: false, wantDown: 2, wantVote: 4},
		{name: "3 of 4 is a majority", reports: []report{{1, false, 1}, {2, false, 1}, {3, false, 1}, {4, true, 1}},
			voters: []uint64{1, 2, 3, 4}, want: true, wantDown: 3, wantVote: 4},
		{name: "observations from non-voters (learners) are ignored",
			reports: []report{{1, false, 1}, {100, false, 1}, {101, false, 1}, {102, false, 1}},
			voters:  []uint64{1, 2, 3}, want: false, wantDown: 1, wantVote: 3},
		{name: "a voter without an observation does not count as down", reports: []report{{1, false, 1}},
			voters: []uint64{1, 2, 3}, want: false, wantDown: 1, wantVote: 3},
		{name: "the latest observation per proxy counts (down then up)", reports: []report{{1, false, 1}, {2, false, 1}, {2, true, 2}},
			voters: []uint64{1, 2, 3}, want: false, wantDown: 1, wantVote: 3},
		{name: "a late older observation does not override a newer one", reports: []report{{1, false, 1}, {2, false, 5}, {2, true, 2}},
			voters: []uint64{1, 2, 3}, want: true, wantDown: 2, wantVote: 3},
		{name: "duplicate voter ids count once", reports: []report{{1, false, 1}},
			voters: []uint64{1, 1, 1}, want: true, wantDown: 1, wantVote: 1},
		{name: "single voter observing down", reports: []report{{1, false, 1}},
			voters: []uint64{1}, want: true, wantDown: 1, wantVote: 1},
		{name: "no voters, no majority", reports: []report{{1, false, 1}},
			voters: nil, want: false, wantDown: 0, wantVote: 0},
		{name: "observations before notBefore are ignored", reports: []report{{1, false, 1}, {2, false, 9}, {3, false, 10}},
			voters: []uint64{1, 2, 3}, notBefore: at(9), want: true, wantDown: 2, wantVote: 3},
		{name: "a crashed proxy's old down report stops counting", reports: []report{{1, false, 1}, {2, false, 10}, {3, true, 10}},
			voters: []uint64{1, 2, 3}, notBefore: at(5), want: false, wantDown: 1, wantVote: 3},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			s := bootstrapped(t)
			for _, r := range tc.reports {
				s, _ = Apply(s, healthCmd("pg1", r.proxy, r.up, at(r.at)))
			}
			if err := s.Validate(); err != nil {
				t.Fatal(err)
			}
			if got := s.MajorityDownSince("pg1", tc.voters, tc.notBefore); got != tc.want {
				t.Errorf("MajorityDownSince = %t, want %t", got, tc.want)
			}
			if tc.notBefore.IsZero() {
				if got := s.MajorityDown("pg1", tc.voters); got != tc.want {
					t.Errorf("MajorityDown = %t, want %t", got, tc.want)
				}
			}
			down, voting := s.DownVotes("pg1", tc.voters, tc.notBefore)
			if down != tc.wantDown || voting != tc.wantVote {
				t.Errorf("DownVotes = %d of %d, want %d of %d", down, voting, tc.wantDown, tc.wantVote)
			}
			if s.MajorityDown("pg2", tc.voters) {
				t.Error("pg2 has no observations but is reported down")
			}
			if s.MajorityDown("pg9", tc.voters) {
				t.Error("an unknown node is reported down")
			}
		})
	}
}
