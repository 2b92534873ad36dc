// Package probe floods ICMP echo requests between addresses in the lab's network
// namespaces, from this process, and records every request and reply with its
// time, so that each lost packet can be put on a timeline next to the faults
// that were injected.
//
// Every endpoint (a server's loopback, a pod's address) gets one raw ICMP socket
// opened inside its namespace and bound to its address: requests leave with that
// source address (what `ping -I ADDR` does) and the socket receives the replies
// to it. One goroutine sends a request on every flow each interval; one per
// socket reads replies through the runtime's poller. No process is started per
// flow or per packet.
//
// A request is lost when no reply came within Config.Timeout. The probe's own
// sockets are checked for drops (a full receive buffer would otherwise look like
// loss in the network): Result.SocketDrops.
package probe

import (
	"bufio"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"github.com/fabricd/fabricd/testenv/netns"
)

// Endpoint is one address that sends and answers echo requests.
type Endpoint struct {
	Name   string // for reports: "c1", "c1-pod0"
	Server string // the server it lives on: itself, or a pod's host
	NS     string // its network namespace
	Addr   netip.Addr
}

// Flow is a stream of echo requests from one endpoint to another (indexes into
// Config.Endpoints).
type Flow struct{ From, To int }

// Config is what to probe.
type Config struct {
	Endpoints []Endpoint
	Flows     []Flow
	Interval  time.Duration // between requests of a flow; default 10 ms
	Timeout   time.Duration // a reply later than this is a loss; default 1 s
}

// AllPairs returns a flow for every ordered pair of distinct endpoints among
// idx.
func AllPairs(idx ...int) []Flow {
	var out []Flow
	for _, a := range idx {
		for _, b := range idx {
			if a != b {
				out = append(out, Flow{From: a, To: b})
			}
		}
	}
	return out
}

const (
	icmpEchoReply   = 0
	icmpEchoRequest = 8
	icmpFilter      = 1 // ICMP_FILTER (linux/icmp.h): a bitmask of types the raw socket drops
	magic           = 0x63686f73
	headerLen       = 8  // ICMP echo header
	payloadLen      = 16 // magic, run, flow, sequence
	// rcvBuf is each socket's receive buffer: 1 s of replies at 100 flows x 100/s
	// fits several times over, so the probe never drops what it measures.
	rcvBuf = 4 << 20
)

// Probe is a running flood.
type Probe struct {
	cfg   Config
	run   uint32 // random per probe: replies to another probe's requests are ignored
	start time.Time
	conns []*net.IPConn // per endpoint
	inode []uint64      // per endpoint: the socket's inode, to find it in /proc/net/raw

	mu    sync.Mutex
	flows []flowLog

	stop     chan struct{}
	sendDone chan struct{}
	recvWG   sync.WaitGroup
}

// flowLog holds one flow's requests, indexed by sequence number.
type flowLog struct {
	sent []int64 // nanoseconds after Probe.start
	rtt  []int32 // microseconds; rttNone until the reply arrives, or rttSendFailed
}

const (
	rttNone       = -1
	rttSendFailed = -2
)

// Start opens the sockets and starts the flood.
func Start(cfg Config) (_ *Probe, err error) {
	if cfg.Interval <= 0 {
		cfg.Interval = 10 * time.Millisecond
	}
	if cfg.Timeout <= 0 {
		cfg.Timeout = time.Second
	}
	if len(cfg.Flows) == 0 {
		return nil, errors.New("probe: no flows")
	}
	for _, f := range cfg.Flows {
		if f.From < 0 || f.From >= len(cfg.Endpoints) || f.To < 0 || f.To >= len(cfg.Endpoints) || f.From == f.To {
			return nil, fmt.Errorf("probe: bad flow %+v for %d endpoints", f, len(cfg.Endpoints))
		}
		if !cfg.Endpoints[f.From].Addr.Is4() || !cfg.Endpoints[f.To].Addr.Is4() {
			return nil, fmt.Errorf("probe: flow %+v: only IPv4 endpoints are supported", f)
		}
	}
	var runb [4]byte
	if _, err := rand.Read(runb[:]); err != nil {
		return nil, fmt.Errorf("probe: %w", err)
	}
	p := &Probe{
		cfg:      cfg,
		run:      binary.BigEndian.Uint32(runb[:]),
		conns:    make([]*net.IPConn, len(cfg.Endpoints)),
		inode:    make([]uint64, len(cfg.Endpoints)),
		flows:    make([]flowLog, len(cfg.Flows)),
		stop:     make(chan struct{}),
		sendDone: make(chan struct{}),
	}
	defer func() {
		if err != nil {
			for _, c := range p.conns {
				if c != nil {
					c.Close()
				}
			}
		}
	}()
	for i, ep := range cfg.Endpoints {
		if p.conns[i], p.inode[i], err = listen(ep); err != nil {
			return nil, err
		}
	}
	p.start = time.Now()
	for i := range p.conns {
		p.recvWG.Add(1)
		go p.receive(i)
	}
	go p.send()
	return p, nil
}

// listen opens ep's raw ICMP socket inside its namespace, bound to its address
// and passing only echo replies up.
func listen(ep Endpoint) (*net.IPConn, uint64, error) {
	var conn *net.IPConn
	err := netns.Do(ep.NS, func() error {
		var err error
		conn, err = net.ListenIP("ip4:icmp", &net.IPAddr{IP: ep.Addr.AsSlice()})
		return err
	})
	if err != nil {
		return nil, 0, fmt.Errorf("probe: socket for %s (%v in %s): %w", ep.Name, ep.Addr, ep.NS, err)
	}
	rc, err := conn.SyscallConn()
	if err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("probe: socket for %s: %w", ep.Name, err)
	}
	var inode uint64
	var serr error
	err = rc.Control(func(fd uintptr) {
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, rcvBuf); serr != nil {
			return
		}
		// Every other ICMP type addressed to the endpoint (the other flows'
		// requests, answered by the kernel) never reaches this process.
		if serr = unix.SetsockoptInt(int(fd), unix.SOL_RAW, icmpFilter, int(^uint32(1<<icmpEchoReply))); serr != nil {
			return
		}
		var st unix.Stat_t
		if serr = unix.Fstat(int(fd), &st); serr == nil {
			inode = st.Ino
		}
	})
	if err = errors.Join(err, serr); err != nil {
		conn.Close()
		return nil, 0, fmt.Errorf("probe: socket options for %s: %w", ep.Name, err)
	}
	return conn, inode, nil
}

func (p *Probe) send() {
	defer close(p.sendDone)
	tick := time.NewTicker(p.cfg.Interval)
	defer tick.Stop()
	pkt := make([]byte, headerLen+payloadLen)
	dsts := make([]*net.IPAddr, len(p.cfg.Flows))
	for i, f := range p.cfg.Flows {
		dsts[i] = &net.IPAddr{IP: p.cfg.Endpoints[f.To].Addr.AsSlice()}
	}
	for {
		for i, f := range p.cfg.Flows {
			p.mu.Lock()
			fl := &p.flows[i]
			seq := uint32(len(fl.sent))
			fl.sent = append(fl.sent, int64(time.Since(p.start)))
			fl.rtt = append(fl.rtt, rttNone)
			p.mu.Unlock()
			encodeRequest(pkt, p.run, uint32(i), seq)
			// A send that fails (no route: ENETUNREACH) is a request lost like
			// any other; it is marked, for the record.
			if _, err := p.conns[f.From].WriteToIP(pkt, dsts[i]); err != nil {
				p.mu.Lock()
				fl.rtt[seq] = rttSendFailed
				p.mu.Unlock()
			}
		}
		select {
		case <-p.stop:
			return
		case <-tick.C:
		}
	}
}

func (p *Probe) receive(ep int) {
	defer p.recvWG.Done()
	buf := make([]byte, 1500)
	for {
		n, _, err := p.conns[ep].ReadFrom(buf)
		now := time.Since(p.start)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue // a transient error on a raw socket (ICMP errors queued): keep reading
		}
		run, flow, seq, ok := decodeReply(buf[:n])
		if !ok || run != p.run || int(flow) >= len(p.cfg.Flows) || p.cfg.Flows[flow].From != ep {
			continue
		}
		p.mu.Lock()
		fl := &p.flows[flow]
		if int(seq) < len(fl.sent) && fl.rtt[seq] == rttNone {
			fl.rtt[seq] = int32(min((int64(now)-fl.sent[seq])/int64(time.Microsecond), 1<<31-1))
		}
		p.mu.Unlock()
	}
}

// encodeRequest writes an echo request carrying run, flow and seq into pkt.
func encodeRequest(pkt []byte, run, flow, seq uint32) {
	pkt[0], pkt[1] = icmpEchoRequest, 0
	binary.BigEndian.PutUint16(pkt[2:4], 0)
	binary.BigEndian.PutUint16(pkt[4:6], uint16(flow))
	binary.BigEndian.PutUint16(pkt[6:8], uint16(seq))
	binary.BigEndian.PutUint32(pkt[8:12], magic)
	binary.BigEndian.PutUint32(pkt[12:16], run)
	binary.BigEndian.PutUint32(pkt[16:20], flow)
	binary.BigEndian.PutUint32(pkt[20:24], seq)
	binary.BigEndian.PutUint16(pkt[2:4], checksum(pkt))
}

// decodeReply parses an echo reply (the ICMP message, without IP header) to one
// of our requests.
func decodeReply(b []byte) (run, flow, seq uint32, ok bool) {
	if len(b) < headerLen+payloadLen || b[0] != icmpEchoReply || b[1] != 0 || checksum(b) != 0 {
		return 0, 0, 0, false
	}
	if binary.BigEndian.Uint32(b[8:12]) != magic {
		return 0, 0, 0, false
	}
	return binary.BigEndian.Uint32(b[12:16]), binary.BigEndian.Uint32(b[16:20]), binary.BigEndian.Uint32(b[20:24]), true
}

// checksum is the Internet checksum (RFC 1071); over a message that carries its
// checksum it is 0.
func checksum(b []byte) uint16 {
	var sum uint32
	for i := 0; i+1 < len(b); i += 2 {
		sum += uint32(binary.BigEndian.Uint16(b[i:]))
	}
	if len(b)%2 == 1 {
		sum += uint32(b[len(b)-1]) << 8
	}
	for sum>>16 != 0 {
		sum = sum&0xffff + sum>>16
	}
	return ^uint16(sum)
}

// Stop stops sending, waits Timeout for the last replies, reads the sockets'
// drop counters and closes them.
func (p *Probe) Stop() (*Result, error) {
	close(p.stop)
	<-p.sendDone
	time.Sleep(p.cfg.Timeout)
	r := &Result{
		Start:       p.start,
		Interval:    p.cfg.Interval,
		Timeout:     p.cfg.Timeout,
		Endpoints:   p.cfg.Endpoints,
		FlowList:    p.cfg.Flows,
		SocketDrops: map[string]uint64{},
	}
	var errs []error
	for i, ep := range p.cfg.Endpoints {
		drops, err := socketDrops(ep.NS, p.inode[i])
		if err != nil {
			errs = append(errs, err)
		}
		if drops > 0 {
			r.SocketDrops[ep.Name] = drops
		}
	}
	for _, c := range p.conns {
		c.Close()
	}
	p.recvWG.Wait()
	p.mu.Lock()
	r.flows = p.flows
	p.flows = nil
	p.mu.Unlock()
	return r, errors.Join(errs...)
}

// socketDrops reads the drop counter of the raw socket with the given inode from
// /proc/net/raw of namespace ns.
func socketDrops(ns string, inode uint64) (uint64, error) {
	var text []byte
	err := netns.Do(ns, func() error {
		var err error
		text, err = os.ReadFile("/proc/thread-self/net/raw")
		return err
	})
	if err != nil {
		return 0, fmt.Errorf("probe: reading /proc/net/raw of %s: %w", ns, err)
	}
	return parseRawDrops(string(text), inode)
}

// parseRawDrops finds the line of socket inode in /proc/net/raw's text and
// returns its drops column.
func parseRawDrops(text string, inode uint64) (uint64, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) < 13 || f[9] != strconv.FormatUint(inode, 10) {
			continue
		}
		return strconv.ParseUint(f[12], 10, 64)
	}
	return 0, fmt.Errorf("probe: socket inode %d not in /proc/net/raw", inode)
}

// Result is what a probe recorded.
type Result struct {
	Start     time.Time
	Interval  time.Duration
	Timeout   time.Duration
	Endpoints []Endpoint
	FlowList  []Flow
	// SocketDrops counts, per endpoint name, replies its socket dropped; any
	// makes the losses untrustworthy.
	SocketDrops map[string]uint64

	flows []flowLog
}

// Loss is one request without a reply within the timeout.
type Loss struct {
	Flow int // index into FlowList
	Seq  int
	Sent time.Time
	// SendError: the request never left (no route, typically).
	SendError bool
}

// Losses returns every lost request, by flow, then in sending order.
func (r *Result) Losses() []Loss {
	var out []Loss
	limit := int32(r.Timeout / time.Microsecond)
	for i, fl := range r.flows {
		for seq, rtt := range fl.rtt {
			if rtt >= 0 && rtt <= limit {
				continue
			}
			out = append(out, Loss{Flow: i, Seq: seq, Sent: r.Start.Add(time.Duration(fl.sent[seq])), SendError: rtt == rttSendFailed})
		}
	}
	return out
}

// Sent counts the requests sent in [from, to) over all flows.
func (r *Result) Sent(from, to time.Time) int {
	n := 0
	for _, fl := range r.flows {
		for _, s := range fl.sent {
			if t := r.Start.Add(time.Duration(s)); !t.Before(from) && t.Before(to) {
				n++
			}
		}
	}
	return n
}

// Total is the number of requests sent.
func (r *Result) Total() int {
	n := 0
	for _, fl := range r.flows {
		n += len(fl.sent)
	}
	return n
}

// Describe names a flow: "c1 -> c2-pod0".
func (r *Result) Describe(flow int) string {
	f := r.FlowList[flow]
	return r.Endpoints[f.From].Name + " -> " + r.Endpoints[f.To].Name
}
