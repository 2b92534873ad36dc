package testenv

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// ToRFlavor selects what a ToR runs and how it is configured, for the interop
// tests: the seed's FRR, variants of it that real fabrics use, or BIRD 2.
// Options.ToRFlavors picks one per ToR.
type ToRFlavor int

const (
	// ToRFRR is the seed's FRR ToR: RAs every 5 s with a 15 s router lifetime,
	// `neighbor swpN interface peer-group COMPUTE`. The default.
	ToRFRR ToRFlavor = iota
	// ToRFRRV6Only is FRR with `neighbor swpN interface v6only peer-group
	// COMPUTE`. In FRR 8.4 v6only only stops bgpd from deriving the peer from
	// an IPv4 /30 or /31 on the port; extended next hop is still advertised.
	ToRFRRV6Only
	// ToRFRRRALifetime0 is FRR with `ipv6 nd ra-lifetime 0` on the ports: its
	// RAs say "I am not a default router", as on a fabric whose default route
	// comes from BGP.
	ToRFRRRALifetime0
	// ToRFRRNoRA is FRR with `ipv6 nd suppress-ra` on the ports, and a ToR that
	// really sends no RA. FRR 8.4 ignores suppress-ra on a port with an
	// unnumbered BGP neighbor (bgpd asks zebra for RAs, and zebra's
	// BGP_RA_CONFIGURED wins over the config), so the lab also drops the
	// ToR's outgoing RAs on the ports' egress hooks (nftables table netdev
	// fabricd_lab_nora; Router.DroppedRAs counts them).
	// FRR still hears the servers' RAs, and so still learns and calls them.
	ToRFRRNoRA
	// ToRFRRGlobal is the seed's FRR with a global IPv6 address on each port
	// (2001:db8:T:N::1/64 on swpN of ToR T): FRR then sends 32-byte next hops
	// with the global address in the first half. The servers' side has none
	// configured (it may pick one up by SLAAC).
	ToRFRRGlobal
	// ToRBIRD is BIRD 2 as operators run it as a ToR: `protocol radv` on the
	// ports, one passive dynamic BGP protocol per port (`neighbor range
	// fe80::/10 external`, `interface "swpN"`) with extended next hop, and
	// `protocol kernel` so that it really forwards. See Router.birdConf.
	ToRBIRD
)

// toRFlavorNames are the flavors' names, as subtest names and command-line values.
var toRFlavorNames = []string{
	ToRFRR:            "frr",
	ToRFRRV6Only:      "frr-v6only",
	ToRFRRRALifetime0: "frr-ra-lifetime-0",
	ToRFRRNoRA:        "frr-no-ra",
	ToRFRRGlobal:      "frr-global-addr",
	ToRBIRD:           "bird",
}

func (f ToRFlavor) String() string {
	if f >= 0 && int(f) < len(toRFlavorNames) {
		return toRFlavorNames[f]
	}
	return fmt.Sprintf("ToRFlavor(%d)", int(f))
}

// ParseToRFlavor returns the flavor named s (see String).
func ParseToRFlavor(s string) (ToRFlavor, error) {
	for i, n := range toRFlavorNames {
		if n == s {
			return ToRFlavor(i), nil
		}
	}
	return 0, fmt.Errorf("testenv: unknown ToR flavor %q (want one of %s)", s, strings.Join(toRFlavorNames, ", "))
}

// ToRFlavors lists every flavor.
func ToRFlavors() []ToRFlavor {
	out := make([]ToRFlavor, len(toRFlavorNames))
	for i := range out {
		out[i] = ToRFlavor(i)
	}
	return out
}

// IsFRR reports whether the flavor runs FRR (zebra, bgpd, bfdd).
func (f ToRFlavor) IsFRR() bool { return f != ToRBIRD }

// flavorOf returns ToR i's flavor: Options.ToRFlavors[i], ToRFRR if unset.
func (o Options) flavorOf(i int) ToRFlavor {
	if i < len(o.ToRFlavors) {
		return o.ToRFlavors[i]
	}
	return ToRFRR
}

func validateFlavors(opts Options) error {
	if len(opts.ToRFlavors) > opts.ToRs {
		return fmt.Errorf("testenv: %d ToRFlavors for %d ToRs", len(opts.ToRFlavors), opts.ToRs)
	}
	for i, f := range opts.ToRFlavors {
		if f < 0 || int(f) >= len(toRFlavorNames) {
			return fmt.Errorf("testenv: ToR %d: unknown flavor %v", i, f)
		}
		// The originated table is a list of FRR `network` statements; BIRD
		// ToRs have no equivalent here.
		if !f.IsFRR() && opts.ToRPrefixes > 0 {
			return fmt.Errorf("testenv: ToR %d: ToRPrefixes needs an FRR ToR, not %v", i, f)
		}
	}
	return nil
}

// Flavor is what the ToR runs (Options.ToRFlavors).
func (r *Router) Flavor() ToRFlavor { return r.flavor }

// portNDConfig is what the ToR's zebra config says under `interface swpN`.
func (r *Router) portNDConfig() string {
	switch r.flavor {
	case ToRFRRRALifetime0:
		return " ipv6 nd ra-interval 5\n ipv6 nd ra-lifetime 0\n no ipv6 nd suppress-ra\n"
	case ToRFRRNoRA:
		return " ipv6 nd suppress-ra\n"
	default:
		return " ipv6 nd ra-interval 5\n ipv6 nd ra-lifetime 15\n no ipv6 nd suppress-ra\n"
	}
}

// neighborLine is the ToR's bgpd line that makes port an unnumbered peer.
func (r *Router) neighborLine(port string) string {
	if r.flavor == ToRFRRV6Only {
		return fmt.Sprintf(" neighbor %s interface v6only peer-group COMPUTE\n", port)
	}
	return fmt.Sprintf(" neighbor %s interface peer-group COMPUTE\n", port)
}

// GlobalAddr is the global IPv6 address of the ToR's port to server i
// (0-based) with ToRFRRGlobal: 2001:db8:T:N::1/64, T the ToR's and N the
// port's number.
func (r *Router) GlobalAddr(i int) netip.Prefix {
	return netip.MustParsePrefix(fmt.Sprintf("2001:db8:%d:%d::1/64", r.index+1, i+1))
}

// noRATable is the nftables table that keeps a ToRFRRNoRA ToR's RAs off its ports.
const noRATable = "fabricd_lab_nora"

// prepareFlavors sets up what a flavor needs in the ToR's namespace before its
// daemons start, and what outlives their restarts: global port addresses, the
// RA drop. It waits for the global addresses to pass DAD, so that FRR's first
// UPDATE already carries them.
func (l *Lab) prepareFlavors(ctx context.Context) error {
	for _, r := range l.tors {
		switch r.flavor {
		case ToRFRRGlobal:
			for i := range l.servers {
				if _, err := ipn(ctx, r.Namespace(), "addr", "add", r.GlobalAddr(i).String(), "dev", r.port(i)); err != nil {
					return err
				}
			}
			if err := waitNoTentative(ctx, r.Namespace()); err != nil {
				return err
			}
		case ToRFRRNoRA:
			// On each port's egress hook, after the stack: zebra's sendmsg
			// succeeds and the RA just never reaches the wire. (A drop in
			// the output hook made every send fail with EPERM, and zebra
			// log "Tx RA failed" several times a second.)
			var rules strings.Builder
			fmt.Fprintf(&rules, "table netdev %s {\n", noRATable)
			for i := range l.servers {
				fmt.Fprintf(&rules, "\tchain %[1]s {\n\t\ttype filter hook egress device %[1]q priority 0; policy accept;\n"+
					"\t\ticmpv6 type nd-router-advert counter drop\n\t}\n", r.port(i))
			}
			rules.WriteString("}\n")
			if err := nftLoad(ctx, r.Namespace(), filepath.Join(r.dir(), "nora.nft"), rules.String()); err != nil {
				return err
			}
		}
	}
	return nil
}

// DroppedRAs returns how many RAs a ToRFRRNoRA ToR tried to send and the lab
// dropped: evidence of whether FRR honours `ipv6 nd suppress-ra`.
func (r *Router) DroppedRAs(ctx context.Context) (uint64, error) {
	if r.flavor != ToRFRRNoRA {
		return 0, fmt.Errorf("%s is %v, not %v", r.name, r.flavor, ToRFRRNoRA)
	}
	out, err := r.Exec(ctx, "nft", "-j", "list", "table", "netdev", noRATable)
	if err != nil {
		return 0, err
	}
	var doc struct {
		Nftables []struct {
			Rule *struct {
				Expr []struct {
					Counter *struct {
						Packets uint64 `json:"packets"`
					} `json:"counter"`
				} `json:"expr"`
			} `json:"rule"`
		} `json:"nftables"`
	}
	if err := json.Unmarshal([]byte(out), &doc); err != nil {
		return 0, fmt.Errorf("parsing nft -j output: %w", err)
	}
	var n uint64
	counters := 0
	for _, item := range doc.Nftables {
		if item.Rule == nil {
			continue
		}
		for _, e := range item.Rule.Expr {
			if e.Counter != nil {
				n += e.Counter.Packets
				counters++
			}
		}
	}
	if counters == 0 {
		return 0, errors.New("no counter in table " + noRATable)
	}
	return n, nil
}

func nftLoad(ctx context.Context, ns, path, rules string) error {
	if err := os.WriteFile(path, []byte(rules), 0o644); err != nil {
		return err
	}
	_, err := execIn(ctx, ns, "nft", "-f", path)
	return err
}

// waitNoTentative waits until no address in ns is tentative any more.
func waitNoTentative(ctx context.Context, ns string) error {
	return WaitFor(ctx, dadTimeout, "the ToR's global addresses to pass DAD", func() error {
		out, err := ipn(ctx, ns, "-6", "addr", "show", "tentative")
		if err != nil {
			return err
		}
		if strings.TrimSpace(out) != "" {
			return fmt.Errorf("tentative in %s:\n%s", ns, out)
		}
		return nil
	})
}

// checkFlavorHost fails early when a flavor's programs are missing.
func checkFlavorHost(opts Options) error {
	for i := range opts.ToRs {
		var tools []string
		switch opts.flavorOf(i) {
		case ToRBIRD:
			tools = []string{"bird", "birdc"}
		case ToRFRRNoRA:
			tools = []string{"nft"}
		}
		for _, tool := range tools {
			if _, err := exec.LookPath(tool); err != nil {
				return fmt.Errorf("testenv: %s not found (apt-get install bird2 nftables): %w", tool, err)
			}
		}
	}
	return nil
}
