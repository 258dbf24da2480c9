package deploy

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"

	"github.com/tunnelward/tunnelward/internal/config"
)

// stringOrList is IAM's "a string or a list of strings".
type stringOrList []string

func (s *stringOrList) UnmarshalJSON(b []byte) error {
	var one string
	if err := json.Unmarshal(b, &one); err == nil {
		*s = []string{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(b, &many); err != nil {
		return err
	}
	*s = many
	return nil
}

type statement struct {
	Sid       string                             `json:"Sid"`
	Effect    string                             `json:"Effect"`
	Principal map[string]stringOrList            `json:"Principal"`
	Action    stringOrList                       `json:"Action"`
	Resource  stringOrList                       `json:"Resource"`
	Condition map[string]map[string]stringOrList `json:"Condition"`
}

type policy struct {
	Version   string      `json:"Version"`
	Statement []statement `json:"Statement"`
}

// loadPolicy parses a policy strictly: unknown elements (a typo like
// "Actions") are errors, as they are to IAM.
func loadPolicy(t *testing.T, name string) policy {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "iam", name))
	if err != nil {
		t.Fatal(err)
	}
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	var p policy
	if err := dec.Decode(&p); err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	if p.Version != "2012-10-17" {
		t.Errorf("%s: Version %q, want 2012-10-17 (policy variables need it)", name, p.Version)
	}
	sids := map[string]bool{}
	for _, s := range p.Statement {
		if s.Sid == "" || sids[s.Sid] {
			t.Errorf("%s: statement Sid %q missing or repeated", name, s.Sid)
		}
		sids[s.Sid] = true
		if s.Effect != "Allow" {
			t.Errorf("%s/%s: Effect %q", name, s.Sid, s.Effect)
		}
		if len(s.Action) == 0 {
			t.Errorf("%s/%s: no Action", name, s.Sid)
		}
		for _, a := range s.Action {
			svc, act, ok := strings.Cut(a, ":")
			if a == "*" || !ok || svc == "" || act == "" || strings.Contains(act, "*") {
				t.Errorf("%s/%s: action %q is a wildcard or malformed; name each action", name, s.Sid, a)
			}
		}
	}
	return p
}

// noResourceLevel are the actions IAM cannot scope to a resource, the only
// ones allowed on "*".
var noResourceLevel = []string{
	"ec2:DescribeInstances", "ec2:DescribeInstanceStatus", "ec2:DescribeTags",
	"ssm:DescribeParameters", "ssm:GetCommandInvocation", "ssm:ListCommandInvocations",
	"ec2messages:AcknowledgeMessage", "ec2messages:DeleteMessage", "ec2messages:FailMessage",
	"ec2messages:GetEndpoint", "ec2messages:GetMessages", "ec2messages:SendReply",
	"ssmmessages:CreateControlChannel", "ssmmessages:CreateDataChannel",
	"ssmmessages:OpenControlChannel", "ssmmessages:OpenDataChannel",
}

func checkResources(t *testing.T, name string, p policy) {
	t.Helper()
	paramARN := "arn:aws:ssm:*:*:parameter" + config.DefaultSSMPathPrefix
	for _, s := range p.Statement {
		if len(s.Resource) == 0 {
			t.Errorf("%s/%s: no Resource", name, s.Sid)
		}
		for _, r := range s.Resource {
			if r == "*" {
				for _, a := range s.Action {
					if !slices.Contains(noResourceLevel, a) {
						t.Errorf("%s/%s: %s on every resource; scope it", name, s.Sid, a)
					}
				}
			}
			if strings.HasPrefix(r, "arn:aws:ssm:") && strings.Contains(r, ":parameter") && r != paramARN && !strings.HasPrefix(r, paramARN+"/") {
				t.Errorf("%s/%s: parameter resource %s is outside %s", name, s.Sid, r, config.DefaultSSMPathPrefix)
			}
		}
	}
}

// cond returns the values of a condition key under an operator.
func cond(s statement, op, key string) []string { return s.Condition[op][key] }

func statementsFor(p policy, action string) []statement {
	var out []statement
	for _, s := range p.Statement {
		if slices.Contains(s.Action, action) {
			out = append(out, s)
		}
	}
	return out
}

// awsCalls lists the EC2 and SSM API operations internal/aws calls (direct
// calls and paginators), as IAM action names, so the policy cannot fall
// behind the code.
func awsCalls(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob(filepath.Join(repoRoot(t), "internal", "aws", "*.go"))
	if err != nil {
		t.Fatal(err)
	}
	call := regexp.MustCompile(`\.(ec2|ssm)\.([A-Z][A-Za-z]+)\(`)
	pager := regexp.MustCompile(`\b(ec2|ssm)\.New([A-Z][A-Za-z]+)Paginator\(`)
	var out []string
	add := func(svc, op string) {
		if a := svc + ":" + op; !slices.Contains(out, a) {
			out = append(out, a)
		}
	}
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		b, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range call.FindAllSubmatch(b, -1) {
			add(string(m[1]), string(m[2]))
		}
		for _, m := range pager.FindAllSubmatch(b, -1) {
			add(string(m[1]), string(m[2]))
		}
	}
	if len(out) == 0 {
		t.Fatal("found no EC2 or SSM calls in internal/aws")
	}
	return out
}

func TestReconcilerPolicy(t *testing.T) {
	const name = "reconciler-policy.json"
	p := loadPolicy(t, name)
	checkResources(t, name, p)
	// Everything the AWS client calls, plus what those calls imply: tags in
	// RunInstances and PutParameter need CreateTags and AddTagsToResource,
	// an instance profile needs PassRole.
	need := append(awsCalls(t), "ec2:CreateTags", "ssm:AddTagsToResource", "iam:PassRole")
	for _, a := range need {
		if len(statementsFor(p, a)) == 0 {
			t.Errorf("%s does not allow %s, which the reconciler needs", name, a)
		}
	}
	for _, s := range p.Statement {
		for _, a := range s.Action {
			if !slices.Contains(need, a) && a != "kms:Encrypt" {
				t.Errorf("%s/%s: %s is allowed but the reconciler never calls it", name, s.Sid, a)
			}
		}
	}
	for _, s := range p.Statement {
		for _, a := range s.Action {
			if strings.HasPrefix(a, "iam:") && a != "iam:PassRole" {
				t.Errorf("%s/%s: %s; the reconciler needs no IAM action but PassRole", name, s.Sid, a)
			}
			if strings.HasSuffix(a, "Decrypt") || strings.HasPrefix(a, "ssm:GetParameter") {
				t.Errorf("%s/%s: %s; the reconciler never reads a token back", name, s.Sid, a)
			}
		}
		onInstances := slices.Contains(s.Resource, "arn:aws:ec2:*:*:instance/*")
		for _, a := range s.Action {
			switch {
			case !onInstances:
			case a == "ec2:TerminateInstances" || a == "ec2:RebootInstances":
				if !slices.Equal(cond(s, "StringEquals", "aws:ResourceTag/ManagedBy"), []string{"tunnelward"}) {
					t.Errorf("%s/%s: %s not limited to instances tagged ManagedBy=tunnelward", name, s.Sid, a)
				}
			case a == "ec2:RunInstances":
				if !slices.Equal(cond(s, "StringEquals", "aws:RequestTag/ManagedBy"), []string{"tunnelward"}) {
					t.Errorf("%s/%s: RunInstances does not require the ManagedBy=tunnelward tag", name, s.Sid)
				}
				if len(cond(s, "ArnLike", "ec2:InstanceProfile")) == 0 {
					t.Errorf("%s/%s: RunInstances may attach any instance profile", name, s.Sid)
				}
			case a == "ec2:CreateTags":
				tagOwned := slices.Equal(cond(s, "StringEquals", "aws:ResourceTag/ManagedBy"), []string{"tunnelward"})
				onLaunch := slices.Equal(cond(s, "StringEquals", "ec2:CreateAction"), []string{"RunInstances"})
				if !tagOwned && !onLaunch {
					t.Errorf("%s/%s: CreateTags could mark a foreign instance as tunnelward's", name, s.Sid)
				}
				if tagOwned && slices.Contains(cond(s, "ForAllValues:StringEquals", "aws:TagKeys"), "ManagedBy") {
					t.Errorf("%s/%s: retagging may set ManagedBy", name, s.Sid)
				}
			case a == "ssm:SendCommand":
				if !slices.Equal(cond(s, "StringEquals", "ssm:resourceTag/ManagedBy"), []string{"tunnelward"}) {
					t.Errorf("%s/%s: SendCommand not limited to instances tagged ManagedBy=tunnelward", name, s.Sid)
				}
			}
		}
	}
	for _, s := range statementsFor(p, "iam:PassRole") {
		for _, r := range s.Resource {
			if !strings.HasPrefix(r, "arn:aws:iam::") || !strings.Contains(r, ":role/") || strings.HasSuffix(r, "/*") {
				t.Errorf("%s/%s: PassRole on %s; name the instance role only", name, s.Sid, r)
			}
		}
		if !slices.Equal(cond(s, "StringEquals", "iam:PassedToService"), []string{"ec2.amazonaws.com"}) {
			t.Errorf("%s/%s: PassRole not limited to EC2", name, s.Sid)
		}
	}
	for _, s := range statementsFor(p, "ssm:SendCommand") {
		for _, r := range s.Resource {
			if strings.Contains(r, ":document/") && r != "arn:aws:ssm:*::document/AWS-RunShellScript" {
				t.Errorf("%s/%s: SendCommand may run document %s", name, s.Sid, r)
			}
		}
	}
}

func TestInstanceRolePolicy(t *testing.T) {
	const name = "instance-role-policy.json"
	p := loadPolicy(t, name)
	checkResources(t, name, p)
	reads := statementsFor(p, "ssm:GetParameter")
	if len(reads) != 1 {
		t.Fatalf("%s: %d statements allow ssm:GetParameter, want 1", name, len(reads))
	}
	// The instance reads one parameter: the one tagged with its own ARN.
	if got := cond(reads[0], "StringEquals", "ssm:resourceTag/InstanceArn"); !slices.Equal(got, []string{"${ec2:SourceInstanceARN}"}) {
		t.Errorf("%s: GetParameter is not limited to the parameter tagged with the caller's instance ARN: %v", name, got)
	}
	for _, s := range p.Statement {
		for _, a := range s.Action {
			switch {
			case strings.HasPrefix(a, "ec2:"), strings.HasPrefix(a, "iam:"), a == "ssm:PutParameter", a == "ssm:DeleteParameter",
				a == "ssm:GetParameters", a == "ssm:GetParametersByPath", a == "ssm:SendCommand", a == "kms:Encrypt":
				t.Errorf("%s/%s: the instance role must not have %s", name, s.Sid, a)
			case a == "kms:Decrypt":
				if !slices.Equal(cond(s, "StringLike", "kms:ViaService"), []string{"ssm.*.amazonaws.com"}) {
					t.Errorf("%s/%s: kms:Decrypt usable outside SSM", name, s.Sid)
				}
			}
		}
	}
}

func TestInstanceRoleTrust(t *testing.T) {
	const name = "instance-role-trust.json"
	p := loadPolicy(t, name)
	if len(p.Statement) != 1 {
		t.Fatalf("%s: %d statements, want 1", name, len(p.Statement))
	}
	s := p.Statement[0]
	if !slices.Equal(s.Principal["Service"], []string{"ec2.amazonaws.com"}) || !slices.Equal(s.Action, []string{"sts:AssumeRole"}) {
		t.Errorf("%s: want only ec2.amazonaws.com to assume the role, got %v %v", name, s.Principal, s.Action)
	}
}
