package config

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/go-viper/mapstructure/v2"
	"github.com/knadh/koanf/maps"
	"github.com/knadh/koanf/parsers/toml/v2"
	"github.com/knadh/koanf/parsers/yaml"
	"github.com/knadh/koanf/providers/confmap"
	"github.com/knadh/koanf/providers/env/v2"
	"github.com/knadh/koanf/v2"
)

// envPrefix starts every environment variable that configures ptproxy. The
// rest of the name is <SECTION>__<FIELD>: a double underscore separates the
// section from the field, because field names contain single underscores.
const envPrefix = "PTPROXY_"

// Format is a configuration file syntax.
type Format string

// Supported formats. Both use the same sections and keys.
const (
	FormatTOML Format = "toml"
	FormatYAML Format = "yaml"
)

// FormatFromPath picks the format from the file name: YAML for .yaml and .yml
// (any case), TOML otherwise (the original's only format).
func FormatFromPath(path string) Format {
	switch strings.ToLower(filepath.Ext(path)) {
	case ".yaml", ".yml":
		return FormatYAML
	}
	return FormatTOML
}

// Load reads the configuration file at path, applies the PTPROXY_*
// environment variables of the process on top of it, and validates the
// result. See [LoadBytes].
func Load(path string) (*Config, error) {
	return LoadFile(path, os.Environ())
}

// LoadFile is [Load] with an explicit environment (a list of "KEY=value"
// strings as returned by os.Environ), for tests and embedding.
func LoadFile(path string, environ []string) (*Config, error) {
	c, err := LoadFilePartial(path, environ)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// LoadFilePartial is [LoadFile] for ptproxy check: the same layers, the
// same validation and the same error, but when the file could be parsed it
// also returns the configuration as far as it could be built despite the
// problems, so that the rest of it can still be examined. A value of the
// wrong type is left at its default, a value that fails validation is kept:
// do not trust a field that one of the error's [FieldError]s names. The
// Config is nil only when the file cannot be read or parsed.
func LoadFilePartial(path string, environ []string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		// Keep the *PathError reachable (errors.Is(err, fs.ErrNotExist)).
		return nil, fmt.Errorf("reading configuration file: %w", err)
	}
	return loadBytes(data, "", path, environ)
}

// LoadBytes parses data as a configuration file and builds a validated
// [Config] from the layers defaults < data < environ.
//
// format "" picks the format from path with [FormatFromPath]. path names the
// file in errors and anchors relative paths (tls.ca, tls.cert, tls.key,
// transport.qlog_dir), which are resolved against filepath.Dir(path); the
// file need not exist. With path "", relative paths are kept as they are.
// environ holds "KEY=value" strings; only those starting with PTPROXY_ are
// looked at, and each of them must name a field.
//
// Every problem found is returned as a *FieldError, several joined with
// errors.Join.
func LoadBytes(data []byte, format Format, path string, environ []string) (*Config, error) {
	c, err := loadBytes(data, format, path, environ)
	if err != nil {
		return nil, err
	}
	return c, nil
}

// loadBytes is LoadBytes returning, with the problems, the configuration as
// far as it was built (nil when data could not be parsed).
func loadBytes(data []byte, format Format, path string, environ []string) (*Config, error) {
	if format == "" {
		format = FormatFromPath(path)
	}
	var parser koanf.Parser
	switch format {
	case FormatTOML:
		parser = toml.Parser()
	case FormatYAML:
		parser = yaml.Parser()
	default:
		return nil, &FieldError{File: path, Problem: fmt.Sprintf("unsupported configuration format %q (want %q or %q)", format, FormatTOML, FormatYAML)}
	}

	raw, err := parser.Unmarshal(data)
	if err != nil {
		return nil, &FieldError{File: path, Problem: "parsing configuration: " + syntaxError(err)}
	}
	if raw == nil { // empty YAML document
		raw = map[string]any{}
	}
	maps.IntfaceKeysToStrings(raw)

	c := &Config{file: path, set: make(map[string]bool), env: make(map[string]string)}
	present := make(map[string]bool) // sections given in the file or the environment
	bad := make(map[string]bool)     // keys and sections already reported
	var errs []error

	// The routing sections are arrays of tables: decoded apart (routes.go).
	errs = append(errs, c.decodeRoutes(raw, path, c.set, bad)...)

	// File layer: refuse unknown sections and keys and wrong types here, so
	// each problem names its key and the file; only clean values go on.
	fileMap, ferrs := checkFile(raw, path, c.set, present, bad)
	errs = append(errs, ferrs...)

	// Environment layer, same treatment, naming the variable.
	var envErrs []error
	transform := func(name, value string) (string, any) {
		f, problem := envField(name)
		if f == nil {
			if problem == "" {
				c.ignoredEnv = append(c.ignoredEnv, name)
			} else {
				envErrs = append(envErrs, &FieldError{File: path, Env: name, Problem: problem})
			}
			return "", nil
		}
		v, problem := f.parseEnv(value)
		if problem != "" {
			envErrs = append(envErrs, &FieldError{File: path, Env: name, Field: f.Key, Problem: problem})
			bad[f.Key] = true
			return "", nil
		}
		c.set[f.Key] = true
		c.env[f.Key] = name
		present[f.Section] = true
		return f.Key, v
	}

	ko := koanf.New(".")
	if err := ko.Load(confmap.Provider(defaultsMap(), ""), nil); err != nil {
		return nil, fmt.Errorf("loading defaults: %w", err)
	}
	if err := ko.Load(confmap.Provider(fileMap, ""), nil); err != nil {
		return nil, &FieldError{File: path, Problem: err.Error()}
	}
	envProvider := env.Provider(".", env.Opt{
		Prefix:        envPrefix,
		TransformFunc: transform,
		EnvironFunc:   func() []string { return environ },
	})
	if err := ko.Load(envProvider, nil); err != nil {
		return nil, fmt.Errorf("loading environment: %w", err)
	}
	errs = append(errs, envErrs...)

	// Decode strictly. The checks above already refused anything the decoder
	// could trip on; ErrorUnused stays on as a safety net (knadh/koanf#189).
	err = ko.UnmarshalWithConf("", c, koanf.UnmarshalConf{
		Tag: "koanf",
		DecoderConfig: &mapstructure.DecoderConfig{
			ErrorUnused:      true,
			WeaklyTypedInput: false,
			TagName:          "koanf",
			Result:           c,
		},
	})
	if err != nil {
		errs = append(errs, decodeErrors(err, path)...)
	}

	for _, s := range []string{"general", "tls"} {
		if !present[s] && !bad[s] {
			errs = append(errs, &FieldError{File: path, Field: s, Problem: "required section [" + s + "] is missing"})
		}
	}
	// Validate even after loading problems, so that the operator sees all
	// mistakes at once; refused values were left at their defaults and are
	// not reported a second time.
	errs = append(errs, c.validate(present, bad)...)
	c.finish(filepathDir(path))
	return c, errors.Join(errs...)
}

// filepathDir is filepath.Dir, except that no name gives no directory.
func filepathDir(path string) string {
	if path == "" {
		return ""
	}
	return filepath.Dir(path)
}

// checkFile validates the raw parsed file against the schema. It returns a
// map with only the valid entries, values converted to their canonical Go
// types, records set keys and present sections, and reports every problem.
func checkFile(raw map[string]any, file string, set, present, bad map[string]bool) (map[string]any, []error) {
	clean := make(map[string]any)
	var errs []error
	for _, sec := range sortedKeys(raw) {
		if !isSection(sec) {
			errs = append(errs, &FieldError{File: file, Field: sec,
				Problem: "unknown section (allowed: " + strings.Join(sections, ", ") + ")" + routeSectionHint(sec)})
			continue
		}
		tbl, ok := raw[sec].(map[string]any)
		if !ok {
			errs = append(errs, &FieldError{File: file, Field: sec,
				Problem: "must be a table (a [" + sec + "] section), got " + describe(raw[sec])})
			bad[sec] = true
			continue
		}
		present[sec] = true
		out := make(map[string]any, len(tbl))
		for _, name := range sortedKeys(tbl) {
			key := sec + "." + name
			f := schemaByKey[key]
			if f == nil {
				errs = append(errs, &FieldError{File: file, Field: key, Problem: "unknown key" + suggest(sec, name)})
				continue
			}
			v, problem := f.coerce(tbl[name])
			if problem != "" {
				errs = append(errs, &FieldError{File: file, Field: key, Problem: problem})
				bad[key] = true
				continue
			}
			out[name] = v
			set[key] = true
		}
		clean[sec] = out
	}
	return clean, errs
}

// suggest proposes the known key of section sec closest to a misspelt name.
func suggest(sec, name string) string {
	best, bestDist := "", 3 // suggest only close matches
	for i := range schema {
		f := &schema[i]
		if f.Section != sec {
			continue
		}
		if d := editDistance(name, f.Name); d < bestDist {
			best, bestDist = f.Name, d
		}
	}
	if best == "" {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", best)
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// envField maps a PTPROXY_<SECTION>__<FIELD> variable name to its field, or
// explains why it maps to none. Only names of that shape can be mistakes:
// others (PTPROXY_PORT and PTPROXY_SERVICE_HOST, which Kubernetes sets
// beside a Service named ptproxy, or a script's PTPROXY_BIN) belong to
// someone else and map to no field with no problem, except a field's own
// name written with a single underscore, which is a typo.
func envField(name string) (*field, string) {
	rest := strings.TrimPrefix(name, envPrefix)
	sec, fld, ok := strings.Cut(rest, "__")
	if !ok {
		for i := range schema {
			if strings.EqualFold(name, strings.Replace(schema[i].Env, "__", "_", 1)) {
				return nil, "does not name a configuration field: expected " + envPrefix +
					"<SECTION>__<FIELD> with a double underscore: " + schema[i].Env
			}
		}
		return nil, ""
	}
	key := strings.ToLower(sec) + "." + strings.ToLower(fld)
	if f := schemaByKey[key]; f != nil {
		return f, ""
	}
	if isRouteSection(strings.ToLower(sec)) {
		return nil, fmt.Sprintf("does not name a configuration field: %s holds arrays of tables, which only the configuration file can set (docs/routes.md)",
			strings.ToLower(sec))
	}
	if !isSection(strings.ToLower(sec)) {
		return nil, fmt.Sprintf("does not name a configuration field: unknown section %q (allowed: %s)",
			strings.ToLower(sec), strings.Join(sections, ", "))
	}
	return nil, fmt.Sprintf("does not name a configuration field: unknown key %q", key)
}

// syntaxError formats a parser error, with the line and column when the
// parser reports them (go-toml's DecodeError does).
func syntaxError(err error) string {
	var pos interface{ Position() (row, column int) }
	if errors.As(err, &pos) {
		row, col := pos.Position()
		return fmt.Sprintf("line %d, column %d: %v", row, col, err)
	}
	return err.Error()
}

// decodeErrors turns what the mapstructure decoder reports into FieldErrors.
// It only runs if checkFile and envField let something through.
func decodeErrors(err error, file string) []error {
	var out []error
	var walk func(error)
	walk = func(err error) {
		if j, ok := err.(interface{ Unwrap() []error }); ok {
			for _, e := range j.Unwrap() {
				walk(e)
			}
			return
		}
		if de, ok := errors.AsType[*mapstructure.DecodeError](err); ok {
			out = append(out, &FieldError{File: file, Field: de.Name(), Problem: de.Unwrap().Error()})
			return
		}
		out = append(out, &FieldError{File: file, Problem: err.Error()})
	}
	walk(err)
	return out
}
