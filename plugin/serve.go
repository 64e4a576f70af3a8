package plugin

import (
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/docker/go-plugins-helpers/sdk"
	"github.com/docker/go-plugins-helpers/volume"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/sirupsen/logrus"

	"github.com/qsfs/qsfs/driver"
)

// Extra endpoints on the plugin socket, next to the VolumeDriver ones.
const (
	UpdatePath = "/Qsfs.Update"
	StatusPath = "/Qsfs.Status"
	ForgetPath = "/Qsfs.ForgetMounts"
)

// ForgetResponse is the answer of /Qsfs.ForgetMounts (request: StatusRequest).
type ForgetResponse struct {
	Dropped int    `json:",omitempty"`
	Err     string `json:",omitempty"`
}

// UpdateRequest is the body of /Qsfs.Update.
type UpdateRequest struct {
	Name string
	Opts map[string]string
}

// UpdateResponse is the answer of /Qsfs.Update.
type UpdateResponse struct {
	Message string `json:",omitempty"`
	Err     string `json:",omitempty"`
}

// StatusRequest is the body of /Qsfs.Status.
type StatusRequest struct{ Name string }

// StatusResponse is the answer of /Qsfs.Status.
type StatusResponse struct {
	Status *driver.Status `json:",omitempty"`
	Err    string         `json:",omitempty"`
}

// NewHandler returns the VolumeDriver handler of d with the qsfs endpoints.
func NewHandler(d *driver.Driver) *volume.Handler {
	h := volume.NewHandler(d)
	h.HandleFunc(UpdatePath, func(w http.ResponseWriter, r *http.Request) {
		var req UpdateRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			sdk.EncodeResponse(w, UpdateResponse{Err: "decode request: " + err.Error()}, true)
			return
		}
		msg, err := d.Update(req.Name, req.Opts)
		if err != nil {
			sdk.EncodeResponse(w, UpdateResponse{Err: err.Error()}, true)
			return
		}
		sdk.EncodeResponse(w, UpdateResponse{Message: msg}, false)
	})
	h.HandleFunc(StatusPath, func(w http.ResponseWriter, r *http.Request) {
		var req StatusRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			sdk.EncodeResponse(w, StatusResponse{Err: "decode request: " + err.Error()}, true)
			return
		}
		st, err := d.VolumeStatus(req.Name)
		if err != nil {
			sdk.EncodeResponse(w, StatusResponse{Err: err.Error()}, true)
			return
		}
		sdk.EncodeResponse(w, StatusResponse{Status: st}, false)
	})
	h.HandleFunc(ForgetPath, func(w http.ResponseWriter, r *http.Request) {
		var req StatusRequest
		if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
			sdk.EncodeResponse(w, ForgetResponse{Err: "decode request: " + err.Error()}, true)
			return
		}
		n, err := d.ForgetMounts(req.Name)
		if err != nil {
			sdk.EncodeResponse(w, ForgetResponse{Dropped: n, Err: err.Error()}, true)
			return
		}
		sdk.EncodeResponse(w, ForgetResponse{Dropped: n}, false)
	})
	return h
}

// Listen opens the unix socket at path (mode 0660), replacing a stale one
// that nobody answers on.
func Listen(path string) (*net.UnixListener, error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return nil, fmt.Errorf("create socket directory for %s: %w", path, err)
	}
	if _, err := os.Stat(path); err == nil {
		if c, err := net.DialTimeout("unix", path, time.Second); err == nil {
			c.Close()
			return nil, fmt.Errorf("socket %s: another plugin answers on it: stop it first", path)
		}
		if err := os.Remove(path); err != nil {
			return nil, fmt.Errorf("remove stale socket %s: %w", path, err)
		}
	}
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("listen on %s: %w", path, err)
	}
	l.SetUnlinkOnClose(true)
	if err := os.Chmod(path, 0o660); err != nil {
		l.Close()
		return nil, fmt.Errorf("chmod %s: %w", path, err)
	}
	return l, nil
}

// MetricsHandler serves the driver's collectors plus every volume's zstor
// metrics.
func MetricsHandler(d *driver.Driver) http.Handler {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	for _, c := range d.Collectors() {
		reg.MustRegister(c)
	}
	g := prometheus.Gatherers{reg, &driver.ZstorGatherer{D: d, Timeout: 3 * time.Second}}
	return promhttp.HandlerFor(g, promhttp.HandlerOpts{ErrorHandling: promhttp.ContinueOnError})
}

// serveMetrics runs the metrics endpoint until it fails; errors are logged.
func serveMetrics(addr string, d *driver.Driver, log *logrus.Logger) *http.Server {
	mux := http.NewServeMux()
	mux.Handle("/metrics", MetricsHandler(d))
	srv := &http.Server{Addr: addr, Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.ListenAndServe(); err != nil && !errors.Is(err, http.ErrServerClosed) {
			log.WithError(err).WithField("addr", addr).Error("metrics endpoint failed")
		}
	}()
	return srv
}
