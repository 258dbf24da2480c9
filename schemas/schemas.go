// Package schemas embeds the JSON Schemas (draft 2020-12) of tunnelward's
// events, so the publisher and the reconciler enforce the very files that
// other publishers read.
package schemas

import (
	"embed"
	"fmt"
	"io/fs"
	"sort"
	"strings"
)

//go:embed *.json
var files embed.FS

// Examples holds the valid and invalid example events beside the schemas;
// tests run every one of them through the validator.
//
//go:embed examples
var Examples embed.FS

// Schema is one embedded schema file.
type Schema struct {
	Type    string // event type, e.g. "org.created"
	Version int    // schema version, e.g. 1
	ID      string // the schema's $id, e.g. "urn:tunnelward:schema:org.created:v1"
	File    string // file name, e.g. "org.created.v1.json"
	Body    []byte
}

// All returns every embedded schema, sorted by file name. File names follow
// <type>.v<version>.json.
func All() ([]Schema, error) {
	entries, err := fs.ReadDir(files, ".")
	if err != nil {
		return nil, fmt.Errorf("read embedded schemas: %w", err)
	}
	var out []Schema
	for _, e := range entries {
		name := e.Name()
		base := strings.TrimSuffix(name, ".json")
		i := strings.LastIndex(base, ".v")
		if i < 0 {
			return nil, fmt.Errorf("schema file %s: name is not <type>.v<version>.json", name)
		}
		var version int
		if _, err := fmt.Sscanf(base[i+2:], "%d", &version); err != nil || version < 1 {
			return nil, fmt.Errorf("schema file %s: bad version %q", name, base[i+2:])
		}
		body, err := files.ReadFile(name)
		if err != nil {
			return nil, fmt.Errorf("read embedded schema %s: %w", name, err)
		}
		typ := base[:i]
		out = append(out, Schema{
			Type:    typ,
			Version: version,
			ID:      fmt.Sprintf("urn:tunnelward:schema:%s:v%d", typ, version),
			File:    name,
			Body:    body,
		})
	}
	sort.Slice(out, func(a, b int) bool { return out[a].File < out[b].File })
	return out, nil
}
