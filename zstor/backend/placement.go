package backend

import (
	"errors"
	"math/rand/v2"
	"sort"

	"github.com/qsfs/qsfs/zstor/config"
)

// ErrNoDistribution is returned when no shard distribution satisfies the
// redundancy settings with the available backends.
var ErrNoDistribution = errors.New("could not find any viable backend distribution to satisfy the redundancy requirement")

// Placement is the redundancy policy of Config.shard_stores.
type Placement struct {
	Minimal, Expected int
	RedundantGroups   int
	RedundantNodes    int
}

// PlacementOf returns the policy of a config.
func PlacementOf(c *config.Config) Placement {
	return Placement{Minimal: c.MinimalShards, Expected: c.ExpectedShards, RedundantGroups: c.RedundantGroups, RedundantNodes: c.RedundantNodes}
}

// distribution is how many shards go to each (filtered) group.
type distribution struct {
	groups []int // indexes into the filtered group list
	counts []int
	weight float64
}

// Distributions lists every valid assignment of Expected shards to groups,
// following the official algorithm: groups with fewer than RedundantNodes
// backends are dropped; a subset of groups is a candidate when its size is
// at most max_groups, more than RedundantGroups and its capacity minus
// RedundantNodes per group reaches Minimal; each way to spread Expected
// shards over a candidate (at most a group's size per group) is valid when,
// after dropping the RedundantGroups largest groups, the rest minus
// RedundantNodes each still hold Minimal shards. Each distribution carries
// the number of orderings the official backtracking enumerates it with, so
// a weighted random pick has the official odds.
func (p Placement) distributions(sizes []int) []distribution {
	disposable := p.Expected - p.Minimal
	maxGroups := len(sizes)
	if p.RedundantNodes > 0 {
		maxGroups = disposable/p.RedundantNodes + p.RedundantGroups
	}
	var idx []int
	for i, s := range sizes {
		if s >= p.RedundantNodes {
			idx = append(idx, i)
		}
	}
	var out []distribution
	n := len(idx)
	if n == 0 || n > 20 {
		return nil
	}
	for mask := 1; mask < 1<<n; mask++ {
		var cand []int
		capacity := 0
		for j := 0; j < n; j++ {
			if mask&(1<<j) != 0 {
				cand = append(cand, idx[j])
				capacity += sizes[idx[j]] - p.RedundantNodes
			}
		}
		if len(cand) > maxGroups || len(cand) <= p.RedundantGroups || capacity < p.Minimal {
			continue
		}
		counts := make([]int, len(cand))
		var rec func(k, left int)
		rec = func(k, left int) {
			if k == len(cand) {
				if left == 0 && p.valid(counts) {
					out = append(out, distribution{groups: cand, counts: append([]int(nil), counts...), weight: multinomial(counts)})
				}
				return
			}
			for c := 0; c <= min(left, sizes[cand[k]]); c++ {
				counts[k] = c
				rec(k+1, left-c)
			}
			counts[k] = 0
		}
		rec(0, p.Expected)
	}
	return out
}

func (p Placement) valid(counts []int) bool {
	used := append([]int(nil), counts...)
	sort.Sort(sort.Reverse(sort.IntSlice(used)))
	sum := 0
	for _, u := range used[min(p.RedundantGroups, len(used)):] {
		sum += u - p.RedundantNodes // official usize arithmetic wraps; a negative total is invalid here
	}
	return sum >= p.Minimal
}

func multinomial(counts []int) float64 {
	total, w := 0, 1.0
	for _, c := range counts {
		for i := 1; i <= c; i++ {
			total++
			w = w * float64(total) / float64(i)
		}
	}
	return w
}

// Choose picks Expected backends from groups (already without the backends
// the caller excluded) according to the policy, at random among the valid
// distributions, backends at random within a group.
func (p Placement) Choose(groups [][]config.Backend) ([]config.Backend, error) {
	sizes := make([]int, len(groups))
	for i, g := range groups {
		sizes[i] = len(g)
	}
	ds := p.distributions(sizes)
	if len(ds) == 0 {
		return nil, ErrNoDistribution
	}
	total := 0.0
	for _, d := range ds {
		total += d.weight
	}
	r := rand.Float64() * total
	d := ds[len(ds)-1]
	for _, x := range ds {
		if r < x.weight {
			d = x
			break
		}
		r -= x.weight
	}
	var out []config.Backend
	for i, g := range d.groups {
		perm := rand.Perm(len(groups[g]))
		for _, j := range perm[:d.counts[i]] {
			out = append(out, groups[g][j])
		}
	}
	return out, nil
}

// Feasible reports whether any distribution exists for the config's groups.
func (p Placement) Feasible(c *config.Config) bool {
	sizes := make([]int, len(c.Groups))
	for i, g := range c.Groups {
		sizes[i] = len(g.Backends)
	}
	return len(p.distributions(sizes)) > 0
}
