package backend

import (
	"fmt"
	"testing"

	"github.com/qsfs/qsfs/zstor/config"
)

func groupsOf(sizes ...int) [][]config.Backend {
	var gs [][]config.Backend
	port := 9000
	for _, n := range sizes {
		var g []config.Backend
		for i := 0; i < n; i++ {
			port++
			g = append(g, config.Backend{Address: fmt.Sprintf("127.0.0.1:%d", port)})
		}
		gs = append(gs, g)
	}
	return gs
}

func TestPlacement(t *testing.T) {
	cases := []struct {
		name   string
		p      Placement
		sizes  []int
		ok     bool
		maxPer int // max shards in one group for every pick (0 = no check)
	}{
		{"no redundancy one group", Placement{2, 4, 0, 0}, []int{4}, true, 0},
		{"too few backends", Placement{2, 4, 0, 0}, []int{3}, false, 0},
		{"lose one of three groups", Placement{2, 4, 1, 0}, []int{2, 2, 2}, true, 2},
		{"lose one of two groups impossible", Placement{3, 4, 1, 0}, []int{2, 2}, false, 0},
		{"lose a node per group", Placement{4, 6, 0, 1}, []int{3, 3}, true, 3},
		{"group too small for redundant nodes", Placement{1, 2, 0, 3}, []int{2, 2}, false, 0},
		{"16+4 over 3 groups losing one", Placement{16, 20, 1, 0}, []int{10, 10, 10}, false, 0},
		{"4+4 over 3 groups losing one", Placement{4, 8, 1, 0}, []int{4, 4, 4}, true, 4},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			gs := groupsOf(tc.sizes...)
			for round := 0; round < 20; round++ {
				got, err := tc.p.Choose(gs)
				if !tc.ok {
					if err == nil {
						t.Fatalf("chose %v, want no distribution", got)
					}
					return
				}
				if err != nil {
					t.Fatal(err)
				}
				if len(got) != tc.p.Expected {
					t.Fatalf("chose %d backends, want %d", len(got), tc.p.Expected)
				}
				seen := map[string]bool{}
				perGroup := map[int]int{}
				for _, b := range got {
					if seen[b.Address] {
						t.Fatalf("backend %s chosen twice", b.Address)
					}
					seen[b.Address] = true
					for gi, g := range gs {
						for _, x := range g {
							if x.Address == b.Address {
								perGroup[gi]++
							}
						}
					}
				}
				// Losing the RedundantGroups fullest groups must leave Minimal shards.
				left := tc.p.Expected
				for i := 0; i < tc.p.RedundantGroups; i++ {
					worst, wg := -1, -1
					for g, n := range perGroup {
						if n > worst {
							worst, wg = n, g
						}
					}
					left -= worst
					delete(perGroup, wg)
				}
				for _, n := range perGroup {
					left -= min(n, tc.p.RedundantNodes)
				}
				if left < tc.p.Minimal {
					t.Fatalf("distribution %v leaves %d shards after losses, want >= %d", got, left, tc.p.Minimal)
				}
			}
		})
	}
}
