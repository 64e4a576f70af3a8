package driver

import (
	"errors"
	"fmt"
	"sort"
	"strings"
	"syscall"

	"github.com/sirupsen/logrus"
)

// ErrTombstoned is returned when updating a removed volume.
var ErrTombstoned = errors.New("volume is removed and waits for its uploads to finish")

// Update parses opts on top of the spec of base (keys given replace the old
// values; groups replace all groups), validated as Create does.
func (p *Parser) Update(base *Spec, opts map[string]string) (*Spec, error) {
	user, err := normalize(opts, "option")
	if err != nil {
		return nil, err
	}
	s := *base
	s.Groups = append([][]Backend(nil), base.Groups...)
	s.Meta.Backends = append([]Backend(nil), base.Meta.Backends...)
	oldKey := base.Encryption.Key
	metaSet, err := p.apply(&s, user)
	if err != nil {
		return nil, err
	}
	if !metaSet && (s.Meta.Encryption.Key == "" || s.Meta.Encryption.Key == oldKey) {
		s.Meta.Encryption.Key = s.Encryption.Key
	}
	if err := s.Validate(); err != nil {
		return nil, err
	}
	return &s, nil
}

// Update changes a volume's settings: it validates opts like Create,
// persists the new spec and, when the volume's zstor runs, rewrites its
// zstor.toml, updates the namespace's backend rules and sends zstor SIGUSR1.
// It returns what was done, for the user.
func (d *Driver) Update(name string, opts map[string]string) (string, error) {
	if len(opts) == 0 {
		return "", fmt.Errorf("volume %s: no options given: pass -o key=value", name)
	}
	v, err := d.lookup(name)
	if err != nil {
		if id, ok := d.graveyard.IsBuried(name); ok {
			return "", fmt.Errorf("volume %s (id %s): %w: updates are refused; create a new volume", name, id, ErrTombstoned)
		}
		return "", err
	}
	v.op.Lock()
	defer v.op.Unlock()
	if v.removed {
		return "", fmt.Errorf("volume %s: %w", name, ErrTombstoned)
	}
	r, _, _, st := v.snapshot()
	spec, err := d.parser.Update(&r.Spec, opts)
	if err != nil {
		return "", fmt.Errorf("volume %s: %w", name, err)
	}
	next := r
	next.Spec = *spec
	if err := d.store.Save(&next); err != nil {
		return "", err
	}
	v.mu.Lock()
	v.rec.Spec = *spec
	v.mu.Unlock()
	log := d.log.WithFields(logrus.Fields{"volume": name, "id": r.ID})
	var done []string
	done = append(done, "saved")
	if st != nil {
		st.spec = *spec
		switch {
		case st.ZstorRunning() && spec.Archived():
			if err := d.iso.Update(r.ID, spec.BackendAddrs()); err != nil {
				return "", fmt.Errorf("volume %s: saved, but updating the namespace firewall failed: %w", name, err)
			}
			if err := st.writeZstorConfig(); err != nil {
				return "", fmt.Errorf("volume %s: saved, but writing zstor.toml failed: %w", name, err)
			}
			if err := st.zstor.Signal(syscall.SIGUSR1); err != nil {
				return "", fmt.Errorf("volume %s: saved, but reloading zstor failed: %w", name, err)
			}
			done = append(done, "zstor.toml rewritten", "zstor reloaded (SIGUSR1)")
		case st.ZstorRunning() != spec.Archived():
			done = append(done, "adding or removing all backends takes effect at the next mount")
		}
	}
	log.WithField("keys", strings.Join(sortedKeys(opts), ",")).Info("volume updated")
	return strings.Join(done, "; "), nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, NormalizeKey(k))
	}
	sort.Strings(keys)
	return keys
}
