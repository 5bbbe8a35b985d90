package config

import (
	"fmt"
	"math"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"
)

// field describes one configuration key, derived once from the koanf tags of
// [Config] so that the file check, the environment mapping, the defaults layer
// and the documentation test share a single source of truth.
type field struct {
	Section string       // "general"
	Name    string       // "peer_hostname"
	Key     string       // "general.peer_hostname"
	Env     string       // "PTPROXY_GENERAL__PEER_HOSTNAME"
	Type    reflect.Type // Go type of the struct field
	index   []int        // reflect index path from Config
}

// sections lists the section names in declaration order.
var sections []string

// schema lists every key in declaration order.
var schema []field

// schemaByKey indexes schema by Key.
var schemaByKey map[string]*field

func init() {
	ct := reflect.TypeFor[Config]()
	schemaByKey = make(map[string]*field)
	for i := range ct.NumField() {
		sf := ct.Field(i)
		sec := sf.Tag.Get("koanf")
		if sec == "" || sec == "-" || !sf.IsExported() {
			continue
		}
		sections = append(sections, sec)
		for j := range sf.Type.NumField() {
			ff := sf.Type.Field(j)
			name := ff.Tag.Get("koanf")
			if name == "" {
				continue
			}
			schema = append(schema, field{
				Section: sec,
				Name:    name,
				Key:     sec + "." + name,
				Env:     envPrefix + strings.ToUpper(sec) + "__" + strings.ToUpper(name),
				Type:    ff.Type,
				index:   []int{i, j},
			})
		}
	}
	for i := range schema {
		schemaByKey[schema[i].Key] = &schema[i]
	}
}

// isSection reports whether name is a known section.
func isSection(name string) bool {
	for _, s := range sections {
		if s == name {
			return true
		}
	}
	return false
}

// value returns the struct field of c that f describes.
func (f *field) value(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(f.index)
}

var millisType = reflect.TypeFor[Millis]()

var stringsType = reflect.TypeFor[[]string]()

// typeName describes f's type for error messages and the docs.
func (f *field) typeName() string {
	if f.Type == millisType {
		return "integer (milliseconds)"
	}
	if f.Type == stringsType {
		return "array of strings"
	}
	switch f.Type.Kind() {
	case reflect.Int, reflect.Int64:
		return "integer"
	case reflect.Float64:
		return "float"
	case reflect.Bool:
		return "boolean"
	case reflect.String:
		return "string"
	}
	panic("config: unsupported field type " + f.Type.String())
}

// describe names the type of a raw parsed value and shows it, for "got ..."
// in error messages.
func describe(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return fmt.Sprintf("string %q", x)
	case bool:
		return fmt.Sprintf("boolean %t", x)
	case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
		return fmt.Sprintf("integer %v", x)
	case float32, float64:
		return fmt.Sprintf("float %v", x)
	case map[string]any:
		return "table"
	case []any:
		return "array"
	case time.Time:
		return "datetime"
	}
	rv := reflect.ValueOf(v)
	switch rv.Kind() {
	case reflect.Map:
		return "table"
	case reflect.Slice, reflect.Array:
		return "array"
	}
	return fmt.Sprintf("%T", v)
}

// coerce checks a raw value parsed from the file against f's type and returns
// it in the canonical Go type for the decoder (int64, float64, bool, string).
// It refuses what the original's strict serde decoding refuses too: strings
// for numbers, numbers for booleans, floats for integers. An integer for a
// float field is accepted (serde accepts it as well).
func (f *field) coerce(v any) (any, string) {
	want := f.typeName()
	if v == nil {
		return nil, "expected " + want + ", got null (omit the key instead)"
	}
	bad := func() (any, string) { return nil, "expected " + want + ", got " + describe(v) }
	if f.Type == stringsType {
		items, ok := v.([]any)
		if !ok {
			return bad()
		}
		out := make([]string, 0, len(items))
		for _, it := range items {
			s, ok := it.(string)
			if !ok {
				return nil, "expected " + want + ", got an element of type " + describe(it)
			}
			out = append(out, s)
		}
		return out, ""
	}
	switch f.Type.Kind() {
	case reflect.Int, reflect.Int64:
		switch x := v.(type) {
		case int:
			return int64(x), ""
		case int8:
			return int64(x), ""
		case int16:
			return int64(x), ""
		case int32:
			return int64(x), ""
		case int64:
			return x, ""
		case uint8:
			return int64(x), ""
		case uint16:
			return int64(x), ""
		case uint32:
			return int64(x), ""
		case uint:
			if uint64(x) > math.MaxInt64 {
				return nil, "value " + strconv.FormatUint(uint64(x), 10) + " is out of range"
			}
			return int64(x), ""
		case uint64:
			if x > math.MaxInt64 {
				return nil, "value " + strconv.FormatUint(x, 10) + " is out of range"
			}
			return int64(x), ""
		}
		return bad()
	case reflect.Float64:
		switch x := v.(type) {
		case float64:
			return x, ""
		case float32:
			return float64(x), ""
		case int, int8, int16, int32, int64, uint, uint8, uint16, uint32, uint64:
			return reflect.ValueOf(x).Convert(reflect.TypeFor[float64]()).Float(), ""
		}
		return bad()
	case reflect.Bool:
		if x, ok := v.(bool); ok {
			return x, ""
		}
		return bad()
	case reflect.String:
		if x, ok := v.(string); ok {
			return x, ""
		}
		return bad()
	}
	return bad()
}

// parseEnv parses an environment variable's text as f's type.
func (f *field) parseEnv(s string) (any, string) {
	want := f.typeName()
	if f.Type == stringsType {
		// A list from the environment is comma-separated.
		var out []string
		for p := range strings.SplitSeq(s, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
		return out, ""
	}
	switch f.Type.Kind() {
	case reflect.Int, reflect.Int64:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, 64)
		if err != nil {
			return nil, fmt.Sprintf("expected %s, got %q", want, s)
		}
		return n, ""
	case reflect.Float64:
		x, err := strconv.ParseFloat(strings.TrimSpace(s), 64)
		if err != nil {
			return nil, fmt.Sprintf("expected %s, got %q", want, s)
		}
		return x, ""
	case reflect.Bool:
		switch strings.TrimSpace(s) {
		case "true":
			return true, ""
		case "false":
			return false, ""
		}
		return nil, fmt.Sprintf("expected %s (true or false), got %q", want, s)
	case reflect.String:
		return s, ""
	}
	return nil, "unsupported type"
}

// defaultsMap renders [Defaults] as the nested map of the lowest koanf layer.
func defaultsMap() map[string]any {
	d := Defaults()
	m := make(map[string]any, len(sections))
	for _, s := range sections {
		m[s] = make(map[string]any)
	}
	for i := range schema {
		f := &schema[i]
		v := f.value(&d)
		var raw any
		switch v.Kind() {
		case reflect.Int, reflect.Int64:
			raw = v.Int()
		case reflect.Float64:
			raw = v.Float()
		case reflect.Bool:
			raw = v.Bool()
		case reflect.String:
			raw = v.String()
		case reflect.Slice:
			continue // empty by default: the key stays out of the layer
		}
		m[f.Section].(map[string]any)[f.Name] = raw
	}
	return m
}

// sortedKeys returns the keys of m in sorted order.
func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
