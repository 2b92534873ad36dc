package testenv

import (
	"testing"
	"time"
)

func TestParseADJChange(t *testing.T) {
	at, port, up, ok := ParseADJChange("2026/12/01 21:59:24.866668 BGP: [PXVXG-TFNNT] %ADJCHANGE: neighbor swp10(vm) in vrf default Down Waiting for NHT")
	if want := time.Date(2026, 12, 1, 21, 59, 24, 866668000, time.Local); !ok || !at.Equal(want) || port != "swp10" || up {
		t.Errorf("got %v %q up=%v ok=%v", at, port, up, ok)
	}
	if _, port, up, ok := ParseADJChange("2026/12/01 21:59:25.000001 BGP: [N9HHH-F8H1M] %ADJCHANGE: neighbor swp1(c1) in vrf default Up"); !ok || port != "swp1" || !up {
		t.Errorf("up line: %q up=%v ok=%v", port, up, ok)
	}
	for _, bad := range []string{
		"",
		"garbage",
		"2026/12/01 21:59:24.866668 BGP: %ADJCHANGE: neighbor swp1(x) in vrf default Sideways", // neither Up nor Down
		"%ADJCHANGE: neighbor swp1(c1) in vrf default Up",                                      // no timestamp
		"2026/12/01 21:59:24.866668 BGP: %ADJCHANGE: neighbor swp1(c1) Up",                     // no vrf
		"2026/12/01 21:59:24.866668 BGP: %ADJCHANGE: neighbor swp1 in vrf default",             // no state
	} {
		if _, _, _, ok := ParseADJChange(bad); ok {
			t.Errorf("parsed %q", bad)
		}
	}
}
