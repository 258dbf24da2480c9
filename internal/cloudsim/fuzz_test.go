package cloudsim

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"encoding/xml"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
)

// Fuzz targets for the emulator's request parsers: EC2 query forms, SSM
// JSON bodies and Cloudflare request bodies and paths. Each input runs
// against a small world (a tunnel, a DNS record, an instance, a parameter)
// through the real handler, signed or authenticated like an SDK's request,
// so the fuzzer reaches the parsers behind authentication. The properties:
// nothing panics, every answer is the provider's error or success format,
// and the invariant checker still runs. Seeds live in testdata/fuzz/<Name>.
//
//	go test ./internal/cloudsim -run '^$' -fuzz FuzzEC2Form -fuzztime 60s

// fuzzWorld returns a fresh emulator holding one of everything.
func fuzzWorld(t *testing.T) *Sim {
	cfg := DefaultConfig()
	cfg.Limits = RateLimits{}
	cfg.BootDelay, cfg.ConnectDelay, cfg.ShutdownDelay = 0, 0, 0
	s := New(cfg)
	h := s.Handler()
	do := func(r *http.Request) {
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != http.StatusOK {
			t.Fatalf("fuzz world setup %s %s: %d %s", r.Method, r.URL, w.Code, w.Body)
		}
	}
	do(cfRequest(s, "POST", "accounts/"+cfg.AccountID+"/cfd_tunnel", `{"name":"tw-acme","config_src":"cloudflare"}`))
	do(cfRequest(s, "POST", "zones/"+cfg.ZoneID+"/dns_records", `{"type":"CNAME","name":"acme","content":"x.cfargotunnel.com","proxied":true,"comment":"tunnelward:org=acme"}`))
	do(awsRequest(t, s, "ssm", "AmazonSSM.PutParameter", `{"Name":"/tunnelward/acme/tunnel-token","Type":"SecureString","Value":"v","Tags":[{"Key":"ManagedBy","Value":"tunnelward"},{"Key":"OrgID","Value":"acme"}]}`))
	do(awsRequest(t, s, "ec2", "", "Action=RunInstances&Version=2016-11-15&ImageId=ami-12345678&InstanceType=t3.micro&MinCount=1&MaxCount=1&ClientToken=tok-1&TagSpecification.1.ResourceType=instance&TagSpecification.1.Tag.1.Key=OrgID&TagSpecification.1.Tag.1.Value=acme"))
	return s
}

func cfRequest(s *Sim, method, path, body string) *http.Request {
	r := httptest.NewRequest(method, "http://sim/client/v4/"+path, strings.NewReader(body))
	r.Header.Set("Authorization", "Bearer "+s.cfg.CFToken)
	r.Header.Set("Content-Type", "application/json")
	return r
}

// awsRequest builds a SigV4-signed POST as aws-sdk-go-v2 sends it: a form
// for EC2, JSON 1.1 with X-Amz-Target for SSM.
func awsRequest(t *testing.T, s *Sim, service, target, body string) *http.Request {
	r := httptest.NewRequest(http.MethodPost, "http://sim/", strings.NewReader(body))
	if target != "" {
		r.Header.Set("X-Amz-Target", target)
		r.Header.Set("Content-Type", "application/x-amz-json-1.1")
	} else {
		r.Header.Set("Content-Type", "application/x-www-form-urlencoded; charset=utf-8")
	}
	sum := sha256.Sum256([]byte(body))
	creds := aws.Credentials{AccessKeyID: s.cfg.AWSAccessKey, SecretAccessKey: s.cfg.AWSSecret}
	if err := v4.NewSigner().SignHTTP(context.Background(), creds, r, hex.EncodeToString(sum[:]), service, s.cfg.Region, time.Now()); err != nil {
		t.Fatal(err)
	}
	// A server sees Content-Length as a header (the signer may sign it);
	// httptest.NewRequest keeps it only in the field.
	r.Header.Set("Content-Length", strconv.Itoa(len(body)))
	return r
}

// serve runs one request and checks the answer is a real HTTP status.
func serve(t *testing.T, s *Sim, r *http.Request) *httptest.ResponseRecorder {
	w := httptest.NewRecorder()
	s.Handler().ServeHTTP(w, r)
	if w.Code < 200 || w.Code > 599 {
		t.Fatalf("%s %s: status %d", r.Method, r.URL, w.Code)
	}
	return w
}

func afterFuzz(t *testing.T, s *Sim) {
	_ = s.CheckInvariants([]string{"acme"})
	if _, err := json.Marshal(s.State()); err != nil {
		t.Fatalf("state no longer encodes: %v", err)
	}
}

func FuzzEC2Form(f *testing.F) {
	for _, seed := range []string{
		"Action=DescribeInstances&Version=2016-11-15",
		"Action=DescribeInstances&Version=2016-11-15&Filter.1.Name=tag:OrgID&Filter.1.Value.1=acme&MaxResults=5",
		"Action=DescribeInstances&Version=2016-11-15&NextToken=zzz&MaxResults=1000",
		"Action=RunInstances&Version=2016-11-15&ImageId=ami-1&InstanceType=t3.micro&MinCount=1&MaxCount=1&ClientToken=tok-2&UserData=IyEvYmluL3No",
		"Action=TerminateInstances&Version=2016-11-15&InstanceId.1=i-0000000000000001",
		"Action=CreateTags&Version=2016-11-15&ResourceId.1=i-1&Tag.1.Key=a&Tag.1.Value=b",
		"Action=RebootInstances&Version=2016-11-15&InstanceId.999999999999=x",
		"Action=RunInstances&Version=2016-11-15&MinCount=-1&MaxCount=99999999999999999999",
		"%zz=1",
	} {
		f.Add(seed)
	}
	f.Fuzz(func(t *testing.T, form string) {
		s := fuzzWorld(t)
		w := serve(t, s, awsRequest(t, s, "ec2", "", form))
		if !bytes.HasPrefix(bytes.TrimSpace(w.Body.Bytes()), []byte("<")) {
			t.Fatalf("EC2 answer %d is not XML: %q", w.Code, w.Body)
		}
		if err := xml.Unmarshal(w.Body.Bytes(), new(struct{})); err != nil {
			t.Fatalf("EC2 answer %d does not parse as XML: %v: %q", w.Code, err, w.Body)
		}
		afterFuzz(t, s)
	})
}

func FuzzSSMJSON(f *testing.F) {
	for _, seed := range [][2]string{
		{"PutParameter", `{"Name":"/tunnelward/b/tunnel-token","Type":"SecureString","Value":"x","Overwrite":true}`},
		{"PutParameter", `{"Name":"/tunnelward/b/tunnel-token","Type":"SecureString","Value":"x","Overwrite":true,"Tags":[{"Key":"a","Value":"b"}]}`},
		{"GetParameter", `{"Name":"/tunnelward/acme/tunnel-token","WithDecryption":true}`},
		{"DeleteParameter", `{"Name":"/tunnelward/acme/tunnel-token"}`},
		{"GetParametersByPath", `{"Path":"/tunnelward","Recursive":true,"MaxResults":1,"ParameterFilters":[{"Key":"Type","Option":"Equals","Values":["SecureString"]}]}`},
		{"DescribeParameters", `{"ParameterFilters":[{"Key":"tag:OrgID","Values":["acme"]}],"NextToken":"!!"}`},
		{"SendCommand", `{"DocumentName":"AWS-RunShellScript","InstanceIds":["i-1"],"Parameters":{"commands":["systemctl restart cloudflared"]}}`},
		{"GetCommandInvocation", `{"CommandId":"c","InstanceId":"i-1"}`},
		{"AddTagsToResource", `{"ResourceType":"Parameter","ResourceId":"/tunnelward/acme/tunnel-token","Tags":[{"Key":"k","Value":"v"}]}`},
		{"PutParameter", `{"Name":1}`},
		{"Nope", `[]`},
	} {
		f.Add(seed[0], []byte(seed[1]))
	}
	f.Fuzz(func(t *testing.T, op string, body []byte) {
		s := fuzzWorld(t)
		w := serve(t, s, awsRequest(t, s, "ssm", "AmazonSSM."+op, string(body)))
		var out map[string]any
		if err := json.Unmarshal(w.Body.Bytes(), &out); err != nil {
			t.Fatalf("SSM answer %d is not a JSON object: %v: %q", w.Code, err, w.Body)
		}
		if w.Code != http.StatusOK {
			if typ, _ := out["__type"].(string); typ == "" {
				t.Fatalf("SSM error %d without __type: %q", w.Code, w.Body)
			}
		}
		afterFuzz(t, s)
	})
}

func FuzzCloudflare(f *testing.F) {
	acct, zone := DefaultAccountID, DefaultZoneID
	for _, seed := range [][3]string{
		{"POST", "accounts/" + acct + "/cfd_tunnel", `{"name":"tw-b","config_src":"cloudflare"}`},
		{"GET", "accounts/" + acct + "/cfd_tunnel?name=tw-acme&is_deleted=false&per_page=1&page=2", ``},
		{"PUT", "accounts/" + acct + "/cfd_tunnel/ID/configurations", `{"config":{"ingress":[{"hostname":"a.sandbox.tunnelward.test","service":"http://localhost:8080"},{"service":"http_status:404"}]}}`},
		{"PATCH", "accounts/" + acct + "/cfd_tunnel/ID", `{"name":"x","tunnel_secret":"AAAA"}`},
		{"DELETE", "accounts/" + acct + "/cfd_tunnel/ID/connections?client_id=z", ``},
		{"POST", "zones/" + zone + "/dns_records", `{"type":"CNAME","name":"b","content":"t.cfargotunnel.com","proxied":true,"ttl":1,"comment":"tunnelward:org=b"}`},
		{"GET", "zones/" + zone + "/dns_records?name.exact=acme.sandbox.tunnelward.test&match=any&order=name&direction=desc&per_page=5000", ``},
		{"PATCH", "zones/" + zone + "/dns_records/ID", `{"proxied":"yes","ttl":-5}`},
		{"PUT", "zones/" + zone + "/dns_records/ID", `{"type":"A","name":"@","content":"1.2.3.4"}`},
		{"POST", "zones/" + zone + "/dns_records", `[1,2]`},
	} {
		f.Add(seed[0], seed[1], []byte(seed[2]))
	}
	methods := []string{"GET", "POST", "PUT", "PATCH", "DELETE"}
	f.Fuzz(func(t *testing.T, method, path string, body []byte) {
		s := fuzzWorld(t)
		if len(method) > 0 {
			method = methods[int(method[0])%len(methods)]
		} else {
			method = "GET"
		}
		// ID in a path names the world's real tunnel or record.
		st := s.State()
		if len(st.Tunnels) > 0 {
			id, _ := st.Tunnels[0]["id"].(string)
			path = strings.Replace(path, "cfd_tunnel/ID", "cfd_tunnel/"+id, 1)
		}
		if len(st.DNSRecords) > 0 {
			id, _ := st.DNSRecords[0]["id"].(string)
			path = strings.Replace(path, "dns_records/ID", "dns_records/"+id, 1)
		}
		u, err := url.Parse("http://sim/client/v4/" + path)
		if err != nil {
			return // not a request a client can send
		}
		r := httptest.NewRequest(method, "http://sim/", bytes.NewReader(body))
		r.URL = u
		r.Header.Set("Authorization", "Bearer "+s.cfg.CFToken)
		w := serve(t, s, r)
		var env struct {
			Success *bool             `json:"success"`
			Errors  []json.RawMessage `json:"errors"`
		}
		if err := json.Unmarshal(w.Body.Bytes(), &env); err != nil || env.Success == nil {
			t.Fatalf("Cloudflare answer %d is not the v4 envelope: %v: %q", w.Code, err, w.Body)
		}
		if *env.Success != (w.Code == http.StatusOK) || (!*env.Success && len(env.Errors) == 0) {
			t.Fatalf("Cloudflare answer %d has success=%v errors=%d", w.Code, *env.Success, len(env.Errors))
		}
		if ct := w.Header().Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
			t.Fatalf("Cloudflare answer Content-Type %q", ct)
		}
		afterFuzz(t, s)
	})
}
