package plugintest

import (
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/containernetworking/plugins/pkg/ns"
	"golang.org/x/sys/unix"
)

// Frame is one Ethernet frame a Capture saw.
type Frame struct {
	VLAN      int    // 802.1q VLAN id, 0 for an untagged frame
	EtherType uint16 // after the VLAN tag
	Outgoing  bool   // sent by this host (PACKET_OUTGOING), not received
	Payload   []byte // after the Ethernet header and any VLAN tag
}

// ARPTarget is the target IPv4 address of an ARP frame, or nil.
func (f Frame) ARPTarget() net.IP {
	if f.EtherType != unix.ETH_P_ARP || len(f.Payload) < 28 {
		return nil
	}
	return net.IP(f.Payload[24:28])
}

// Capture records the frames of one link with a raw packet socket, the way tcpdump does:
// a VLAN tag the driver took out of the frame is read back from the packet's auxiliary
// data, so tagged frames show their VLAN either way.
type Capture struct {
	fd     int
	mu     sync.Mutex
	frames []Frame
	stop   atomic.Bool
	done   chan struct{}
}

// StartCapture opens a capture of ifName in netns. Stop it with Stop.
func StartCapture(netns ns.NetNS, ifName string) (*Capture, error) {
	c := &Capture{fd: -1, done: make(chan struct{})}
	err := netns.Do(func(ns.NetNS) error {
		iface, err := net.InterfaceByName(ifName)
		if err != nil {
			return err
		}
		proto := int(htons(unix.ETH_P_ALL))
		fd, err := unix.Socket(unix.AF_PACKET, unix.SOCK_RAW|unix.SOCK_CLOEXEC, proto)
		if err != nil {
			return fmt.Errorf("packet socket: %w", err)
		}
		c.fd = fd
		if err := unix.SetsockoptInt(fd, unix.SOL_PACKET, unix.PACKET_AUXDATA, 1); err != nil {
			return fmt.Errorf("PACKET_AUXDATA: %w", err)
		}
		tv := unix.NsecToTimeval((200 * time.Millisecond).Nanoseconds())
		if err := unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv); err != nil {
			return err
		}
		return unix.Bind(fd, &unix.SockaddrLinklayer{Protocol: htons(unix.ETH_P_ALL), Ifindex: iface.Index})
	})
	if err != nil {
		if c.fd >= 0 {
			unix.Close(c.fd)
		}
		return nil, fmt.Errorf("capturing on %s: %w", ifName, err)
	}
	go c.loop()
	return c, nil
}

func (c *Capture) loop() {
	defer close(c.done)
	buf := make([]byte, 65536)
	oob := make([]byte, 256)
	for !c.stop.Load() {
		n, oobn, _, from, err := unix.Recvmsg(c.fd, buf, oob, 0)
		if err != nil {
			if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR) {
				continue // the receive timeout lets Stop end the loop
			}
			return
		}
		if n < 14 {
			continue
		}
		f := parseFrame(buf[:n], oob[:oobn])
		if ll, ok := from.(*unix.SockaddrLinklayer); ok {
			f.Outgoing = ll.Pkttype == unix.PACKET_OUTGOING
		}
		c.mu.Lock()
		c.frames = append(c.frames, f)
		c.mu.Unlock()
	}
}

func parseFrame(data, oob []byte) Frame {
	f := Frame{EtherType: binary.BigEndian.Uint16(data[12:14])}
	rest := data[14:]
	if (f.EtherType == unix.ETH_P_8021Q || f.EtherType == unix.ETH_P_8021AD) && len(rest) >= 4 {
		f.VLAN = int(binary.BigEndian.Uint16(rest[0:2]) & 0x0fff)
		f.EtherType = binary.BigEndian.Uint16(rest[2:4])
		rest = rest[4:]
	}
	f.Payload = append([]byte(nil), rest...)
	msgs, err := unix.ParseSocketControlMessage(oob)
	if err != nil {
		return f
	}
	for _, m := range msgs {
		if m.Header.Level != unix.SOL_PACKET || m.Header.Type != unix.PACKET_AUXDATA || len(m.Data) < int(unsafe.Sizeof(unix.TpacketAuxdata{})) {
			continue
		}
		aux := (*unix.TpacketAuxdata)(unsafe.Pointer(&m.Data[0]))
		if aux.Status&unix.TP_STATUS_VLAN_VALID != 0 && f.VLAN == 0 {
			f.VLAN = int(aux.Vlan_tci & 0x0fff)
		}
	}
	return f
}

// Frames returns a copy of the frames seen so far.
func (c *Capture) Frames() []Frame {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Frame(nil), c.frames...)
}

// WaitFor polls until some frame satisfies match or timeout passes; it returns that frame.
func (c *Capture) WaitFor(timeout time.Duration, match func(Frame) bool) (Frame, bool) {
	deadline := time.Now().Add(timeout)
	for {
		for _, f := range c.Frames() {
			if match(f) {
				return f, true
			}
		}
		if time.Now().After(deadline) {
			return Frame{}, false
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the reader (within the socket's receive timeout) and closes the socket.
func (c *Capture) Stop() {
	c.stop.Store(true)
	<-c.done
	unix.Close(c.fd)
}

func htons(v uint16) uint16 { return v<<8 | v>>8 }
