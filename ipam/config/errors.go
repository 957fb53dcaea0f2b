package config

import (
	"fmt"

	"github.com/moornet/moor/plugins/codes"
)

// Error is a config error naming the field path and the value given.
type Error struct {
	Field  string // e.g. "ipam.ranges[0][1].subnet"
	Value  string // the value as given; empty when the field is missing or not a string
	Reason string
	Code   uint // codes.InvalidNetworkConfig, codes.UnsupportedField or codes.DecodingFailure
}

func (e *Error) Error() string {
	if e.Value == "" {
		return fmt.Sprintf("%s: %s", e.Field, e.Reason)
	}
	return fmt.Sprintf("%s %q: %s", e.Field, e.Value, e.Reason)
}

// CNICode reports the code the error surfaces as.
func (e *Error) CNICode() uint { return e.Code }

func invalid(field, value, format string, args ...any) *Error {
	return &Error{Field: field, Value: value, Reason: fmt.Sprintf(format, args...), Code: codes.InvalidNetworkConfig}
}

func unsupported(field, value, format string, args ...any) *Error {
	return &Error{Field: field, Value: value, Reason: fmt.Sprintf(format, args...), Code: codes.UnsupportedField}
}
