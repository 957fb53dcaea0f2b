package fineopts

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/moornet/moor/plugins/codes"
)

func TestRefuseNamesFieldValueAndDriver(t *testing.T) {
	var f Fields
	if err := json.Unmarshal([]byte(`{"icc":false,"hostBindingIPv6":"::1","snatAddress":"192.0.2.1"}`), &f); err != nil {
		t.Fatal(err)
	}
	if !f.NoICC() {
		t.Error("icc false not seen")
	}
	if err := f.Refuse("x", map[string]string{GatewayModeIPv4: "no gateway"}); err != nil {
		t.Errorf("a field that is not set was refused: %v", err)
	}
	err := f.Refuse("x", map[string]string{HostBindingIPv6: "no ports", SNATAddress: "no masquerade"})
	var coded codes.Coded
	if !errors.As(err, &coded) || coded.CNICode() != codes.InvalidNetworkConfig ||
		!strings.Contains(err.Error(), `hostBindingIPv6 "::1": does not apply to driver x: no ports`) {
		t.Errorf("got %v", err)
	}
	if (Fields{}).NoICC() {
		t.Error("icc is on by default")
	}
}
