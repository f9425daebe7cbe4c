package config

import (
	"encoding/json"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/goccy/go-yaml"
	"github.com/santhosh-tekuri/jsonschema/v6"
)

const schemaPath = "../../docs/config.schema.json"

// TestSchemaMatchesTypes walks the Go types and the JSON Schema side by
// side, so neither can gain or lose a field without the other.
func TestSchemaMatchesTypes(t *testing.T) {
	b, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var schema map[string]any
	if err := json.Unmarshal(b, &schema); err != nil {
		t.Fatal(err)
	}
	defs, _ := schema["$defs"].(map[string]any)
	var walk func(path string, typ reflect.Type, s map[string]any)
	walk = func(path string, typ reflect.Type, s map[string]any) {
		if ref, ok := s["$ref"].(string); ok {
			s = defs[strings.TrimPrefix(ref, "#/$defs/")].(map[string]any)
		}
		switch typ.Kind() {
		case reflect.Struct:
			if s["additionalProperties"] != false {
				t.Errorf("%s: schema must set additionalProperties: false", path)
			}
			props, _ := s["properties"].(map[string]any)
			var fields []string
			for f := range typ.Fields() {
				name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
				fields = append(fields, name)
				ps, ok := props[name].(map[string]any)
				if !ok {
					t.Errorf("%s.%s: in Go, missing from the schema", path, name)
					continue
				}
				walk(path+"."+name, f.Type, ps)
			}
			for name := range props {
				if !slices.Contains(fields, name) {
					t.Errorf("%s.%s: in the schema, missing from Go", path, name)
				}
			}
		case reflect.Slice:
			if s["type"] != "array" {
				t.Errorf("%s: Go slice, schema type %v", path, s["type"])
				return
			}
			walk(path+"[]", typ.Elem(), s["items"].(map[string]any))
		case reflect.String:
			if s["type"] != "string" && s["enum"] == nil && s["pattern"] == nil {
				t.Errorf("%s: Go string, schema %v", path, s)
			}
		case reflect.Bool:
			if s["type"] != "boolean" {
				t.Errorf("%s: Go bool, schema type %v", path, s["type"])
			}
		case reflect.Int, reflect.Int64:
			if s["type"] != "integer" {
				t.Errorf("%s: Go integer, schema type %v", path, s["type"])
			}
		case reflect.Float64:
			if s["type"] != "number" {
				t.Errorf("%s: Go float, schema type %v", path, s["type"])
			}
		case reflect.Map:
			// Embedded FHIR resources: open objects with a fixed resourceType.
			if s["type"] != "object" || s["additionalProperties"] == false {
				t.Errorf("%s: Go map, schema must be an open object", path)
			}
		default:
			t.Errorf("%s: unhandled Go kind %v", path, typ.Kind())
		}
	}
	walk("$", reflect.TypeFor[Config](), schema)
}

// TestFixturesAgainstSchema checks the good fixture passes the schema and
// that the schema catches the structural faults among the bad ones.
func TestFixturesAgainstSchema(t *testing.T) {
	c := jsonschema.NewCompiler()
	sch, err := c.Compile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	validate := func(file string) error {
		b, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		var v any
		if err := yaml.Unmarshal(b, &v); err != nil {
			return err
		}
		// Round-trip through JSON so numbers and maps have the types the
		// validator expects.
		j, _ := json.Marshal(v)
		inst, err := jsonschema.UnmarshalJSON(strings.NewReader(string(j)))
		if err != nil {
			t.Fatal(err)
		}
		return sch.Validate(inst)
	}
	if err := validate("testdata/good.yaml"); err != nil {
		t.Fatalf("good.yaml fails the schema: %v", err)
	}
	for _, name := range []string{"unknown-field", "bad-alg", "bad-name", "no-registrations", "tls-version", "bad-log-level", "bad-scope", "bad-duration", "missing-client-id", "bad-jku"} {
		if err := validate(filepath.Join("testdata", "bad-"+name+".yaml")); err == nil {
			t.Errorf("bad-%s.yaml passes the schema", name)
		}
	}
}
