package nlmon

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os/exec"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabricd/fabricd/testenv/netns"
)

// Counters counts, per interface, the packets of a namespace that match an
// nftables expression: named nftables counters, set up once with nft(8) and
// then read in process over a netfilter netlink socket, so reading them often
// costs no process.
//
// For each interface IF there are two counters: in_IF counts the matching
// packets received on IF, before routing (so also those the namespace then
// drops for want of a route), and out_IF those sent out of IF. A packet a
// router forwards is counted once in an in_ and, if it could be routed, once
// in an out_ counter.
type Counters struct {
	ns     string
	table  string
	ifaces []string

	mu sync.Mutex
	fd int
}

// Count is one interface's forwarded packets.
type Count struct{ In, Out uint64 }

// Sub returns c - o, field by field.
func (c Count) Sub(o Count) Count { return Count{In: c.In - o.In, Out: c.Out - o.Out} }

var nftName = regexp.MustCompile(`^[a-zA-Z][a-zA-Z0-9_]{0,30}$`)

// InstallCounters creates nftables table `inet TABLE` in namespace ns, with the
// counters of each interface in ifaces for packets matching match (an nft
// expression such as "meta l4proto icmp"). The table's chains only count:
// they accept everything.
func InstallCounters(ctx context.Context, ns, table string, ifaces []string, match string) (*Counters, error) {
	if !nftName.MatchString(table) {
		return nil, fmt.Errorf("counters: bad table name %q", table)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "table inet %s {\n", table)
	for _, ifc := range ifaces {
		if !nftName.MatchString("in_" + ifc) {
			return nil, fmt.Errorf("counters: interface name %q does not fit an nftables counter name", ifc)
		}
		fmt.Fprintf(&b, "\tcounter in_%s { }\n\tcounter out_%s { }\n", ifc, ifc)
	}
	// Incoming before anything else of the namespace can drop the packet,
	// outgoing after everything else.
	b.WriteString("\tchain incoming {\n\t\ttype filter hook prerouting priority -400; policy accept;\n")
	for _, ifc := range ifaces {
		fmt.Fprintf(&b, "\t\tiifname %q %s counter name \"in_%s\"\n", ifc, match, ifc)
	}
	b.WriteString("\t}\n\tchain outgoing {\n\t\ttype filter hook postrouting priority 400; policy accept;\n")
	for _, ifc := range ifaces {
		fmt.Fprintf(&b, "\t\toifname %q %s counter name \"out_%s\"\n", ifc, match, ifc)
	}
	b.WriteString("\t}\n}\n")
	if err := nft(ctx, ns, b.String()); err != nil {
		return nil, err
	}
	c := &Counters{ns: ns, table: table, ifaces: ifaces, fd: -1}
	err := netns.Do(ns, func() error {
		fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
		if err != nil {
			return fmt.Errorf("opening netfilter netlink socket: %w", err)
		}
		if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
			unix.Close(fd)
			return fmt.Errorf("binding netfilter netlink socket: %w", err)
		}
		// A read never blocks for long, whatever the kernel does.
		tv := unix.NsecToTimeval(int64(2 * time.Second))
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			unix.Close(fd)
			return fmt.Errorf("netfilter netlink socket: %w", err)
		}
		c.fd = fd
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("counters in %s: %w", ns, errors.Join(err, nft(context.Background(), ns, "delete table inet "+table+"\n")))
	}
	return c, nil
}

// nft runs nft -f - in namespace ns with script on its standard input.
func nft(ctx context.Context, ns, script string) error {
	cmd := exec.CommandContext(ctx, "ip", "netns", "exec", ns, "nft", "-f", "-")
	cmd.Stdin = strings.NewReader(script)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	cmd.WaitDelay = 2 * time.Second
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("nft in %s: %w: %s", ns, err, strings.TrimSpace(out.String()))
	}
	return nil
}

// Read returns every interface's counts now.
func (c *Counters) Read() (map[string]Count, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil, fmt.Errorf("counters in %s: closed", c.ns)
	}
	hdr := []byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0} // struct nfgenmsg
	typ := make([]byte, 4)
	binary.BigEndian.PutUint32(typ, unix.NFT_OBJECT_COUNTER)
	req := request(unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETOBJ, unix.NLM_F_DUMP, 1, hdr,
		rtattr(unix.NFTA_OBJ_TABLE, append([]byte(c.table), 0)), rtattr(unix.NFTA_OBJ_TYPE, typ))
	raw := map[string]uint64{}
	err := dump(c.fd, req, func(_ uint16, data []byte) {
		if table, name, packets, ok := parseCounterObj(data); ok && table == c.table {
			raw[name] = packets
		}
	})
	if err != nil {
		return nil, fmt.Errorf("reading counters in %s: %w", c.ns, err)
	}
	out := make(map[string]Count, len(c.ifaces))
	for _, ifc := range c.ifaces {
		in, ok1 := raw["in_"+ifc]
		o, ok2 := raw["out_"+ifc]
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("reading counters in %s: no counters for %s (table %s gone?)", c.ns, ifc, c.table)
		}
		out[ifc] = Count{In: in, Out: o}
	}
	return out, nil
}

// parseCounterObj decodes an NFT_MSG_NEWOBJ message of a counter object.
func parseCounterObj(b []byte) (table, name string, packets uint64, ok bool) {
	const nfgenmsgLen = 4
	if len(b) < nfgenmsgLen {
		return "", "", 0, false
	}
	var havePackets bool
	for typ, data := range attrs(b[nfgenmsgLen:]) {
		switch typ {
		case unix.NFTA_OBJ_TABLE:
			table = strings.TrimRight(string(data), "\x00")
		case unix.NFTA_OBJ_NAME:
			name = strings.TrimRight(string(data), "\x00")
		case unix.NFTA_OBJ_DATA:
			for t, d := range attrs(data) {
				if t == unix.NFTA_COUNTER_PACKETS && len(d) == 8 {
					packets, havePackets = binary.BigEndian.Uint64(d), true
				}
			}
		}
	}
	return table, name, packets, havePackets && name != ""
}

// Close removes the table and closes the socket.
func (c *Counters) Close(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fd < 0 {
		return nil
	}
	unix.Close(c.fd)
	c.fd = -1
	return nft(ctx, c.ns, "delete table inet "+c.table+"\n")
}
