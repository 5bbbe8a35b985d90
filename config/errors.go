package config

import "strings"

// FieldError is one configuration problem. Load returns one FieldError, or
// several joined with errors.Join; use errors.As (or errors.AsType) to get at
// them, and walk the Unwrap() []error of the joined error to list them all.
type FieldError struct {
	// File is the configuration file the problem was found in or applies to
	// ("" when loading bytes without a name).
	File string
	// Env is the environment variable that supplied the offending value, when
	// the value came from the environment rather than the file.
	Env string
	// Field is the key, "section.field" (e.g. "general.http_bind_address"),
	// or just "section" for section-level problems, or "" for problems with
	// the file as a whole (syntax errors) or with an environment variable that
	// maps to no field.
	Field string
	// Problem says what is wrong, in words for the operator.
	Problem string
}

// Error formats e as "<file>: <field>: <problem>", naming the environment
// variable instead of (or next to) the file when the value came from there.
func (e *FieldError) Error() string {
	var b strings.Builder
	switch {
	case e.Env != "":
		b.WriteString("environment variable ")
		b.WriteString(e.Env)
		if e.Field != "" {
			b.WriteString(" (")
			b.WriteString(e.Field)
			b.WriteString(")")
		}
	case e.File != "" && e.Field != "":
		b.WriteString(e.File)
		b.WriteString(": ")
		b.WriteString(e.Field)
	case e.File != "":
		b.WriteString(e.File)
	case e.Field != "":
		b.WriteString(e.Field)
	}
	if b.Len() > 0 {
		b.WriteString(": ")
	}
	b.WriteString(e.Problem)
	return b.String()
}

// FieldErrors flattens err (a *FieldError or a tree of errors.Join'ed ones)
// into the list of *FieldError it contains, in order. Errors that are not
// *FieldError are skipped.
func FieldErrors(err error) []*FieldError {
	var out []*FieldError
	var walk func(error)
	walk = func(err error) {
		switch e := err.(type) {
		case nil:
		case *FieldError:
			out = append(out, e)
		case interface{ Unwrap() []error }:
			for _, x := range e.Unwrap() {
				walk(x)
			}
		case interface{ Unwrap() error }:
			walk(e.Unwrap())
		}
	}
	walk(err)
	return out
}
