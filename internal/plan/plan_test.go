package plan

import (
	"github.com/tunnelward/tunnelward/internal/owner"
	"reflect"
	"slices"
	"strings"
	"testing"
)

func desired() Desired {
	return Desired{OrgID: "acme", Present: true, Hostname: "acme.example.test", Service: "http://localhost:8080", Generation: 1}
}

// converged is the observed world of a fully converged, healthy org.
func converged() Observed {
	return Observed{
		Tunnel:       &Tunnel{ID: "t1", Status: "healthy"},
		Ingress:      WantIngress(desired()),
		IngressKnown: true,
		Records: []Record{{ID: "r1", Name: "acme.example.test", Type: "CNAME", Content: "t1.cfargotunnel.com",
			Proxied: true, Comment: owner.DNSComment("acme")}},
		RecordsKnown:  true,
		Param:         &Param{Name: "/tw/acme/tunnel-token", TunnelID: "t1"},
		ParamKnown:    true,
		Instances:     []Instance{{ID: "i-1", State: "running", TunnelID: "t1", Generation: 1}},
		InstanceKnown: true,
	}
}

type key struct {
	Res Resource
	Op  Op
	Tgt string
}

func keys(r Result) []key {
	var out []key
	for _, c := range r.Changes {
		out = append(out, key{c.Resource, c.Op, c.Target})
	}
	return out
}

func TestCompute(t *testing.T) {
	tests := []struct {
		name      string
		d         func() Desired
		o         func() Observed
		want      []key
		conflicts int
		ready     bool
	}{
		{
			name:  "converged and healthy: nothing to do, ready",
			d:     desired,
			o:     converged,
			want:  nil,
			ready: true,
		},
		{
			name: "converged but tunnel down: nothing to change, not ready",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Tunnel.Status = "down"
				return o
			},
			want: nil,
		},
		{
			name: "nothing exists: everything created",
			d:    desired,
			o:    func() Observed { return Observed{} },
			want: []key{
				{ResTunnel, OpCreate, "tw-acme"},
				{ResIngress, OpUpdate, "acme.example.test"},
				{ResToken, OpCreate, ""},
				{ResDNS, OpCreate, "acme.example.test"},
				{ResInstance, OpCreate, "acme"},
			},
		},
		{
			name: "instance from an older generation is replaced",
			d: func() Desired {
				d := desired()
				d.Generation = 2
				return d
			},
			o: converged,
			want: []key{
				{ResInstance, OpDelete, "i-1"},
				{ResInstance, OpCreate, "acme"},
			},
		},
		{
			name: "ingress differs",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Ingress = []IngressRule{{Hostname: "old.example.test", Service: "http://localhost:8080"}, {Service: CatchAllService}}
				return o
			},
			want: []key{{ResIngress, OpUpdate, "acme.example.test"}},
		},
		{
			name: "ingress unknown is not rewritten",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Ingress, o.IngressKnown = nil, false
				return o
			},
			want:  nil,
			ready: true,
		},
		{
			name: "token parameter missing",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Param = nil
				return o
			},
			want: []key{{ResToken, OpCreate, ""}},
		},
		{
			name: "tunnel replaced out of band: token rewritten, cloudflared restarted, DNS repointed",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Tunnel = &Tunnel{ID: "t2", Status: "inactive"}
				return o
			},
			want: []key{
				{ResToken, OpUpdate, "/tw/acme/tunnel-token"},
				{ResDNS, OpUpdate, "r1"},
				{ResInstance, OpRestart, "i-1"},
			},
		},
		{
			name: "owned record not proxied is fixed",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Records[0].Proxied = false
				return o
			},
			want: []key{{ResDNS, OpUpdate, "r1"}},
		},
		{
			name: "unowned record with our name: conflict, untouched",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Records[0].Comment = "hand-made"
				return o
			},
			want:      nil,
			conflicts: 1,
		},
		{
			name: "record owned by another org with our name: conflict",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Records[0].Comment = owner.DNSComment("other")
				return o
			},
			want:      nil,
			conflicts: 1,
		},
		{
			name: "slug changed: new record created, old owned record deleted",
			d: func() Desired {
				d := desired()
				d.Hostname = "acme2.example.test"
				return d
			},
			o: converged,
			want: []key{
				{ResIngress, OpUpdate, "acme2.example.test"},
				{ResDNS, OpDelete, "r1"},
				{ResDNS, OpCreate, "acme2.example.test"},
			},
		},
		{
			name: "instance stopped: deleted and a new one created",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Instances[0].State = "stopped"
				return o
			},
			want: []key{{ResInstance, OpDelete, "i-1"}, {ResInstance, OpCreate, "acme"}},
		},
		{
			name: "two live instances: the older generation goes",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Instances = append(o.Instances, Instance{ID: "i-0", State: "running", TunnelID: "t1", Generation: 0})
				return o
			},
			want: []key{{ResInstance, OpDelete, "i-0"}},
		},
		{
			name: "instances shutting down do not count as live",
			d:    desired,
			o: func() Observed {
				o := converged()
				o.Instances[0].State = "shutting-down"
				return o
			},
			want: []key{{ResInstance, OpCreate, "acme"}},
		},
		{
			name: "deleted org: everything goes",
			d: func() Desired {
				d := desired()
				d.Present = false
				return d
			},
			o: converged,
			want: []key{
				{ResInstance, OpDelete, "i-1"},
				{ResDNS, OpDelete, "r1"},
				{ResToken, OpDelete, "/tw/acme/tunnel-token"},
				{ResTunnel, OpDelete, "t1"},
			},
		},
		{
			name: "deleted org never deletes a record it does not own",
			d: func() Desired {
				d := desired()
				d.Present = false
				return d
			},
			o: func() Observed {
				return Observed{Records: []Record{{ID: "r9", Name: "acme.example.test", Type: "CNAME", Comment: "hand-made"}}, RecordsKnown: true}
			},
			want: nil,
		},
		{
			name: "deleted org with nothing left: empty plan",
			d: func() Desired {
				d := desired()
				d.Present = false
				return d
			},
			o:    func() Observed { return Observed{RecordsKnown: true, ParamKnown: true, InstanceKnown: true} },
			want: nil,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Compute(tc.d(), tc.o())
			if got := keys(r); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("changes:\n got %v\nwant %v\n(%v)", got, tc.want, r.Changes)
			}
			if len(r.Conflicts) != tc.conflicts {
				t.Errorf("conflicts = %v, want %d", r.Conflicts, tc.conflicts)
			}
			if r.Ready != tc.ready {
				t.Errorf("ready = %v, want %v", r.Ready, tc.ready)
			}
			for _, c := range r.Changes {
				if c.Reason == "" {
					t.Errorf("change %v has no reason", c)
				}
			}
		})
	}
}

// A hostname held by someone else's record: nothing billable is created for
// the org (no tunnel, token, instance), and the plan names what it withholds.
// For an org that already exists, what is there stays and only creations
// are withheld.
func TestConflictWithholdsCreation(t *testing.T) {
	theirs := Record{ID: "r9", Name: "acme.example.test", Type: "A", Content: "192.0.2.1", Comment: "ops"}
	fresh := Observed{Records: []Record{theirs}, RecordsKnown: true, ParamKnown: true, InstanceKnown: true}
	r := Compute(desired(), fresh)
	if len(r.Changes) != 0 || len(r.Conflicts) != 1 || r.Ready {
		t.Fatalf("new org on a taken hostname: changes %v conflicts %v ready %v; want none, one conflict, not ready", r.Changes, r.Conflicts, r.Ready)
	}
	got := map[Resource]bool{}
	for _, c := range r.Withheld {
		got[c.Resource] = true
	}
	for _, res := range []Resource{ResTunnel, ResIngress, ResToken, ResInstance} {
		if !got[res] {
			t.Errorf("withheld %v: %s missing", r.Withheld, res)
		}
	}

	built := converged()
	built.Records = []Record{theirs}
	built.Instances = []Instance{{ID: "i-1", State: "stopped", TunnelID: "t1", Generation: 1}}
	r = Compute(desired(), built)
	if !reflect.DeepEqual(keys(r), []key{{ResInstance, OpDelete, "i-1"}}) {
		t.Fatalf("existing org on a taken hostname: changes %v, want only the stopped instance's delete", keys(r))
	}
	if len(r.Withheld) != 1 || r.Withheld[0].Resource != ResInstance || r.Withheld[0].Op != OpCreate {
		t.Fatalf("withheld %v, want the replacement's launch", r.Withheld)
	}
}

// The plan names the instance it keeps (newest generation, then lowest
// id) and the org's own record: the engine adopts exactly those.
func TestKeepInstanceAndRecord(t *testing.T) {
	o := converged()
	o.Instances = []Instance{
		{ID: "i-2", State: "running", TunnelID: "t1", Generation: 1},
		{ID: "i-1", State: "pending", TunnelID: "t1", Generation: 1},
		{ID: "i-0", State: "running", TunnelID: "t1", Generation: 0}, // no tag: unknown generation, kept only if alone
	}
	r := Compute(desired(), o)
	if r.KeepInstance != "i-1" || r.KeepRecord != "r1" {
		t.Fatalf("keep instance %q record %q, want i-1 and r1", r.KeepInstance, r.KeepRecord)
	}
	d := desired()
	d.Generation = 2
	r = Compute(d, converged())
	if r.KeepInstance != "" || !reflect.DeepEqual(keys(r), []key{{ResInstance, OpDelete, "i-1"}, {ResInstance, OpCreate, "acme"}}) {
		t.Fatalf("generation 2 over a generation-1 instance: keep %q changes %v; want none kept, replaced", r.KeepInstance, keys(r))
	}
}

// A cutover of an existing tenant (issue 16): the record another party
// holds at the hostname is not a conflict when it matches the org's
// takeover. The org is built; the record is replaced by the org's CNAME,
// as one change, only once the tunnel is healthy, and held back (shown as
// withheld, waiting) before. A record that does not match stays a
// conflict, and nothing is built or replaced.
func TestTakeover(t *testing.T) {
	legacy := Record{ID: "0123456789abcdef0123456789abcdef", Name: "acme.example.test", Type: "A", Content: "192.0.2.10", TTL: 300}
	withTakeover := func(tk Takeover) func() Desired {
		return func() Desired {
			d := desired()
			d.Takeover = &tk
			return d
		}
	}
	byContent := withTakeover(Takeover{Type: "A", Content: "192.0.2.10"})
	// built is the org built beside the legacy record, with its tunnel in
	// the given status.
	built := func(status string, recs ...Record) func() Observed {
		return func() Observed {
			o := converged()
			o.Tunnel.Status = status
			o.Records = recs
			return o
		}
	}
	fresh := func(recs ...Record) func() Observed {
		return func() Observed {
			return Observed{Records: recs, RecordsKnown: true, ParamKnown: true, InstanceKnown: true}
		}
	}
	with := func(r Record, edit func(*Record)) Record { edit(&r); return r }
	tests := []struct {
		name      string
		d         func() Desired
		o         func() Observed
		want      []key
		withheld  []key
		conflict  string // a substring of the one conflict's reason ("" = none)
		reason    string // a substring of the takeover's reason (change or withheld)
		keep      string
		ready     bool
		takenOver bool
	}{
		{
			name: "new org: built, no record created, takeover waits for the tunnel",
			d:    byContent, o: fresh(legacy),
			want: []key{
				{ResTunnel, OpCreate, "tw-acme"},
				{ResIngress, OpUpdate, "acme.example.test"},
				{ResToken, OpCreate, ""},
				{ResInstance, OpCreate, "acme"},
			},
			withheld: []key{{ResDNS, OpTakeover, legacy.ID}},
			reason:   "waits for the tunnel to be healthy",
		},
		{
			name: "built, tunnel still connecting: nothing to do, takeover waits, not ready",
			d:    byContent, o: built("inactive", legacy),
			withheld: []key{{ResDNS, OpTakeover, legacy.ID}},
			reason:   "waits for the tunnel to be healthy (it is inactive) to replace A 192.0.2.10 with CNAME t1.cfargotunnel.com",
		},
		{
			name: "built, tunnel down: takeover still waits",
			d:    byContent, o: built("down", legacy),
			withheld: []key{{ResDNS, OpTakeover, legacy.ID}},
			reason:   "it is down",
		},
		{
			name: "tunnel healthy: the record is taken over",
			d:    byContent, o: built("healthy", legacy),
			want:   []key{{ResDNS, OpTakeover, legacy.ID}},
			reason: "replace A 192.0.2.10 with CNAME t1.cfargotunnel.com: tunnel healthy",
		},
		{
			name: "tunnel healthy but the ingress still to fix: the takeover waits for it",
			d:    byContent,
			o: func() Observed {
				o := built("healthy", legacy)()
				o.Ingress = []IngressRule{{Hostname: "old.example.test", Service: "http://localhost:8080"}}
				return o
			},
			want:     []key{{ResIngress, OpUpdate, "acme.example.test"}},
			withheld: []key{{ResDNS, OpTakeover, legacy.ID}},
			reason:   "waits for the org's other changes (ingress update) to replace A 192.0.2.10 with CNAME t1.cfargotunnel.com; the old record stays",
		},
		{
			name: "by record id alone: content is not compared",
			d:    withTakeover(Takeover{Type: "A", RecordID: legacy.ID}),
			o:    built("healthy", with(legacy, func(r *Record) { r.Content = "198.51.100.7" })),
			want: []key{{ResDNS, OpTakeover, legacy.ID}},
		},
		{
			name: "by id and content: both match",
			d:    withTakeover(Takeover{Type: "A", Content: "192.0.2.10", RecordID: legacy.ID}),
			o:    built("healthy", legacy),
			want: []key{{ResDNS, OpTakeover, legacy.ID}},
		},
		{
			name:     "content changed: conflict, nothing built, nothing replaced",
			d:        byContent,
			o:        fresh(with(legacy, func(r *Record) { r.Content = "198.51.100.7" })),
			withheld: []key{{ResTunnel, OpCreate, "tw-acme"}, {ResIngress, OpUpdate, "acme.example.test"}, {ResToken, OpCreate, ""}, {ResInstance, OpCreate, "acme"}},
			conflict: "does not match the takeover (A 192.0.2.10): it changed or is another record; nothing was replaced",
		},
		{
			name:     "by id and content: id matches, content changed: conflict",
			d:        withTakeover(Takeover{Type: "A", Content: "192.0.2.10", RecordID: legacy.ID}),
			o:        built("healthy", with(legacy, func(r *Record) { r.Content = "198.51.100.7" })),
			conflict: "does not match the takeover (A 192.0.2.10 id " + legacy.ID + ")",
		},
		{
			name:     "another record id: conflict",
			d:        withTakeover(Takeover{Type: "A", RecordID: "ffffffffffffffffffffffffffffffff"}),
			o:        built("healthy", legacy),
			conflict: "does not match the takeover",
		},
		{
			name:     "another type: conflict",
			d:        withTakeover(Takeover{Type: "AAAA", Content: "192.0.2.10"}),
			o:        built("healthy", legacy),
			conflict: "does not match the takeover",
		},
		{
			name: "AAAA content compared in canonical form",
			d:    withTakeover(Takeover{Type: "AAAA", Content: "2001:DB8:0:0:0::1"}),
			o:    built("healthy", with(legacy, func(r *Record) { r.Type, r.Content = "AAAA", "2001:db8::1" })),
			want: []key{{ResDNS, OpTakeover, legacy.ID}},
		},
		{
			name:   "CNAME content: case and trailing dot do not matter",
			d:      withTakeover(Takeover{Type: "cname", Content: "Legacy.Example.NET."}),
			o:      built("healthy", with(legacy, func(r *Record) { r.Type, r.Content = "CNAME", "legacy.example.net" })),
			want:   []key{{ResDNS, OpTakeover, legacy.ID}},
			reason: "replace CNAME legacy.example.net with CNAME t1.cfargotunnel.com",
		},
		{
			name:     "a matching record another org owns is never taken over",
			d:        byContent,
			o:        built("healthy", with(legacy, func(r *Record) { r.Comment = owner.DNSComment("other") })),
			conflict: "another org's record is never taken over",
		},
		{
			name:     "another record beside the matching one: conflict, nothing replaced",
			d:        byContent,
			o:        built("healthy", legacy, Record{ID: "r7", Name: "acme.example.test", Type: "TXT", Content: "v=spf1 -all"}),
			conflict: "TXT record acme.example.test (r7, content v=spf1 -all) does not match the takeover",
		},
		{
			name: "after the takeover: the org's own record is kept, ready",
			d:    byContent, o: converged,
			keep: "r1", ready: true,
		},
		{
			name: "takeover allowed but nothing at the name: the CNAME is created",
			d:    byContent, o: built("healthy"),
			want: []key{{ResDNS, OpCreate, "acme.example.test"}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := Compute(tc.d(), tc.o())
			if got := keys(r); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("changes:\n got %v\nwant %v\n(%v)", got, tc.want, r.Changes)
			}
			var withheld []key
			for _, c := range r.Withheld {
				withheld = append(withheld, key{c.Resource, c.Op, c.Target})
			}
			if !reflect.DeepEqual(withheld, tc.withheld) {
				t.Errorf("withheld:\n got %v\nwant %v\n(%v)", withheld, tc.withheld, r.Withheld)
			}
			switch {
			case tc.conflict == "" && len(r.Conflicts) > 0:
				t.Errorf("conflicts %v, want none", r.Conflicts)
			case tc.conflict != "" && (len(r.Conflicts) != 1 || !strings.Contains(r.Conflicts[0].Reason, tc.conflict)):
				t.Errorf("conflicts %v, want one saying %q", r.Conflicts, tc.conflict)
			}
			if tc.reason != "" {
				var c Change
				for _, x := range append(slices.Clone(r.Changes), r.Withheld...) {
					if x.Op == OpTakeover {
						c = x
					}
				}
				if !strings.Contains(c.Reason, tc.reason) {
					t.Errorf("takeover reason %q, want it to say %q", c.Reason, tc.reason)
				}
			}
			if _, waits := TakeoverWaiting(r); waits != slices.Contains(withheld, key{ResDNS, OpTakeover, legacy.ID}) {
				t.Errorf("TakeoverWaiting = %v, withheld %v", waits, withheld)
			}
			if r.KeepRecord != tc.keep || r.Ready != tc.ready {
				t.Errorf("keep record %q ready %v, want %q %v", r.KeepRecord, r.Ready, tc.keep, tc.ready)
			}
		})
	}
}

func TestMatchesTakeover(t *testing.T) {
	rec := Record{ID: "0123456789abcdef0123456789abcdef", Type: "AAAA", Content: "2001:db8::10"}
	for _, tc := range []struct {
		tk   Takeover
		want bool
	}{
		{Takeover{Type: "AAAA", Content: "2001:db8::10"}, true},
		{Takeover{Type: "aaaa", Content: "2001:0DB8:0000::0010"}, true},
		{Takeover{Type: "AAAA", Content: "2001:db8::1"}, false},
		{Takeover{Type: "A", Content: "2001:db8::10"}, false},
		{Takeover{Type: "AAAA", RecordID: "0123456789ABCDEF0123456789ABCDEF"}, true},
		{Takeover{Type: "AAAA", RecordID: "0123456789abcdef0123456789abcdee"}, false},
		{Takeover{Type: "AAAA", Content: "2001:db8::10", RecordID: "0123456789abcdef0123456789abcdee"}, false},
		{Takeover{Type: "AAAA"}, false}, // names no record
	} {
		if got := MatchesTakeover(tc.tk, rec); got != tc.want {
			t.Errorf("MatchesTakeover(%+v) = %v, want %v", tc.tk, got, tc.want)
		}
	}
}

// A token rotation's steps: started only on a converged, healthy org;
// resumed in flight; finished (old connectors dropped) once a connector not
// there before the new secret is connected; the instance replaced when none
// came within the grace.
func TestRotation(t *testing.T) {
	d := Desired{OrgID: "o", Present: true, Hostname: "o.example.test", Service: "http://localhost:8080", Generation: 1}
	converged := func(rt Rotation, status string) Observed {
		return Observed{Tunnel: &Tunnel{ID: "t", Status: status}, IngressKnown: true, Ingress: WantIngress(d),
			RecordsKnown: true, Records: []Record{{ID: "r", Name: d.Hostname, Type: "CNAME", Content: TunnelTarget("t"), Proxied: true, Comment: "tunnelward:org=o"}},
			ParamKnown: true, Param: &Param{Name: "p", TunnelID: "t"},
			InstanceKnown: true, Instances: []Instance{{ID: "i", State: "running", TunnelID: "t", Generation: 1}}, Rotation: rt}
	}
	ops := func(r Result) string {
		var out []string
		for _, c := range r.Changes {
			out = append(out, string(c.Resource)+" "+string(c.Op)+" "+c.Target)
		}
		for _, c := range r.Withheld {
			out = append(out, "withheld "+string(c.Resource)+" "+string(c.Op))
		}
		return strings.Join(out, "; ")
	}
	for _, tc := range []struct {
		name string
		ob   Observed
		want string
	}{
		{"asked, converged and healthy: starts", converged(Rotation{Want: "asked", ConnectorsKnown: true, Connectors: []string{"c1"}}, "healthy"), "token rotate t"},
		{"asked, tunnel down: withheld", converged(Rotation{Want: "asked", ConnectorsKnown: true}, "down"), "withheld token rotate"},
		{"asked, connectors not read: withheld", converged(Rotation{Want: "asked"}, "healthy"), "withheld token rotate"},
		{"in flight at the token step: resumes", converged(Rotation{Phase: RotateToken}, "healthy"), "token rotate t"},
		{"waiting, only the old connector", converged(Rotation{Phase: RotateConnect, Old: []string{"c1"}, ConnectorsKnown: true, Connectors: []string{"c1"}}, "healthy"), ""},
		{"new connector: old dropped, done", converged(Rotation{Phase: RotateConnect, Old: []string{"c1"}, ConnectorsKnown: true, Connectors: []string{"c1", "c2"}}, "healthy"), "tunnel drop c1; token rotated t"},
		{"new connector alone: done", converged(Rotation{Phase: RotateConnect, Old: []string{"c1"}, ConnectorsKnown: true, Connectors: []string{"c2"}}, "healthy"), "token rotated t"},
		{"stuck: instance replaced", converged(Rotation{Phase: RotateConnect, Old: []string{"c1"}, ConnectorsKnown: true, Connectors: []string{"c1"}, Stuck: true}, "healthy"), "instance delete i; instance create o"},
		{"stuck past its replacements: held", converged(Rotation{Phase: RotateConnect, Old: []string{"c1"}, ConnectorsKnown: true, Connectors: []string{"c1"}, Stuck: true, Replaced: MaxRotationReplacements}, "healthy"), "withheld instance create"},
		{"stuck at the remediation limit: held", func() Observed {
			o := converged(Rotation{Phase: RotateConnect, Old: []string{"c1"}, ConnectorsKnown: true, Connectors: []string{"c1"}, Stuck: true}, "healthy")
			o.Remedy.HoldReplace = true
			return o
		}(), "withheld instance create"},
	} {
		r := Compute(d, tc.ob)
		if got := ops(r); got != tc.want {
			t.Errorf("%s: %q, want %q", tc.name, got, tc.want)
		}
		if _, held := RotationHeld(r); held != strings.HasPrefix(tc.want, "withheld instance") {
			t.Errorf("%s: RotationHeld %t", tc.name, held)
		}
	}
}
