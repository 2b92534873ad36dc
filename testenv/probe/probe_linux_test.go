package probe

import (
	"testing"
	"time"
)

func TestEchoRoundTrip(t *testing.T) {
	pkt := make([]byte, headerLen+payloadLen)
	encodeRequest(pkt, 0xdeadbeef, 7, 70000)
	if checksum(pkt) != 0 {
		t.Fatalf("request checksum does not verify: %x", pkt)
	}
	if _, _, _, ok := decodeReply(pkt); ok {
		t.Fatal("a request decoded as a reply")
	}
	// The peer's kernel answers with type 0 and fixes the checksum up.
	reply := append([]byte(nil), pkt...)
	reply[0] = icmpEchoReply
	reply[2], reply[3] = 0, 0
	c := checksum(reply)
	reply[2], reply[3] = byte(c>>8), byte(c)
	run, flow, seq, ok := decodeReply(reply)
	if !ok || run != 0xdeadbeef || flow != 7 || seq != 70000 {
		t.Fatalf("decodeReply = %x %d %d %v", run, flow, seq, ok)
	}
	reply[20] ^= 1
	if _, _, _, ok := decodeReply(reply); ok {
		t.Error("a corrupted reply decoded")
	}
	if _, _, _, ok := decodeReply(reply[:10]); ok {
		t.Error("a short reply decoded")
	}
}

func TestParseRawDrops(t *testing.T) {
	text := `  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 190: 0101A8C0:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 143023 2 00000000535319f0 0
 191: 0202A8C0:0001 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 143024 2 00000000535319f8 17
`
	if d, err := parseRawDrops(text, 143024); err != nil || d != 17 {
		t.Errorf("parseRawDrops(143024) = %d, %v; want 17", d, err)
	}
	if d, err := parseRawDrops(text, 143023); err != nil || d != 0 {
		t.Errorf("parseRawDrops(143023) = %d, %v; want 0", d, err)
	}
	if _, err := parseRawDrops(text, 1430); err == nil {
		t.Error("an unknown inode was found")
	}
}

func TestResultLosses(t *testing.T) {
	start := time.Unix(5000, 0)
	r := &Result{
		Start:     start,
		Timeout:   time.Second,
		Endpoints: []Endpoint{{Name: "a"}, {Name: "b"}},
		FlowList:  []Flow{{0, 1}, {1, 0}},
		flows: []flowLog{
			{sent: []int64{0, 10e6, 20e6}, rtt: []int32{300, rttNone, 1_500_000}}, // lost, then late
			{sent: []int64{0, 10e6}, rtt: []int32{rttSendFailed, 200}},
		},
	}
	l := r.Losses()
	if len(l) != 3 {
		t.Fatalf("Losses() = %+v, want 3", l)
	}
	if l[0].Flow != 0 || l[0].Seq != 1 || !l[0].Sent.Equal(start.Add(10*time.Millisecond)) || l[0].SendError {
		t.Errorf("first loss %+v", l[0])
	}
	if l[1].Seq != 2 {
		t.Errorf("a reply after the timeout is a loss: %+v", l[1])
	}
	if l[2].Flow != 1 || !l[2].SendError {
		t.Errorf("send failure %+v", l[2])
	}
	if got := r.Sent(start, start.Add(15*time.Millisecond)); got != 4 {
		t.Errorf("Sent in the first 15 ms = %d, want 4", got)
	}
	if r.Total() != 5 || r.Describe(1) != "b -> a" {
		t.Errorf("Total %d, Describe %q", r.Total(), r.Describe(1))
	}
}
