package reliability

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"

	"github.com/tunnelward/tunnelward/internal/events"
)

// Crash scenario for issue 16's cutover of an existing tenant: the org's
// hostname is served by an A record tunnelward did not make, and
// org.created names it in data.takeover. The takeover is one DNS batch
// (delete the A record, post the org's CNAME); killed just before it (the
// old record stays: the next process takes it over) or just after it (the
// CNAME stands unrecorded: the next process adopts it), the org ends Ready
// with its CNAME the only record at the name, and the replaced record
// recorded for a rollback.
const (
	cutoverOrg = "cutover"
	cutoverIP  = "192.0.2.10"
	// The emulator's default identity (DESIGN §4).
	sandboxZoneID   = "f0e1d2c3b4a5968778695a4b3c2d1e0f"
	sandboxZoneName = "sandbox.tunnelward.test"
	sandboxCFToken  = "sandbox-token"
)

func init() {
	crashScenarios = append(crashScenarios, crashScenario{name: "cutover", act: func(w *world) {
		w.legacyRecord(cutoverOrg+"."+sandboxZoneName, "A", cutoverIP)
		w.publish(events.Created{OrgID: cutoverOrg, Slug: cutoverOrg,
			Takeover: &events.Takeover{Type: events.TakeoverA, Content: cutoverIP}})
	}, timeout: 45 * time.Second, check: func(w *world) string { return w.cutOver(cutoverOrg, cutoverIP) }})
	crashPointsQuick["cutover"] = []string{"cloud.after.cf.dns.batch:1"} // the heavy run kills at every point
}

// legacyRecord makes a record as the tenant's old provisioning did, through
// the emulator's Cloudflare API (the world's emulator is another process).
func (w *world) legacyRecord(name, typ, content string) {
	w.t.Helper()
	body, _ := json.Marshal(map[string]any{"type": typ, "name": name, "content": content, "ttl": 300, "comment": "legacy provisioning"})
	req, err := http.NewRequest(http.MethodPost, w.simURL()+"/client/v4/zones/"+sandboxZoneID+"/dns_records", bytes.NewReader(body))
	if err != nil {
		w.t.Fatal(err)
	}
	req.Header.Set("Authorization", "Bearer "+sandboxCFToken)
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		w.t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		w.t.Fatalf("preload %s %s %s: status %d", typ, name, content, resp.StatusCode)
	}
}

// cutOver says what is wrong ("" nothing) with org's cutover: the org's
// CNAME is the only record at its name, it is the recorded one, and the
// replaced record is recorded with its content.
func (w *world) cutOver(org, content string) string {
	var st struct {
		DNSRecords []struct{ ID, Name, Type, Content string } `json:"dns_records"`
	}
	if err := getJSON(w.simURL()+"/_sim/state", &st); err != nil {
		return err.Error()
	}
	orgs, err := w.orgs()
	if err != nil {
		return err.Error()
	}
	o := orgs[org]
	var at []string
	for _, r := range st.DNSRecords {
		if strings.EqualFold(r.Name, org+"."+sandboxZoneName) {
			at = append(at, r.Type+" "+r.Content)
			if r.Type != "CNAME" || r.ID != o.Observed.DNSRecordID {
				return fmt.Sprintf("%s %s (%s) at the name; want only the org's recorded CNAME %s", r.Type, r.Content, r.ID, o.Observed.DNSRecordID)
			}
		}
	}
	if len(at) != 1 {
		return fmt.Sprintf("the name holds %q; want one CNAME", at)
	}
	if rp := o.Observed.Replaced; rp.Type != "A" || rp.Content != content || rp.ID == "" {
		return fmt.Sprintf("replaced record %+v; want the A record %s", rp, content)
	}
	return ""
}
