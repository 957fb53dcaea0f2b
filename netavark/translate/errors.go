package translate

import "fmt"

// FieldError: a field of netavark's input that moor cannot serve. Field is the JSON path
// below the network or the setup request ("subnets[0].lease_range.start_ip",
// "network_options.static_ips[1]"). Unsupported marks a value that is well-formed but has
// no moor equivalent.
type FieldError struct {
	Field, Value, Reason string
	Unsupported          bool
}

func (e *FieldError) Error() string {
	what := "invalid"
	if e.Unsupported {
		what = "unsupported"
	}
	return fmt.Sprintf("%s %s %q: %s", what, e.Field, e.Value, e.Reason)
}

func invalid(field, value, reason string) error {
	return &FieldError{Field: field, Value: value, Reason: reason}
}

func unsupported(field, value, reason string) error {
	return &FieldError{Field: field, Value: value, Reason: reason, Unsupported: true}
}
