package config

import "reflect"

// Changed lists the keys ("section.field") whose values differ between a
// and b, in declaration order. A reload uses it to tell what it can switch
// live from what needs a restart.
func Changed(a, b *Config) []string {
	var out []string
	for i := range schema {
		f := &schema[i]
		if !reflect.DeepEqual(f.value(a).Interface(), f.value(b).Interface()) {
			out = append(out, f.Key)
		}
	}
	return out
}

// CopyKey sets the field key of dst to its value in src, and reports
// whether key names a field.
func CopyKey(dst, src *Config, key string) bool {
	f := schemaByKey[key]
	if f == nil {
		return false
	}
	f.value(dst).Set(f.value(src))
	return true
}
