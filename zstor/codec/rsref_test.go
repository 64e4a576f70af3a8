package codec

// An independent, slow Reed-Solomon construction used only to cross-check
// klauspost/reedsolomon against the matrix reed-solomon-erasure uses:
// GF(2^8) with polynomial 0x11d, a (k+m)×k Vandermonde matrix v[r][c] = r^c
// made systematic by multiplying with the inverse of its top k×k square.

func gfMul(a, b byte) byte {
	var p byte
	for b > 0 {
		if b&1 != 0 {
			p ^= a
		}
		hi := a & 0x80
		a <<= 1
		if hi != 0 {
			a ^= 0x1d
		}
		b >>= 1
	}
	return p
}

func gfPow(a byte, n int) byte {
	r := byte(1)
	for i := 0; i < n; i++ {
		r = gfMul(r, a)
	}
	return r
}

func gfInv(a byte) byte {
	for b := 1; b < 256; b++ {
		if gfMul(a, byte(b)) == 1 {
			return byte(b)
		}
	}
	panic("no inverse")
}

func invert(m [][]byte) [][]byte {
	n := len(m)
	a := make([][]byte, n)
	for i := range m {
		a[i] = make([]byte, 2*n)
		copy(a[i], m[i])
		a[i][n+i] = 1
	}
	for c := 0; c < n; c++ {
		p := c
		for a[p][c] == 0 {
			p++
		}
		a[c], a[p] = a[p], a[c]
		inv := gfInv(a[c][c])
		for j := range a[c] {
			a[c][j] = gfMul(a[c][j], inv)
		}
		for r := 0; r < n; r++ {
			if r != c && a[r][c] != 0 {
				f := a[r][c]
				for j := range a[r] {
					a[r][j] ^= gfMul(f, a[c][j])
				}
			}
		}
	}
	out := make([][]byte, n)
	for i := range a {
		out[i] = a[i][n:]
	}
	return out
}

func refEncode(data []byte, k, m int) [][]byte {
	buf := Pad(append([]byte{}, data...), k)
	size := len(buf) / k
	vand := make([][]byte, k+m)
	for r := range vand {
		vand[r] = make([]byte, k)
		for c := 0; c < k; c++ {
			vand[r][c] = gfPow(byte(r), c)
		}
	}
	topInv := invert(vand[:k])
	shards := make([][]byte, k+m)
	for i := 0; i < k; i++ {
		shards[i] = buf[i*size : (i+1)*size]
	}
	for p := 0; p < m; p++ {
		row := make([]byte, k) // vand[k+p] * topInv
		for c := 0; c < k; c++ {
			for j := 0; j < k; j++ {
				row[c] ^= gfMul(vand[k+p][j], topInv[j][c])
			}
		}
		out := make([]byte, size)
		for c := 0; c < k; c++ {
			for b := 0; b < size; b++ {
				out[b] ^= gfMul(row[c], shards[c][b])
			}
		}
		shards[k+p] = out
	}
	return shards
}
