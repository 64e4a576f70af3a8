package engine

import (
	"encoding/hex"
	"fmt"

	"github.com/qsfs/qsfs/zstor/codec"
	"github.com/qsfs/qsfs/zstor/meta"
)

// Failure is an upload that failed and must be retried, stored in the
// metadata store as the official FailureMeta {data_path, key_dir_path,
// should_delete} under /{prefix}/failures/{hex(b2(data_path))}, so it
// survives a daemon restart.
type Failure struct {
	Path   string
	KeyDir string // "" = none
	Delete bool
}

func (e *Engine) failureKey(path string) string {
	st := e.Meta()
	sum := codec.Sum([]byte(path))
	return "/" + st.Prefix + "/failures/" + hex.EncodeToString(sum[:])
}

// SaveFailure records a failed upload of path.
func (e *Engine) SaveFailure(f Failure) error {
	var enc meta.Encoder
	enc.String(f.Path)
	if f.KeyDir == "" {
		enc.OptString(nil)
	} else {
		enc.OptString(&f.KeyDir)
	}
	enc.Bool(f.Delete)
	return e.Meta().Set(e.failureKey(f.Path), enc.Buf)
}

// DeleteFailure removes the failure record of path.
func (e *Engine) DeleteFailure(path string) error {
	return e.Meta().Delete(e.failureKey(path))
}

// Failures lists the recorded failed uploads.
func (e *Engine) Failures() ([]Failure, error) {
	st := e.Meta()
	var keys []string
	if err := st.Keys("/"+st.Prefix+"/failures/", func(k string) error { keys = append(keys, k); return nil }); err != nil {
		return nil, err
	}
	var out []Failure
	for _, k := range keys {
		v, err := st.Get(k)
		if err != nil || v == nil {
			continue
		}
		d := &meta.Decoder{Buf: v}
		f := Failure{Path: d.String()}
		if kd := d.OptString(); kd != nil {
			f.KeyDir = *kd
		}
		f.Delete = d.Bool()
		if d.Err != nil {
			return out, fmt.Errorf("failure record %s: %w", k, d.Err)
		}
		out = append(out, f)
	}
	return out, nil
}
