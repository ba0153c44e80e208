package config

import (
	"fmt"
	"reflect"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

var (
	typeOfConfig   = reflect.TypeOf(Config{})
	typeOfDuration = reflect.TypeOf(Duration{})
)

// keyDecoder lets a struct decode one of its keys itself (node.id: auto). It
// returns handled=false to let the decoder do its usual work.
type keyDecoder interface {
	decodeKey(key string, n *yaml.Node) (handled bool, err error)
}

// decoder fills a Config from a YAML tree, walking the tree alongside the Go
// types. Unlike yaml's own decoder it goes on after a problem, so that every
// unknown key and every value of the wrong kind is reported at once, each
// with its dotted key and line, in words rather than Go types: `node.id:
// "one" is not a whole number (line 3)`, not `cannot unmarshal !!str into
// uint64`.
type decoder struct {
	p *Problems
}

// decode stores n into v (addressable), whose key is path.
func (d decoder) decode(n *yaml.Node, v reflect.Value, path string) {
	for n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind == yaml.ScalarNode && n.Tag == "!!null" {
		return // an empty value leaves the default
	}
	t := v.Type()
	switch {
	case t.Kind() == reflect.Pointer:
		if v.IsNil() {
			v.Set(reflect.New(t.Elem()))
		}
		d.decode(n, v.Elem(), path)
	case t.Kind() == reflect.Struct && t != typeOfDuration:
		if n.Kind != yaml.MappingNode {
			d.wrongKind(n, path, "a mapping of keys ("+strings.Join(fieldNames(t), ", ")+")")
			return
		}
		d.decodeStruct(n, v, path)
	case t.Kind() == reflect.Slice:
		if n.Kind != yaml.SequenceNode {
			d.wrongKind(n, path, "a list")
			return
		}
		v.Set(reflect.MakeSlice(t, len(n.Content), len(n.Content)))
		for i, item := range n.Content {
			d.decode(item, v.Index(i), fmt.Sprintf("%s[%d]", path, i))
		}
	default:
		d.decodeScalar(n, v, path)
	}
}

func (d decoder) decodeStruct(n *yaml.Node, v reflect.Value, path string) {
	custom, _ := v.Addr().Interface().(keyDecoder)
	for i := 0; i+1 < len(n.Content); i += 2 {
		key, val := n.Content[i], n.Content[i+1]
		full := joinKey(path, key.Value)
		field, ok := fieldByTag(v.Type(), key.Value)
		if !ok {
			d.p.Add(full, "unknown key (line %d); known keys here: %s", key.Line, strings.Join(fieldNames(v.Type()), ", "))
			continue
		}
		if custom != nil {
			handled, err := custom.decodeKey(key.Value, val)
			if err != nil {
				d.p.Add(full, "%v (line %d)", err, val.Line)
			}
			if handled || err != nil {
				continue
			}
		}
		d.decode(val, v.FieldByIndex(field.Index), full)
	}
}

// lineRef is the "line N: " prefix of errors from UnmarshalYAML methods.
var lineRef = regexp.MustCompile(`^line \d+: `)

func (d decoder) decodeScalar(n *yaml.Node, v reflect.Value, path string) {
	want := describeType(v.Type())
	if n.Kind != yaml.ScalarNode {
		d.wrongKind(n, path, want)
		return
	}
	target := reflect.New(v.Type())
	if err := n.Decode(target.Interface()); err != nil {
		if _, custom := target.Interface().(yaml.Unmarshaler); custom {
			// Our own UnmarshalYAML methods write for people already.
			d.p.Add(path, "%s (line %d)", lineRef.ReplaceAllString(err.Error(), ""), n.Line)
			return
		}
		d.p.Add(path, "%q is not %s (line %d)", n.Value, want, n.Line)
		return
	}
	v.Set(target.Elem())
}

func (d decoder) wrongKind(n *yaml.Node, path, want string) {
	got := map[yaml.Kind]string{yaml.MappingNode: "a mapping", yaml.SequenceNode: "a list", yaml.ScalarNode: fmt.Sprintf("%q", n.Value)}[n.Kind]
	if got == "" {
		got = "something else"
	}
	d.p.Add(path, "want %s, got %s (line %d)", want, got, n.Line)
}

// describeType names what a value of t looks like in YAML.
func describeType(t reflect.Type) string {
	switch {
	case t == typeOfDuration:
		return "a duration such as 500ms or 30s"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() >= reflect.Int && t.Kind() <= reflect.Int64:
		return "a whole number"
	case t.Kind() >= reflect.Uint && t.Kind() <= reflect.Uint64:
		return "a whole number, 0 or more"
	case t.Kind() == reflect.String:
		return "a string"
	}
	return "a " + t.Kind().String()
}

func joinKey(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func fieldByTag(t reflect.Type, key string) (reflect.StructField, bool) {
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == key && name != "-" && name != "" {
			return f, true
		}
	}
	return reflect.StructField{}, false
}

// fieldNames lists the YAML keys of struct type t.
func fieldNames(t reflect.Type) []string {
	var names []string
	for i := 0; i < t.NumField(); i++ {
		name, _, _ := strings.Cut(t.Field(i).Tag.Get("yaml"), ",")
		if name != "" && name != "-" {
			names = append(names, name)
		}
	}
	return names
}

// allKeys lists the dotted keys of t ("node.id", "peers[].raft", ...).
func allKeys(t reflect.Type, prefix string) []string {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		if name == "" || name == "-" {
			continue
		}
		key := prefix + name
		ft := f.Type
		for ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		switch {
		case ft.Kind() == reflect.Struct && ft != typeOfDuration:
			keys = append(keys, allKeys(ft, key+".")...)
		case ft.Kind() == reflect.Slice && ft.Elem().Kind() == reflect.Struct:
			keys = append(keys, key)
			keys = append(keys, allKeys(ft.Elem(), key+"[].")...)
		default:
			keys = append(keys, key)
		}
	}
	return keys
}
