package netns

import (
	"fmt"
	"math/big"
	"net/netip"
	"strconv"
)

// pool splits the two address pools into numbered slots: slot i is the i-th
// /30 of the IPv4 pool and the i-th /64 (or /126 for pools longer than /62)
// of the IPv6 pool. A volume gets one slot; the host side uses the first
// host address of both, the namespace the second.
type pool struct {
	v4, v6     netip.Prefix
	len4, len6 int // slot prefix lengths
	slots      uint64
}

// maxSlots bounds the search for a free slot.
const maxSlots = 1 << 20

func newPool(v4, v6 netip.Prefix) (pool, error) {
	if !v4.IsValid() {
		v4 = DefaultSubnet4
	}
	if !v6.IsValid() {
		v6 = DefaultSubnet6
	}
	v4, v6 = v4.Masked(), v6.Masked()
	if !v4.Addr().Is4() || v4.Bits() > 30 {
		return pool{}, fmt.Errorf("subnet4 %s: want an IPv4 prefix of /30 or shorter", v4)
	}
	if !v6.Addr().Is6() || v6.Addr().Is4In6() || v6.Bits() > 126 {
		return pool{}, fmt.Errorf("subnet6 %s: want an IPv6 prefix of /126 or shorter", v6)
	}
	p := pool{v4: v4, v6: v6, len4: 30, len6: 64}
	if v6.Bits() > 62 {
		p.len6 = 126
	}
	p.slots = min(slotCount(p.len4-v4.Bits()), slotCount(p.len6-v6.Bits()), maxSlots)
	return p, nil
}

func slotCount(bits int) uint64 {
	if bits >= 20 {
		return maxSlots
	}
	return 1 << bits
}

// addrs returns host and namespace addresses of slot i.
func (p pool) addrs(i uint64) (host4, ns4, host6, ns6 netip.Addr) {
	base4 := addAddr(p.v4.Addr(), i, 32-p.len4)
	base6 := addAddr(p.v6.Addr(), i, 128-p.len6)
	return base4.Next(), base4.Next().Next(), base6.Next(), base6.Next().Next()
}

// slotOf returns the slot whose IPv4 block holds a, if a is in the pool.
func (p pool) slotOf(a netip.Addr) (uint64, bool) {
	if !p.v4.Contains(a) {
		return 0, false
	}
	off := new(big.Int).Sub(new(big.Int).SetBytes(a.AsSlice()), new(big.Int).SetBytes(p.v4.Addr().AsSlice()))
	i := off.Rsh(off, uint(32-p.len4)).Uint64()
	return i, i < p.slots
}

// addAddr returns a + i<<shift.
func addAddr(a netip.Addr, i uint64, shift int) netip.Addr {
	n := new(big.Int).SetBytes(a.AsSlice())
	n.Add(n, new(big.Int).Lsh(new(big.Int).SetUint64(i), uint(shift)))
	b := n.FillBytes(make([]byte, len(a.AsSlice())))
	out, _ := netip.AddrFromSlice(b)
	return out
}

// pick returns the slot for id: the id's number modulo the slot count, or
// the next free one after it when used holds that slot (linear probing, so
// the choice is deterministic for a given set of used slots).
func (p pool) pick(id string, used map[uint64]bool) (uint64, error) {
	n, err := strconv.ParseUint(id, 16, 64)
	if err != nil {
		return 0, fmt.Errorf("volume id %q: %w", id, err)
	}
	start := n % p.slots
	for k := uint64(0); k < p.slots; k++ {
		i := (start + k) % p.slots
		if !used[i] {
			return i, nil
		}
	}
	return 0, fmt.Errorf("address pools %s and %s are full (%d volumes)", p.v4, p.v6, p.slots)
}
