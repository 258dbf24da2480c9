package config

import (
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strings"
)

// A reconciler serves its default region (--aws-region) and any extra
// regions (--aws-regions). AMIs, subnets and security groups exist in one
// region only, so an extra region takes them from the --instance-*-by-region
// settings; everything else about an instance is the same in every region.

// Names of the per-region settings.
const (
	amiByRegion = "instance-ami-by-region"
	subnetByRgn = "instance-subnet-by-region"
	sgsByRegion = "instance-security-groups-by-region"
)

// RegionalInstance is the part of an instance's settings that is regional in
// AWS, for one extra region.
type RegionalInstance struct {
	AMI string
	// Subnet empty means the default subnet of the region's default VPC.
	Subnet string
	// SecurityGroups empty means the default security group of the VPC.
	SecurityGroups []string
}

// ServedRegions lists the AWS regions this reconciler launches in: the
// default region first, then the extra regions in the order given, each
// once.
func (c Config) ServedRegions() []string {
	out := make([]string, 0, 1+len(c.AWS.ExtraRegions))
	if c.AWS.Region != "" {
		out = append(out, c.AWS.Region)
	}
	for _, r := range c.AWS.ExtraRegions {
		if !slices.Contains(out, r) {
			out = append(out, r)
		}
	}
	return out
}

// InstanceFor returns the effective instance settings of a served region:
// the default region's are Instance; an extra region's take AMI, Subnet and
// SecurityGroups from InstanceByRegion and the rest from Instance. An empty
// region is the default region (an org that names no region goes there).
// ok is false for a region this reconciler does not serve.
func (c Config) InstanceFor(region string) (Instance, bool) {
	if region == "" {
		region = c.AWS.Region
	}
	if region == "" {
		return Instance{}, false
	}
	in := c.Instance
	in.SecurityGroups = slices.Clone(in.SecurityGroups)
	if region == c.AWS.Region {
		return in, true
	}
	if !slices.Contains(c.AWS.ExtraRegions, region) {
		return Instance{}, false
	}
	r := c.InstanceByRegion[region]
	in.AMI, in.Subnet, in.SecurityGroups = r.AMI, r.Subnet, slices.Clone(r.SecurityGroups)
	return in, true
}

// extraRegions are the served regions other than the default one.
func (c *Config) extraRegions() []string {
	served := c.ServedRegions()
	if c.AWS.Region != "" && len(served) > 0 {
		return served[1:]
	}
	return served
}

// regionField reads and writes one field of RegionalInstance as text, so
// the three per-region settings share one parser.
type regionField struct {
	// what the value is, for messages ("AMI").
	what string
	// sep joins the items of a list value ("" for a single value).
	sep string
	get func(r RegionalInstance) string
	set func(r *RegionalInstance, v string)
}

var regionFields = map[string]regionField{
	amiByRegion: {what: "AMI",
		get: func(r RegionalInstance) string { return r.AMI },
		set: func(r *RegionalInstance, v string) { r.AMI = v }},
	subnetByRgn: {what: "subnet",
		get: func(r RegionalInstance) string { return r.Subnet },
		set: func(r *RegionalInstance, v string) { r.Subnet = v }},
	sgsByRegion: {what: "security groups", sep: "+",
		get: func(r RegionalInstance) string { return strings.Join(r.SecurityGroups, "+") },
		set: func(r *RegionalInstance, v string) { r.SecurityGroups = splitOn(v, "+") }},
}

func splitOn(v, sep string) []string {
	var out []string
	for _, f := range strings.Split(v, sep) {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

// regionMapSetting binds a REGION=VALUE,... setting to one field of
// InstanceByRegion. Setting never fails: entries that cannot be read are
// kept aside and reported by validate, each by itself, so that one bad entry
// neither hides the others nor drops the good ones (which would add a
// misleading "missing" problem on top).
func regionMapSetting(name string) (func(*Config, string) error, func(*Config) string) {
	fld := regionFields[name]
	set := func(c *Config, v string) error {
		// Copy on write: a Config is a value and its copies share maps.
		m := make(map[string]RegionalInstance, len(c.InstanceByRegion))
		for k, r := range c.InstanceByRegion {
			r.SecurityGroups = slices.Clone(r.SecurityGroups)
			fld.set(&r, "")
			if r.AMI != "" || r.Subnet != "" || len(r.SecurityGroups) > 0 {
				m[k] = r
			}
		}
		var bad []string
		seen := map[string]bool{}
		for _, e := range splitList(v) {
			region, val, ok := strings.Cut(e, "=")
			region, val = strings.TrimSpace(region), strings.TrimSpace(val)
			switch {
			case !ok || region == "" || strings.Trim(val, fld.sep+" ") == "":
				bad = append(bad, fmt.Sprintf("entry %q is not REGION=%s", e, strings.ToUpper(strings.ReplaceAll(fld.what, " ", "_"))))
				continue
			case seen[region]:
				bad = append(bad, fmt.Sprintf("region %s is given twice; give each region once", region))
				continue
			}
			seen[region] = true
			r := m[region]
			fld.set(&r, val)
			m[region] = r
		}
		if len(m) == 0 {
			m = nil
		}
		c.InstanceByRegion = m
		badEntries := maps.Clone(c.badEntries)
		if badEntries == nil {
			badEntries = map[string][]string{}
		}
		badEntries[name] = bad
		c.badEntries = badEntries
		return nil
	}
	get := func(c *Config) string {
		var parts []string
		for _, k := range slices.Sorted(maps.Keys(c.InstanceByRegion)) {
			if v := fld.get(c.InstanceByRegion[k]); v != "" {
				parts = append(parts, k+"="+v)
			}
		}
		return strings.Join(parts, ",")
	}
	return set, get
}

// fillSandboxRegions gives every extra region without its own AMI or subnet
// the sandbox ones, as the default region gets them.
func (c *Config) fillSandboxRegions() {
	extra := c.extraRegions()
	if len(extra) == 0 {
		return
	}
	m := make(map[string]RegionalInstance, len(extra))
	maps.Copy(m, c.InstanceByRegion)
	for _, region := range extra {
		if checkRegion(region) != nil {
			continue // reported by validate; an entry would only repeat it
		}
		r := m[region]
		if r.AMI == "" {
			r.AMI = SandboxAMI
		}
		if r.Subnet == "" {
			r.Subnet = SandboxSubnet
		}
		m[region] = r
	}
	c.InstanceByRegion = m
}

// validateRegions checks --aws-regions and the per-region instance settings.
func (c *Config) validateRegions(probs *problems) {
	seen := map[string]bool{}
	for _, r := range c.AWS.ExtraRegions {
		switch {
		case checkRegion(r) != nil:
			probs.add("--aws-regions", "%q %v", r, checkRegion(r))
		case seen[r]:
			probs.add("--aws-regions", "%s is listed twice; list each region once", r)
		}
		seen[r] = true
	}

	extra := c.extraRegions()
	var valid []string
	for _, r := range c.ServedRegions() {
		if checkRegion(r) == nil {
			valid = append(valid, r)
		}
	}
	served := strings.Join(valid, ", ")
	if served == "" {
		served = "none"
	}
	for _, name := range []string{amiByRegion, subnetByRgn, sgsByRegion} {
		flag := "--" + name
		fld := regionFields[name]
		for _, b := range c.badEntries[name] {
			probs.add(flag, "%s", b)
		}
		for _, region := range slices.Sorted(maps.Keys(c.InstanceByRegion)) {
			v := fld.get(c.InstanceByRegion[region])
			if v == "" {
				continue
			}
			switch {
			case checkRegion(region) != nil:
				probs.add(flag, "%q %v", region, checkRegion(region))
				continue
			case region == c.AWS.Region:
				probs.add(flag, "%s is the default region (--aws-region); set its %s with --%s", region, fld.what, strings.TrimSuffix(name, "-by-region"))
				continue
			case !slices.Contains(extra, region):
				probs.add(flag, "region %s is not served (served: %s); add it to --aws-regions or drop the entry", region, served)
				continue
			}
			r := c.InstanceByRegion[region]
			switch name {
			case amiByRegion:
				if !reAMI.MatchString(r.AMI) {
					probs.add(flag, "%s: %q is not an AMI id (ami- and 8 or 17 hex digits)", region, r.AMI)
				}
			case subnetByRgn:
				if !reSubnet.MatchString(r.Subnet) {
					probs.add(flag, "%s: %q is not a subnet id (subnet- and 8 or 17 hex digits)", region, r.Subnet)
				}
			case sgsByRegion:
				for _, sg := range r.SecurityGroups {
					if !reSG.MatchString(sg) {
						probs.add(flag, "%s: %q is not a security group id (sg- and 8 or 17 hex digits)", region, sg)
					}
				}
			}
		}
	}

	c.badEntries = nil // reported; a loaded Config carries no parsing residue

	// An AMI is the one regional setting AWS cannot choose: there is no
	// default image, while a missing subnet or security group means the
	// region's default VPC.
	if c.Cloud == ModeLive {
		for _, region := range extra {
			if checkRegion(region) == nil && c.InstanceByRegion[region].AMI == "" {
				probs.add("--"+amiByRegion, "required with --cloud live for every region in --aws-regions: %s has no AMI (add %s=ami-...)", region, region)
			}
		}
	}
}

// maxRegionLen is the event schema's maxLength for data.region: a longer
// name could never match an org's region.
const maxRegionLen = 32

// checkRegion checks a region name the way the org.created schema does.
func checkRegion(r string) error {
	if len(r) > maxRegionLen || !reRegion.MatchString(r) {
		return errors.New("is not an AWS region name (like us-east-1)")
	}
	return nil
}

// regionMapText turns a config-file mapping of region to value (a list for
// security groups) into the REGION=VALUE,... text the flag takes.
func regionMapText(name string, m map[string]any) (string, error) {
	sep := regionFields[name].sep
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		var v string
		switch x := m[k].(type) {
		case []any:
			if sep == "" {
				return "", fmt.Errorf("region %s: want one value, not a list", k)
			}
			items := make([]string, 0, len(x))
			for _, e := range x {
				s, err := scalarText(e)
				if _, nested := e.([]any); err != nil || nested || strings.ContainsAny(s, ",="+sep) {
					return "", fmt.Errorf("region %s: list items must be plain values", k)
				}
				items = append(items, s)
			}
			v = strings.Join(items, sep)
		default:
			s, err := scalarText(x)
			if err != nil || strings.ContainsAny(s, ",=") {
				return "", fmt.Errorf("region %s: want a plain value", k)
			}
			v = s
		}
		if strings.ContainsAny(k, ",=") {
			return "", fmt.Errorf("%q is not a region name", k)
		}
		parts = append(parts, k+"="+v)
	}
	return strings.Join(parts, ","), nil
}
