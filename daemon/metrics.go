package daemon

import (
	"context"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// collector reads fabricd's state when Prometheus scrapes, so the hot
// paths (route updates, FIB writes) only bump atomic counters.
type collector struct {
	d *Daemon

	sessionUp      *prometheus.Desc
	sessionUptime  *prometheus.Desc
	prefixes       *prometheus.Desc
	filtered       *prometheus.Desc
	ribPrefixes    *prometheus.Desc
	fibRoutes      *prometheus.Desc
	fibBlackholes  *prometheus.Desc
	fibOps         *prometheus.Desc
	fibErrors      *prometheus.Desc
	neighborWrites *prometheus.Desc
	rasReceived    *prometheus.Desc
	rasIgnored     *prometheus.Desc
	linkUp         *prometheus.Desc
	forwarding     *prometheus.Desc
	refused        *prometheus.Desc
}

func newCollector(d *Daemon) *collector {
	iface := []string{"interface"}
	return &collector{
		d:              d,
		sessionUp:      prometheus.NewDesc("fabricd_bgp_session_established", "1 if the BGP session on the uplink is Established.", iface, nil),
		sessionUptime:  prometheus.NewDesc("fabricd_bgp_session_uptime_seconds", "Time since the BGP session was established; 0 when it is not.", iface, nil),
		prefixes:       prometheus.NewDesc("fabricd_bgp_prefixes_received", "IPv4 prefixes received from the uplink's peer.", iface, nil),
		filtered:       prometheus.NewDesc("fabricd_bgp_prefixes_filtered_total", "Announcements from the uplink's peer refused by the import filter.", iface, nil),
		ribPrefixes:    prometheus.NewDesc("fabricd_rib_prefixes", "Prefixes with at least one path.", nil, nil),
		fibRoutes:      prometheus.NewDesc("fabricd_fib_routes_installed", "Learned routes fabricd has installed in the kernel.", nil, nil),
		fibBlackholes:  prometheus.NewDesc("fabricd_fib_blackholes_installed", "Blackhole routes fabricd has installed in the kernel.", nil, nil),
		fibOps:         prometheus.NewDesc("fabricd_fib_operations_total", "Kernel route operations attempted.", nil, nil),
		fibErrors:      prometheus.NewDesc("fabricd_fib_errors_total", "Kernel route operations refused.", nil, nil),
		neighborWrites: prometheus.NewDesc("fabricd_fib_neighbor_writes_total", "Writes of the 169.254.0.1 neighbour entries.", nil, nil),
		rasReceived:    prometheus.NewDesc("fabricd_ra_received_total", "Router advertisements received on the uplink.", iface, nil),
		rasIgnored:     prometheus.NewDesc("fabricd_ra_ignored_total", "Router advertisements and ND packets ignored (second router, malformed).", iface, nil),
		linkUp:         prometheus.NewDesc("fabricd_uplink_up", "1 if the uplink has carrier.", iface, nil),
		forwarding:     prometheus.NewDesc("fabricd_uplink_forwarding", "1 if the uplink carries traffic: its ToR has sent its whole table (or restarts with forwarding preserved).", iface, nil),
		refused:        prometheus.NewDesc("fabricd_bgp_prefixes_refused_total", "Announcements taken as withdraws, by reason: as_path_loop, third_party_nexthop.", []string{"interface", "reason"}, nil),
	}
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{c.sessionUp, c.sessionUptime, c.prefixes, c.filtered, c.ribPrefixes, c.fibRoutes,
		c.fibBlackholes, c.fibOps, c.fibErrors, c.neighborWrites, c.rasReceived, c.rasIgnored, c.linkUp, c.forwarding, c.refused} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	peers, _ := c.d.speaker.Peers(ctx)
	now := time.Now()
	for _, u := range c.d.uplinkStatuses() {
		name := u.neighbor.Interface
		ps, ok := peers[name]
		established := ok && ps.State == "Established"
		up, uptime := 0.0, 0.0
		if established {
			up, uptime = 1, now.Sub(ps.Since).Seconds()
		}
		gauge(c.sessionUp, up, name)
		gauge(c.sessionUptime, uptime, name)
		gauge(c.prefixes, float64(c.d.rib.CountFrom(u.id, false)), name)
		counter(c.filtered, float64(c.d.filtered[u.id].Load()), name)
		st := u.link.Status()
		gauge(c.linkUp, b2f(u.machine.Carrier), name)
		gauge(c.forwarding, b2f(u.machine.Phase.Forwards()), name)
		counter(c.refused, float64(c.d.refused[u.id][0].Load()), name, "as_path_loop")
		counter(c.refused, float64(c.d.refused[u.id][1].Load()), name, "third_party_nexthop")
		counter(c.rasReceived, float64(st.RAsReceived), name)
		counter(c.rasIgnored, float64(st.RAsIgnored), name)
	}
	stats := c.d.fib.Stats()
	gauge(c.ribPrefixes, float64(c.d.rib.Len()))
	gauge(c.fibRoutes, float64(stats.Routes.Load()))
	gauge(c.fibBlackholes, float64(stats.Blackholes.Load()))
	counter(c.fibOps, float64(stats.Ops.Load()))
	counter(c.fibErrors, float64(stats.Errors.Load()))
	counter(c.neighborWrites, float64(stats.NeighborWrites.Load()))
}

func b2f(b bool) float64 {
	if b {
		return 1
	}
	return 0
}
