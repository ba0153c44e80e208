package health

import (
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"
)

// fakeClock is a manual clock for the detector.
type fakeClock struct{ now time.Time }

func (c *fakeClock) Now() time.Time          { return c.now }
func (c *fakeClock) Advance(d time.Duration) { c.now = c.now.Add(d) }

func newFakeClock() *fakeClock {
	return &fakeClock{now: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)}
}

// runDetectorScript plays a transcript against a Detector of node "pg1"
// with the default thresholds (3 failures, 1.5 s, 2 successes). Each line
// is a step and, after "=>", the changes it must produce ("-" for none):
//
//	ok standby 1   a successful probe of a standby on timeline 1
//	ok primary 2   a successful probe of a primary on timeline 2
//	fail           a failed probe
//	fail 9s        a failed probe that started 9 s ago
//	wait 500ms     advance the clock (produces nothing)
//	stalled        Detector.Stalled(now): this process did not run until now
//	check          Detector.Check
//
// A change is written "from -> to", e.g. "unknown -> up standby timeline 1".
func runDetectorScript(t *testing.T, script string) {
	t.Helper()
	clock := newFakeClock()
	d := NewDetector(DetectorConfig{Now: clock.Now}, "pg1")
	for n, line := range strings.Split(strings.TrimSpace(script), "\n") {
		step, want, _ := strings.Cut(line, "=>")
		fields := strings.Fields(step)
		want = strings.TrimSpace(want)
		var changes []Change
		switch fields[0] {
		case "ok":
			timeline, err := strconv.Atoi(fields[2])
			if err != nil {
				t.Fatalf("line %d: %v", n+1, err)
			}
			p := Probe{Node: "pg1", At: clock.Now(), Reachable: true, InRecovery: fields[1] == "standby", Timeline: uint32(timeline)}
			if c, ok := d.Observe(p); ok {
				changes = append(changes, c)
			}
		case "fail":
			started := clock.Now()
			if len(fields) > 1 {
				ago, err := time.ParseDuration(fields[1])
				if err != nil {
					t.Fatalf("line %d: %v", n+1, err)
				}
				started = started.Add(-ago)
			}
			if c, ok := d.Observe(Probe{Node: "pg1", At: started, Err: "connection refused"}); ok {
				changes = append(changes, c)
			}
		case "stalled":
			d.Stalled(clock.Now())
		case "wait":
			dur, err := time.ParseDuration(fields[1])
			if err != nil {
				t.Fatalf("line %d: %v", n+1, err)
			}
			clock.Advance(dur)
			want = "-"
		case "check":
			changes = d.Check()
		default:
			t.Fatalf("line %d: unknown step %q", n+1, step)
		}
		got := make([]string, len(changes))
		for i, c := range changes {
			got[i] = c.From.String() + " -> " + c.To.String()
			if c.Node != "pg1" || !c.At.Equal(clock.Now()) || c.Reason == "" {
				t.Errorf("line %d: malformed change %+v", n+1, c)
			}
		}
		gotText := strings.Join(got, "; ")
		if gotText == "" {
			gotText = "-"
		}
		if gotText != want {
			t.Errorf("line %d %q: got %s, want %s", n+1, strings.TrimSpace(step), gotText, want)
		}
	}
}

func TestDetectorStartsUnknownAndComesUpAfterTwoSuccesses(t *testing.T) {
	runDetectorScript(t, `
ok standby 1 => -
wait 500ms
ok standby 1 => unknown -> up standby timeline 1
wait 500ms
ok standby 1 => -
check        => -`)
}

func TestDetectorFlapsBelowTheThresholdProduceNoChange(t *testing.T) {
	runDetectorScript(t, `
ok primary 1 => -
ok primary 1 => unknown -> up primary timeline 1
wait 500ms
fail         => -
wait 500ms
fail         => -
wait 400ms
ok primary 1 => -
wait 500ms
fail         => -
wait 500ms
ok primary 1 => -
wait 500ms
fail         => -
wait 500ms
fail         => -
wait 400ms
check        => -
ok primary 1 => -`)
}

func TestDetectorSustainedFailureIsExactlyOneDown(t *testing.T) {
	runDetectorScript(t, `
ok standby 1 => -
ok standby 1 => unknown -> up standby timeline 1
wait 100ms
fail         => -
wait 100ms
fail         => -
wait 100ms
fail         => up standby timeline 1 -> down standby timeline 1
wait 100ms
fail         => -
wait 5s
check        => -
fail         => -`)
}

func TestDetectorRecoveryIsExactlyOneUp(t *testing.T) {
	runDetectorScript(t, `
ok primary 1 => -
ok primary 1 => unknown -> up primary timeline 1
fail         => -
fail         => -
fail         => up primary timeline 1 -> down primary timeline 1
ok primary 1 => -
fail         => -
ok primary 1 => -
ok primary 1 => down primary timeline 1 -> up primary timeline 1
ok primary 1 => -
ok primary 1 => -`)
}

func TestDetectorDownWhenProbesHang(t *testing.T) {
	// No probe answers at all (each hangs until its timeout): the time rule
	// alone takes the node down, once.
	runDetectorScript(t, `
ok standby 1 => -
ok standby 1 => unknown -> up standby timeline 1
wait 1499ms
check        => -
wait 1ms
check        => up standby timeline 1 -> down standby timeline 1
wait 1s
check        => -`)
}

func TestDetectorOneFailureAfterLongSilenceIsDown(t *testing.T) {
	runDetectorScript(t, `
ok standby 1 => -
ok standby 1 => unknown -> up standby timeline 1
wait 2s
fail         => up standby timeline 1 -> down standby timeline 1`)
}

func TestDetectorNeverAnsweringNodeGoesDown(t *testing.T) {
	runDetectorScript(t, `
wait 1s
check        => -
wait 500ms
check        => unknown -> down primary timeline 0
ok standby 1 => -
ok standby 1 => down primary timeline 0 -> up standby timeline 1`)
}

func TestDetectorFailuresFromUnknownGoDown(t *testing.T) {
	runDetectorScript(t, `
fail => -
fail => -
fail => unknown -> down primary timeline 0`)
}

func TestDetectorRoleAndTimelineChangesOfAnUpNodeAreImmediate(t *testing.T) {
	runDetectorScript(t, `
ok standby 1 => -
ok standby 1 => unknown -> up standby timeline 1
ok primary 2 => up standby timeline 1 -> up primary timeline 2
ok primary 2 => -
ok primary 3 => up primary timeline 2 -> up primary timeline 3
ok standby 3 => up primary timeline 3 -> up standby timeline 3`)
}

func TestDetectorRoleChangeWhileDownArrivesWithTheUp(t *testing.T) {
	runDetectorScript(t, `
ok primary 1 => -
ok primary 1 => unknown -> up primary timeline 1
fail         => -
fail         => -
fail         => up primary timeline 1 -> down primary timeline 1
ok standby 2 => -
ok standby 2 => down primary timeline 1 -> up standby timeline 2`)
}

func TestDetectorRecoveryNeedsConsecutiveSuccesses(t *testing.T) {
	runDetectorScript(t, `
fail         => -
fail         => -
fail         => unknown -> down primary timeline 0
ok primary 1 => -
fail         => -
ok primary 1 => -
fail         => -
ok primary 1 => -
ok primary 1 => down primary timeline 0 -> up primary timeline 1`)
}

func TestDetectorThresholdsAreConfigurable(t *testing.T) {
	clock := newFakeClock()
	d := NewDetector(DetectorConfig{FailAfter: 1, RecoverAfter: 1, DownAfter: time.Hour, Now: clock.Now})
	up := Probe{Node: "a", Reachable: true}
	if c, ok := d.Observe(up); !ok || c.To.Health != HealthUp {
		t.Fatalf("first success with RecoverAfter 1: %+v, %v", c, ok)
	}
	if c, ok := d.Observe(Probe{Node: "a", Err: "x"}); !ok || c.To.Health != HealthDown || !strings.Contains(c.Reason, "1 consecutive failed probes: x") {
		t.Fatalf("first failure with FailAfter 1: %+v, %v", c, ok)
	}
}

func TestDetectorCheckOrdersByNodeAndCarriesTheLastFailure(t *testing.T) {
	clock := newFakeClock()
	d := NewDetector(DetectorConfig{Now: clock.Now}, "pg3", "pg1", "pg2")
	d.Observe(Probe{Node: "pg2", Err: "timeout"})
	clock.Advance(2 * time.Second)
	changes := d.Check()
	var got []string
	for _, c := range changes {
		got = append(got, fmt.Sprintf("%s:%s", c.Node, c.To.Health))
	}
	if strings.Join(got, " ") != "pg1:down pg2:down pg3:down" {
		t.Fatalf("changes = %v", got)
	}
	if changes[1].Probe.Err != "timeout" || !strings.Contains(changes[1].Reason, "no successful probe for 2s: timeout") {
		t.Fatalf("pg2 change = %+v", changes[1])
	}
	v, ok := d.Verdict("pg2")
	if !ok || v.State.Health != HealthDown || v.ConsecutiveFailures != 1 || !v.Since.Equal(clock.Now()) {
		t.Fatalf("verdict = %+v, %v", v, ok)
	}
	if _, ok := d.Verdict("pg9"); ok {
		t.Fatal("verdict of an unknown node")
	}
}

func TestDetectorIgnoresProbesInFlightWhileTheProcessDidNotRun(t *testing.T) {
	// SIGSTOP for 9 s: every probe in flight times out, and nobody probed.
	runDetectorScript(t, `
ok primary 1 => -
ok primary 1 => unknown -> up primary timeline 1
wait 9s
stalled      => -
fail 9s      => -
fail 9s      => -
fail 9s      => -
check        => -
ok primary 1 => -`)
}

func TestDetectorSilenceAfterAStallStartsAtItsEnd(t *testing.T) {
	runDetectorScript(t, `
ok primary 1 => -
ok primary 1 => unknown -> up primary timeline 1
wait 9s
stalled      => -
check        => -
wait 1400ms
check        => -
wait 100ms
check        => up primary timeline 1 -> down primary timeline 1`)
}

func TestDetectorFailuresAfterAStallCount(t *testing.T) {
	runDetectorScript(t, `
ok primary 1 => -
ok primary 1 => unknown -> up primary timeline 1
wait 100ms
fail         => -
wait 9s
stalled      => -
fail 9s      => -
fail         => -
fail         => up primary timeline 1 -> down primary timeline 1`)
}
