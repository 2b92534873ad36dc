package testenv

import (
	"strings"
	"time"
)

// FRRTimeLayout is the timestamp that starts every line of a lab ToR's FRR
// log (`log timestamp precision 6`), in local time.
const FRRTimeLayout = "2006/01/02 15:04:05.000000"

// ParseADJChange decodes FRR's session log line, `2026/12/01 21:59:24.866668
// BGP: [H4B4J-DCW2R] %ADJCHANGE: neighbor swp1(c1) in vrf default Up` (or
// `... Down Waiting for NHT`): when, which neighbor, up or down.
func ParseADJChange(line string) (at time.Time, port string, up, ok bool) {
	const key = "%ADJCHANGE: neighbor "
	i := strings.Index(line, key)
	if i < 0 || len(line) < len(FRRTimeLayout) {
		return time.Time{}, "", false, false
	}
	at, err := time.ParseInLocation(FRRTimeLayout, line[:len(FRRTimeLayout)], time.Local)
	if err != nil {
		return time.Time{}, "", false, false
	}
	rest := line[i+len(key):]
	end := strings.IndexAny(rest, "( ")
	if end <= 0 {
		return time.Time{}, "", false, false
	}
	port = rest[:end]
	j := strings.Index(rest, " in vrf ")
	if j < 0 {
		return time.Time{}, "", false, false
	}
	state := strings.Fields(rest[j+len(" in vrf "):]) // VRF name, then Up or Down
	if len(state) < 2 {
		return time.Time{}, "", false, false
	}
	switch state[1] {
	case "Up":
		return at, port, true, true
	case "Down":
		return at, port, false, true
	}
	return time.Time{}, "", false, false
}
