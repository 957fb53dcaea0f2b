package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"

	"github.com/moornet/moor/control"
	"github.com/moornet/moor/dns/records"
	"github.com/moornet/moor/plugins/netnsid"
)

// reloadAnswer is the body of POST /reload?...&netns=ID: the server's health after the
// reload, or without one when the server serves another namespace (Reloaded false).
type reloadAnswer struct {
	Health
	Reloaded bool `json:"reloaded"`
}

// ReloadSidecar is Sidecar and ReloadRecord in one round trip, the one a plugin's ADD and
// DEL make when the sidecar runs (which is almost always): it tells the server behind
// endpoint that the record key changed, and returns once the server serves the store's
// state of it, but only when the server serves the namespace want. The errors are those
// of Sidecar (ErrNotRunning, *ForeignError: a foreign server does not reload), else the
// reload's own. The server checks want before it reloads anything.
//
// A server of an older moor does not know the netns parameter: it reloads and answers
// without its health, and ReloadSidecar then asks for the health (the old two calls, in
// the other order: that server may have re-read the record before its namespace was
// checked, which changes nothing it serves but that record). A reload that failed is
// checked the same way, so that a foreign or dead server is reported as such and not as
// a failed reload.
func ReloadSidecar(endpoint string, want netnsid.ID, key records.RecordKey) (Health, error) {
	q := url.Values{"network": {key.Network}, "container": {key.ContainerID}, "ifname": {key.IfName}, "netns": {want.String()}}
	c, err := control.NewClient(endpoint, reloadTimeout)
	if err != nil {
		return Health{}, &ControlError{Endpoint: endpoint, Err: err}
	}
	body, err := c.Do(http.MethodPost, "/reload?"+q.Encode())
	var status *control.StatusError
	if err != nil && !errors.As(err, &status) {
		// No answer at all: whatever sent it, no server of ours serves the record.
		return Health{}, fmt.Errorf("%w on %s: %w", ErrNotRunning, endpoint, &ControlError{Endpoint: endpoint, Err: fmt.Errorf("POST /reload: %w", err)})
	}
	var a reloadAnswer
	if err == nil && json.Unmarshal(body, &a) == nil && a.Netns != "" {
		switch {
		case a.Netns != want.String():
			return a.Health, &ForeignError{Endpoint: endpoint, Want: want, Health: a.Health}
		case a.Reloaded:
			return a.Health, nil
		default:
			return a.Health, &ControlError{Endpoint: endpoint, Err: errors.New("POST /reload: the server did not reload")}
		}
	}
	h, herr := Sidecar(endpoint, want)
	if herr != nil {
		return h, herr
	}
	if err != nil {
		return h, &ControlError{Endpoint: endpoint, Err: fmt.Errorf("POST /reload: %w", err)}
	}
	return h, nil
}
