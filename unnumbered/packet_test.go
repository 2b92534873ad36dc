package unnumbered

import (
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/mdlayher/ndp"
	"golang.org/x/net/ipv6"
)

func marshal(t *testing.T, m ndp.Message) []byte {
	t.Helper()
	b, err := ndp.MarshalMessage(m)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestParseND(t *testing.T) {
	const ifindex = 7
	m1 := mac(t, mac1)
	validRA := marshal(t, &ndp.RouterAdvertisement{
		CurrentHopLimit: 64,
		RouterLifetime:  15 * time.Second,
		Options:         llaOptions(m1),
	})
	validRS := marshal(t, ourRS(m1))
	good := &ipv6.ControlMessage{HopLimit: 255, IfIndex: ifindex}
	ll := addr(t, tor1)

	withCode := append([]byte(nil), validRA...)
	withCode[1] = 1
	// An option claiming 0 length, which would make a naive parser loop.
	zeroLenOpt := append(append([]byte(nil), validRA[:16]...), 1, 0, 0, 0, 0, 0, 0, 0)
	// An option running past the end of the packet.
	longOpt := append(append([]byte(nil), validRA[:16]...), 1, 2, 0, 0, 0, 0, 0, 0)

	tests := []struct {
		name    string
		b       []byte
		cm      *ipv6.ControlMessage
		src     netip.Addr
		wantErr string // "" for valid
	}{
		{name: "valid RA", b: validRA, cm: good, src: ll},
		{name: "valid RA without options", b: marshal(t, &ndp.RouterAdvertisement{}), cm: good, src: ll},
		{name: "valid RS", b: validRS, cm: good, src: ll},
		{name: "RS from unspecified without option", b: marshal(t, ourRS(nil)), cm: good, src: netip.IPv6Unspecified()},
		{name: "RS from unspecified with option", b: validRS, cm: good, src: netip.IPv6Unspecified(), wantErr: "unspecified"},
		{name: "empty", b: nil, cm: good, src: ll, wantErr: "too short"},
		{name: "3 bytes", b: validRA[:3], cm: good, src: ll, wantErr: "too short"},
		{name: "truncated RA", b: validRA[:10], cm: good, src: ll, wantErr: "malformed"},
		{name: "zero-length option", b: zeroLenOpt, cm: good, src: ll, wantErr: "malformed"},
		{name: "option past the end", b: longOpt, cm: good, src: ll, wantErr: "malformed"},
		{name: "echo request", b: []byte{128, 0, 0, 0, 0, 1, 0, 1}, cm: good, src: ll, wantErr: "unexpected ICMPv6 type"},
		{name: "neighbor solicitation", b: []byte{135, 0, 0, 0}, cm: good, src: ll, wantErr: "unexpected ICMPv6 type"},
		{name: "hop limit 64", b: validRA, cm: &ipv6.ControlMessage{HopLimit: 64, IfIndex: ifindex}, src: ll, wantErr: "hop limit 64"},
		{name: "hop limit 254 RS", b: validRS, cm: &ipv6.ControlMessage{HopLimit: 254, IfIndex: ifindex}, src: ll, wantErr: "hop limit 254"},
		{name: "no control message", b: validRA, cm: nil, src: ll, wantErr: "control message"},
		{name: "other interface", b: validRA, cm: &ipv6.ControlMessage{HopLimit: 255, IfIndex: 8}, src: ll, wantErr: "ifindex 8"},
		{name: "nonzero code", b: withCode, cm: good, src: ll, wantErr: "code 1"},
		{name: "RA from global address", b: validRA, cm: good, src: netip.MustParseAddr("2001:db8::1"), wantErr: "not link-local"},
		{name: "RA from unspecified", b: validRA, cm: good, src: netip.IPv6Unspecified(), wantErr: "not link-local"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m, err := parseND(tt.b, tt.cm, tt.src, ifindex)
			if tt.wantErr == "" {
				if err != nil {
					t.Fatalf("parseND: %v", err)
				}
				if m == nil {
					t.Fatal("parseND returned no message")
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("parseND error %v, want one containing %q", err, tt.wantErr)
			}
		})
	}
}

func TestOurMessages(t *testing.T) {
	m1 := mac(t, mac1)
	b := marshal(t, ourRA(m1))
	// 16-byte RA header with lifetime 0 plus the 8-byte option, as FRR's own.
	want := []byte{134, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1}
	if string(b) != string(want) {
		t.Errorf("our RA is % x, want % x", b, want)
	}
	b = marshal(t, ourRS(m1))
	want = []byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1}
	if string(b) != string(want) {
		t.Errorf("our RS is % x, want % x", b, want)
	}
	// No Ethernet address, no option (ndp could not encode it).
	if opts := llaOptions(make([]byte, 20)); opts != nil {
		t.Errorf("options for a 20-byte address: %v", opts)
	}
}

// FuzzParseND checks that no input makes parsing panic.
func FuzzParseND(f *testing.F) {
	f.Add([]byte{134, 0, 0, 0, 0, 0, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 1, 1, 2, 0, 0, 0, 0, 1})
	f.Add([]byte{133, 0, 0, 0, 0, 0, 0, 0, 1, 0})
	f.Add([]byte{134, 0, 0, 0, 0, 0, 0, 15, 0, 0, 0, 0, 0, 0, 0, 0, 3, 4, 64})
	cm := &ipv6.ControlMessage{HopLimit: 255, IfIndex: 1}
	src := netip.MustParseAddr("fe80::1%eth0")
	f.Fuzz(func(t *testing.T, b []byte) {
		_, _ = parseND(b, cm, src, 1)
	})
}
