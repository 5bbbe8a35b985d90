package httpio

import "iter"

// Get returns the value of the first field named name (ASCII
// case-insensitive), or "" when there is none.
func (h Header) Get(name string) string {
	for i := range h {
		if EqualFold(h[i].Name, name) {
			return h[i].Value
		}
	}
	return ""
}

// Has reports whether a field named name is present.
func (h Header) Has(name string) bool {
	for i := range h {
		if EqualFold(h[i].Name, name) {
			return true
		}
	}
	return false
}

// Values yields the values of all fields named name, in order.
func (h Header) Values(name string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for i := range h {
			if EqualFold(h[i].Name, name) {
				if !yield(h[i].Value) {
					return
				}
			}
		}
	}
}

// Del removes every field named name in place, keeping the order of the
// others, and returns the shortened slice (like slices.DeleteFunc, the
// vacated tail is zeroed so the strings can be collected).
func (h Header) Del(name string) Header {
	j := 0
	for i := range h {
		if EqualFold(h[i].Name, name) {
			continue
		}
		h[j] = h[i]
		j++
	}
	clear(h[j:])
	return h[:j]
}

// Add appends a field.
func (h Header) Add(name, value string) Header {
	return append(h, Field{Name: name, Value: value})
}

// Clone returns a copy that shares no backing array with h.
func (h Header) Clone() Header {
	if h == nil {
		return nil
	}
	return append(Header(make([]Field, 0, len(h))), h...)
}

// EqualFold reports whether a and b are equal under ASCII-only case
// folding: field names and tokens are ASCII, and Unicode folding
// (strings.EqualFold) would match "K" with the Kelvin sign.
func EqualFold(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		ca, cb := a[i], b[i]
		if ca == cb {
			continue
		}
		if 'A' <= ca && ca <= 'Z' {
			ca += 'a' - 'A'
		}
		if 'A' <= cb && cb <= 'Z' {
			cb += 'a' - 'A'
		}
		if ca != cb {
			return false
		}
	}
	return true
}

// CanonicalName returns name with the first letter and every letter after
// a '-' upper-cased and the others lower-cased ("content-type" ->
// "Content-Type"). It returns name itself, without allocating, when name is
// already canonical or is not a valid token (which is never rewritten).
func CanonicalName(name string) string {
	upper := true
	canon := true
	for i := 0; i < len(name); i++ {
		c := name[i]
		if !isTokenChar(c) {
			return name
		}
		if upper && 'a' <= c && c <= 'z' || !upper && 'A' <= c && c <= 'Z' {
			canon = false
		}
		upper = c == '-'
	}
	if canon {
		return name
	}
	if s := commonName(name); s != "" {
		return s
	}
	b := []byte(name)
	upper = true
	for i, c := range b {
		if upper && 'a' <= c && c <= 'z' {
			b[i] = c - ('a' - 'A')
		} else if !upper && 'A' <= c && c <= 'Z' {
			b[i] = c + ('a' - 'A')
		}
		upper = c == '-'
	}
	return string(b)
}

// HasToken reports whether the comma-separated list (RFC 9110 5.6.1)
// contains token, ASCII case-insensitively. Empty elements and optional
// whitespace around elements are ignored.
func HasToken(list, token string) bool {
	for t := range Tokens(list) {
		if EqualFold(t, token) {
			return true
		}
	}
	return false
}

// Tokens yields the elements of a comma-separated list (RFC 9110 5.6.1),
// OWS-trimmed, skipping empty ones.
func Tokens(list string) iter.Seq[string] {
	return func(yield func(string) bool) {
		for len(list) > 0 {
			var elem string
			if i := indexByteString(list, ','); i >= 0 {
				elem, list = list[:i], list[i+1:]
			} else {
				elem, list = list, ""
			}
			elem = trimOWS(elem)
			if elem == "" {
				continue
			}
			if !yield(elem) {
				return
			}
		}
	}
}

func indexByteString(s string, c byte) int {
	for i := 0; i < len(s); i++ {
		if s[i] == c {
			return i
		}
	}
	return -1
}

// trimOWS removes SP and HTAB at both ends (RFC 9110 5.6.3).
func trimOWS(s string) string {
	for len(s) > 0 && (s[0] == ' ' || s[0] == '\t') {
		s = s[1:]
	}
	for len(s) > 0 && (s[len(s)-1] == ' ' || s[len(s)-1] == '\t') {
		s = s[:len(s)-1]
	}
	return s
}

// ValidFieldName reports whether s is a field-name: a non-empty token
// (RFC 9110 5.1, 5.6.2).
func ValidFieldName(s string) bool {
	if s == "" {
		return false
	}
	for i := 0; i < len(s); i++ {
		if !isTokenChar(s[i]) {
			return false
		}
	}
	return true
}

// ValidFieldValue reports whether s may be sent as a field-value
// (RFC 9110 5.5): VCHAR, SP, HTAB and obs-text only, so no CR, LF, NUL or
// other control character can end the line early or smuggle a field.
// Leading or trailing whitespace is allowed here (the writer emits the
// value as given; the reader trims it).
func ValidFieldValue(s string) bool {
	for i := 0; i < len(s); i++ {
		if !isValueChar(s[i]) {
			return false
		}
	}
	return true
}

// tokenTable marks tchar (RFC 9110 5.6.2):
// "!" / "#" / "$" / "%" / "&" / "'" / "*" / "+" / "-" / "." / "^" / "_" /
// "`" / "|" / "~" / DIGIT / ALPHA.
var tokenTable = func() (t [256]bool) {
	for c := '0'; c <= '9'; c++ {
		t[c] = true
	}
	for c := 'a'; c <= 'z'; c++ {
		t[c] = true
		t[c-'a'+'A'] = true
	}
	for _, c := range "!#$%&'*+-.^_`|~" {
		t[c] = true
	}
	return t
}()

func isTokenChar(c byte) bool { return tokenTable[c] }

// isValueChar: field-vchar / SP / HTAB (RFC 9110 5.5).
func isValueChar(c byte) bool {
	return c == '\t' || c >= 0x20 && c != 0x7f
}
