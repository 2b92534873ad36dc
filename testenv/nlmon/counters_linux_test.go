package nlmon

import (
	"encoding/binary"
	"testing"

	"golang.org/x/sys/unix"
)

func TestParseCounterObj(t *testing.T) {
	be64 := func(v uint64) []byte { return binary.BigEndian.AppendUint64(nil, v) }
	data := append(rtattr(unix.NFTA_COUNTER_BYTES, be64(9000)), rtattr(unix.NFTA_COUNTER_PACKETS, be64(123))...)
	msg := []byte{unix.NFPROTO_INET, 0, 0, 0}
	msg = append(msg, rtattr(unix.NFTA_OBJ_TABLE, []byte("chaos\x00"))...)
	msg = append(msg, rtattr(unix.NFTA_OBJ_NAME, []byte("in_swp1\x00"))...)
	msg = append(msg, rtattr(unix.NFTA_OBJ_TYPE, binary.BigEndian.AppendUint32(nil, unix.NFT_OBJECT_COUNTER))...)
	msg = append(msg, rtattr(unix.NFTA_OBJ_DATA|unix.NLA_F_NESTED, data)...)
	table, name, packets, ok := parseCounterObj(msg)
	if !ok || table != "chaos" || name != "in_swp1" || packets != 123 {
		t.Errorf("parseCounterObj = %q %q %d %v", table, name, packets, ok)
	}
	for i := range msg {
		if _, _, _, ok := parseCounterObj(msg[:i]); ok && i < len(msg)-len(data) {
			t.Errorf("a message cut at %d bytes parsed", i)
		}
	}
}
