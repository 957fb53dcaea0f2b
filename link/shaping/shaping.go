// Package shaping limits an attachment's bandwidth with tc, for the drivers that honour
// the CNI "bandwidth" capability (moor-bridge, moor-macvlan, moor-overlay).
//
// Limits come from runtimeConfig.bandwidth (what Kubernetes makes of the
// kubernetes.io/ingress-bandwidth and egress-bandwidth annotations), else from the
// reference bandwidth plugin's static fields (ingressRate, ingressBurst, egressRate,
// egressBurst at the top level of the plugin's config), in bits per second and bits. The
// runtime's value wins, as in the reference plugin. Nothing set is no shaping and costs
// nothing: no qdisc, no device, no netlink call.
//
// A device is shaped in both directions from one side of it (Plan):
//   - what the device transmits goes through a tbf root qdisc on it;
//   - what it receives is redirected, by a match-all u32 filter with a mirred action on
//     its ingress qdisc, to an ifb device whose tbf root qdisc does the shaping.
//
// The veth drivers shape the host end of the veth (what it transmits is the container's
// ingress), so the container cannot lift its own limits. moor-macvlan has no host-side
// device per container: its traffic leaves through the shared parent, where shaping one
// container would need a classful qdisc and per-MAC filters on a link other attachments
// (and the host) use. It shapes the macvlan inside the container's netns instead, with the
// ifb there too; a container with CAP_NET_ADMIN could remove its limits, which is the
// price of not touching the parent.
//
// The ifb device of an attachment has a fixed name and an alternative name derived from
// network, container ID and ifname (IfbNames), so DEL finds it without the container's
// netns and GC recognises those of attachments no runtime holds any more.
//
// A value tbf cannot honour is code 7 naming the field: a rate without a burst or a burst
// without a rate, a rate under 8 bit/s (tbf counts bytes), a burst under one MTU (a
// full-size packet would never pass), or a burst whose drain time at the rate does not
// fit tbf's 32-bit tick buffer. The exceptions are 2^31-1 and 2^32-1 bits: kubelet and
// containerd send those as "no burst chosen", and they are clamped to the largest buffer
// tbf can express at the rate.
//
// What it does not do: shape by destination subnet (the reference plugin's
// shapedSubnets/unshapedSubnets), or police instead of queue.
package shaping

import (
	"encoding/json"
	"fmt"
	"math"

	"github.com/vishvananda/netlink"

	"github.com/moornet/moor/plugins"
)

// Limits are the four values of the bandwidth capability, in bits per second and bits.
// Embedded in a driver's config, its fields are the reference bandwidth plugin's static
// ones.
type Limits struct {
	IngressRate  uint64 `json:"ingressRate,omitempty"`
	IngressBurst uint64 `json:"ingressBurst,omitempty"`
	EgressRate   uint64 `json:"egressRate,omitempty"`
	EgressBurst  uint64 `json:"egressBurst,omitempty"`
}

// Rate is one direction's limit: bits per second and a burst in bits. Dir is "ingress"
// or "egress", as seen from the container, to name fields in errors and CHECK.
type Rate struct {
	Rate, Burst uint64
	Dir         string
}

// Plan is what to shape on one device: Out is what it transmits, In what it receives
// (nil: not shaped).
type Plan struct{ Out, In *Rate }

// Empty reports whether the plan shapes nothing.
func (p Plan) Empty() bool { return p.Out == nil && p.In == nil }

// latencyUsec is how long a packet may wait in a tbf queue: it sizes the queue (limit) on
// top of the burst. iproute2's examples use the same order of magnitude.
const latencyUsec = 25000

// kubernetesNoBurst are the bursts kubelet and containerd send when the pod chose none.
var kubernetesNoBurst = map[uint64]bool{math.MaxInt32: true, math.MaxUint32: true}

// Resolve returns the limits in force: runtime (runtimeConfig.bandwidth, may be empty)
// over static. Nil when nothing is limited. Bad values are code 7 naming the field.
func Resolve(runtime json.RawMessage, static Limits) (*Limits, error) {
	l := static
	if len(runtime) > 0 && string(runtime) != "null" {
		l = Limits{}
		if err := json.Unmarshal(runtime, &l); err != nil {
			return nil, plugins.InvalidField("runtimeConfig.bandwidth", string(runtime), err.Error())
		}
	}
	if l == (Limits{}) {
		return nil, nil
	}
	if err := check("ingress", l.IngressRate, l.IngressBurst); err != nil {
		return nil, err
	}
	if err := check("egress", l.EgressRate, l.EgressBurst); err != nil {
		return nil, err
	}
	return &l, nil
}

func check(dir string, rate, burst uint64) error {
	rf, bf := dir+"Rate", dir+"Burst"
	switch {
	case rate == 0 && burst == 0:
		return nil
	case rate == 0:
		return plugins.InvalidField(bf, burst, "a burst needs a rate ("+rf+" is 0)")
	case burst == 0:
		return plugins.InvalidField(bf, burst, fmt.Sprintf("%s %d needs a burst of at least one packet", rf, rate))
	case rate < 8:
		return plugins.InvalidField(rf, rate, "tbf counts bytes: the rate must be at least 8 bit/s")
	}
	if _, err := tbfParams(rate, burst); err != nil {
		return plugins.InvalidField(bf, burst, fmt.Sprintf("at %s %d: %v", rf, rate, err))
	}
	return nil
}

// HostSide is the plan for the host end of a veth: the container's ingress is what the
// host end transmits, its egress what the host end receives.
func (l *Limits) HostSide() Plan {
	if l == nil {
		return Plan{}
	}
	return Plan{Out: rate("ingress", l.IngressRate, l.IngressBurst), In: rate("egress", l.EgressRate, l.EgressBurst)}
}

// ContainerSide is the plan for the container's own interface (macvlan).
func (l *Limits) ContainerSide() Plan {
	if l == nil {
		return Plan{}
	}
	return Plan{Out: rate("egress", l.EgressRate, l.EgressBurst), In: rate("ingress", l.IngressRate, l.IngressBurst)}
}

func rate(dir string, r, b uint64) *Rate {
	if r == 0 {
		return nil
	}
	return &Rate{Rate: r, Burst: b, Dir: dir}
}

// ticksPerUsec is the kernel's packet scheduler clock in ticks per microsecond, the unit
// of tbf's buffer: a tick is 2^PSCHED_SHIFT ns and PSCHED_SHIFT has been 6 since Linux
// 2.6.27, so 1000/64. /proc/net/psched prints the same (1000 ns per µs, 64 ns per tick);
// vishvananda/netlink's TickInUsec reads that file on first use, a file open and read in
// every shaped ADD for a constant. TestTicksPerUsecIsTheKernels checks it against the
// file.
const ticksPerUsec = 1000.0 / 64

// tbfParams computes the tbf qdisc of a limit: rate in bytes per second, the buffer as
// the burst's drain time in ticks, and the queue limit as the burst plus latencyUsec of
// traffic, in bytes.
func tbfParams(rateBits, burstBits uint64) (*netlink.Tbf, error) {
	rateBytes := rateBits / 8
	usec := float64(burstBits/8) * 1e6 / float64(rateBytes)
	maxUsec := float64(math.MaxUint32) / ticksPerUsec
	if usec > maxUsec {
		if !kubernetesNoBurst[burstBits] {
			return nil, fmt.Errorf("the burst drains in %.0f s, past tbf's buffer of %.0f s at this rate", usec/1e6, maxUsec/1e6)
		}
		usec = maxUsec
	}
	if usec < 1 {
		return nil, fmt.Errorf("the burst drains in under a microsecond, below tbf's resolution")
	}
	burstBytes := usec * float64(rateBytes) / 1e6
	limit := burstBytes + float64(rateBytes)*latencyUsec/1e6
	if limit > math.MaxUint32 {
		return nil, fmt.Errorf("burst plus %d ms of queue is past tbf's 32-bit limit", latencyUsec/1000)
	}
	return &netlink.Tbf{
		Rate:   rateBytes,
		Buffer: uint32(usec * ticksPerUsec),
		Limit:  uint32(limit),
	}, nil
}

// burstBytes is the burst a tbf's buffer holds, in bytes.
func burstBytes(t *netlink.Tbf) uint64 {
	return uint64(float64(t.Buffer) / ticksPerUsec * float64(t.Rate) / 1e6)
}

// Conf is embedded in a driver's config: the reference bandwidth plugin's static fields,
// and the limits in force once Load has run.
type Conf struct {
	Limits
	// Shaping is nil when nothing is limited.
	Shaping *Limits `json:"-"`
}

// Load resolves the limits in force from runtimeConfig.bandwidth and the static fields.
func (c *Conf) Load(runtime json.RawMessage) error {
	l, err := Resolve(runtime, c.Limits)
	c.Shaping = l
	return err
}

// Wanted reports whether DEL must look for an ifb: limits are set, or the config declares
// the bandwidth capability (the runtime may not repeat its arguments on DEL).
func (c *Conf) Wanted(capabilities map[string]bool) bool {
	return c.Shaping != nil || capabilities["bandwidth"]
}
