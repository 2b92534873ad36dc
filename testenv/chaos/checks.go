package chaos

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/fabricd/fabricd/testenv/nlmon"
)

// vtyshTimeout bounds every question to a ToR: the soak must never hang, even
// on a ToR that does not answer.
const vtyshTimeout = 10 * time.Second

// Check is one end-of-run verification.
type Check struct {
	Name   string
	OK     bool
	Detail string
}

// checkSessions waits (up to finalTimeout, asking every second) until every
// ToR has an Established session with every server that sent its 2 prefixes.
func (r *runner) checkSessions(ctx context.Context) Check {
	c := Check{Name: "every BGP session Established"}
	deadline := time.Now().Add(finalTimeout)
	for {
		var bad []string
		for _, t := range r.tors {
			qctx, cancel := context.WithTimeout(ctx, vtyshTimeout)
			peers, err := t.BGPPeers(qctx)
			cancel()
			if err != nil {
				bad = append(bad, fmt.Sprintf("%s: %v", t.Name(), err))
				continue
			}
			for _, s := range r.servers {
				port := t.PortFor(s.Name())
				p, ok := peers[port]
				switch {
				case !ok:
					bad = append(bad, fmt.Sprintf("%s %s (%s): no such neighbor", t.Name(), port, s.Name()))
				case p.State != "Established":
					bad = append(bad, fmt.Sprintf("%s %s (%s): %s", t.Name(), port, s.Name(), p.State))
				case p.PfxRcd != 2:
					bad = append(bad, fmt.Sprintf("%s %s (%s): %d prefixes received, want 2", t.Name(), port, s.Name(), p.PfxRcd))
				}
			}
		}
		if len(bad) == 0 {
			c.OK, c.Detail = true, ""
			return c
		}
		c.Detail = strings.Join(bad, "; ")
		if time.Now().After(deadline) || sleepCtx(ctx, time.Second) != nil {
			c.Detail = fmt.Sprintf("after waiting %v: %s", finalTimeout, c.Detail)
			return c
		}
	}
}

// torTable is what `show bgp ipv4 unicast json` says of each prefix.
type torTable struct {
	Routes map[string][]struct {
		Valid    bool   `json:"valid"`
		Bestpath bool   `json:"bestpath"`
		Path     string `json:"path"` // AS path, space-separated; "" for the ToR's own
	} `json:"routes"`
}

// announced computes what a server should have in its kernel from the ToRs'
// BGP tables: each ToR announces its best path to every prefix, with its own
// AS prepended; the server refuses paths with its own AS and its own
// prefixes, and uses every ToR whose path is shortest (multipath-relax).
func announced(tables []torTable, uplinks []string, asn uint32, own []netip.Prefix) (map[netip.Prefix][]string, error) {
	type best struct {
		length int
		devs   []string
	}
	out := map[netip.Prefix]best{}
	for i, tbl := range tables {
		for key, paths := range tbl.Routes {
			p, err := netip.ParsePrefix(key)
			if err != nil {
				return nil, fmt.Errorf("ToR %d: prefix %q: %w", i+1, key, err)
			}
			if slices.Contains(own, p) || !p.Addr().Is4() {
				continue
			}
			for _, path := range paths {
				if !path.Valid || !path.Bestpath {
					continue
				}
				ases := strings.Fields(path.Path)
				if slices.Contains(ases, strconv.FormatUint(uint64(asn), 10)) {
					continue
				}
				n := len(ases) + 1
				b, ok := out[p]
				switch {
				case !ok || n < b.length:
					out[p] = best{length: n, devs: []string{uplinks[i]}}
				case n == b.length:
					b.devs = append(b.devs, uplinks[i])
					out[p] = b
				}
			}
		}
	}
	res := map[netip.Prefix][]string{}
	for p, b := range out {
		slices.Sort(b.devs)
		res[p] = b.devs
	}
	return res, nil
}

// diffTables describes up to 5 differences between what a kernel has and what
// it should have.
func diffTables(have, want map[netip.Prefix][]string) []string {
	var out []string
	keys := slices.Collect(maps.Keys(have))
	for p := range want {
		if _, ok := have[p]; !ok {
			keys = append(keys, p)
		}
	}
	slices.SortFunc(keys, func(a, b netip.Prefix) int { return a.Addr().Compare(b.Addr()) })
	for _, p := range keys {
		h, w := have[p], want[p]
		if slices.Equal(h, w) {
			continue
		}
		switch {
		case w == nil:
			out = append(out, fmt.Sprintf("%v via %v not announced", p, h))
		case h == nil:
			out = append(out, fmt.Sprintf("%v missing (announced via %v)", p, w))
		default:
			out = append(out, fmt.Sprintf("%v via %v, announced via %v", p, h, w))
		}
		if len(out) == 5 {
			break
		}
	}
	return out
}

// checkKernels compares every server's kernel routes with what the ToRs'
// BGP tables announce to it.
func (r *runner) checkKernels(ctx context.Context) []Check {
	tables := make([]torTable, len(r.tors))
	for i, t := range r.tors {
		qctx, cancel := context.WithTimeout(ctx, vtyshTimeout)
		err := t.VtyshJSON(qctx, "show bgp ipv4 unicast json", &tables[i])
		cancel()
		if err != nil {
			return []Check{{Name: "kernels equal the ToRs' announcements", Detail: err.Error()}}
		}
	}
	var out []Check
	for i, s := range r.servers {
		c := Check{Name: s.Name() + "'s kernel equals the ToRs' announcements"}
		spec := s.Spec()
		want, err := announced(tables, s.Uplinks(), spec.ASN, []netip.Prefix{spec.Loopback, spec.Block})
		if err != nil {
			c.Detail = err.Error()
			out = append(out, c)
			continue
		}
		var have map[netip.Prefix][]string
		r.mons[i].Read(func(f *nlmon.FIB) { have = f.Table() })
		if d := diffTables(have, want); len(d) > 0 {
			c.Detail = strings.Join(d, "; ")
		} else {
			c.OK = true
			c.Detail = fmt.Sprintf("%d routes", len(have))
		}
		out = append(out, c)
	}
	return out
}

// checkMonitors makes sure the monitors' timelines can be trusted: no netlink
// message lost, and their model equal to a fresh dump of each kernel.
func (r *runner) checkMonitors() []Check {
	var out []Check
	for i, m := range r.mons {
		c := Check{Name: r.servers[i].Name() + "'s kernel monitor agrees with a dump"}
		if err := m.Verify(); err != nil {
			c.Detail = err.Error()
		} else {
			c.OK = true
		}
		out = append(out, c)
	}
	return out
}
