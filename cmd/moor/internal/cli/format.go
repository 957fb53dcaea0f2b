package cli

import (
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"text/template"
)

// Output formats of --format besides Go templates.
const (
	formatTable  = "table"
	formatJSON   = "json"
	tablePrefix  = "table "
	jsonIndent   = "    "
	tabMinWidth  = 0
	tabWidth     = 4
	tabPadding   = 3
	tabPadChar   = ' '
	truncateMark = "…"
)

// templateFuncs are the functions --format templates may use, as Docker's.
var templateFuncs = template.FuncMap{
	"json": func(v any) (string, error) {
		b, err := json.Marshal(v)
		return string(b), err
	},
	"join":  strings.Join,
	"upper": strings.ToUpper,
	"lower": strings.ToLower,
	"truncate": func(s string, n int) string {
		if n < 0 || len([]rune(s)) <= n {
			return s
		}
		return string([]rune(s)[:n]) + truncateMark
	},
	"title": func(s string) string {
		if s == "" {
			return s
		}
		return strings.ToUpper(s[:1]) + s[1:]
	},
}

// parseTemplate compiles a --format template, a usage error when it does not parse.
func parseTemplate(text string) (*template.Template, error) {
	t, err := template.New("format").Funcs(templateFuncs).Option("missingkey=error").Parse(text)
	if err != nil {
		return nil, usagef("--format: %v", err)
	}
	return t, nil
}

// newTable returns a tab-aligned writer.
func newTable(w io.Writer) *tabwriter.Writer {
	return tabwriter.NewWriter(w, tabMinWidth, tabWidth, tabPadding, tabPadChar, 0)
}

// writeTemplate renders t for each item, one line each; with header (a map from field to
// column title) the lines are a table under a header line.
func writeTemplate(w io.Writer, t *template.Template, header map[string]string, items []any) error {
	out := w
	var tw *tabwriter.Writer
	if header != nil {
		tw = newTable(w)
		out = tw
		var b bytes.Buffer
		if err := t.Execute(&b, header); err != nil {
			return usagef("--format: %v", err)
		}
		fmt.Fprintln(out, b.String())
	}
	for _, it := range items {
		var b bytes.Buffer
		if err := t.Execute(&b, it); err != nil {
			return usagef("--format: %v", err)
		}
		fmt.Fprintln(out, b.String())
	}
	if tw != nil {
		return tw.Flush()
	}
	return nil
}

// writeJSONLines writes one compact JSON object per item (Docker's --format json).
func writeJSONLines(w io.Writer, items []any) error {
	enc := json.NewEncoder(w)
	for _, it := range items {
		if err := enc.Encode(it); err != nil {
			return err
		}
	}
	return nil
}

// writeJSONIndent writes v as indented JSON (inspect's array, doctor's report).
func writeJSONIndent(w io.Writer, v any) error {
	b, err := json.MarshalIndent(v, "", jsonIndent)
	if err != nil {
		return err
	}
	_, err = fmt.Fprintln(w, string(b))
	return err
}
