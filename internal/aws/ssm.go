package aws

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ssm"
	"github.com/aws/aws-sdk-go-v2/service/ssm/types"

	"github.com/tunnelward/tunnelward/internal/apicall"
	"github.com/tunnelward/tunnelward/internal/secret"
)

// ParamMeta is a parameter's metadata (never its value).
type ParamMeta struct {
	Name             string
	Type             string
	Version          int64
	LastModifiedDate time.Time
	KeyID            string
	Description      string
}

func toMeta(p types.ParameterMetadata) ParamMeta {
	m := ParamMeta{Name: aws.ToString(p.Name), Type: string(p.Type), Version: p.Version,
		KeyID: aws.ToString(p.KeyId), Description: aws.ToString(p.Description)}
	if p.LastModifiedDate != nil {
		m.LastModifiedDate = *p.LastModifiedDate
	}
	return m
}

// PutResult says what PutToken did.
type PutResult struct {
	Version int64
	Created bool // false: an existing parameter was overwritten
}

// PutToken stores the tunnel token as a SecureString. It first creates the
// parameter with its tags; if it already exists it overwrites the value
// without tags (SSM rejects Tags together with Overwrite). Errors never
// contain the token.
func (c *Client) PutToken(ctx context.Context, name string, tok secret.Token, tags map[string]string) (PutResult, error) {
	if tok.IsZero() {
		return PutResult{}, fmt.Errorf("ssm PutParameter %s: empty token", name)
	}
	var tagList []types.Tag
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		tagList = append(tagList, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	put := func(overwrite bool) (int64, error) {
		in := &ssm.PutParameterInput{
			Name:        aws.String(name),
			Type:        types.ParameterTypeSecureString,
			Value:       aws.String(tok.Reveal()), // the one place the token leaves the process
			Tier:        types.ParameterTierStandard,
			Description: aws.String("Cloudflare tunnel token (managed by tunnelward)"),
		}
		if overwrite {
			in.Overwrite = aws.Bool(true)
		} else {
			in.Tags = tagList
		}
		var v int64
		err := c.ssmCall.Do(ctx, "PutParameter", name, func(ctx context.Context) error {
			res, err := c.ssm.PutParameter(ctx, in)
			if err == nil {
				v = res.Version
			}
			return err
		})
		return v, redact(err, tok)
	}
	v, err := put(false)
	if err == nil {
		return PutResult{Version: v, Created: true}, nil
	}
	if !hasCode(err, "ParameterAlreadyExists") {
		return PutResult{}, err
	}
	v, err = put(true)
	if err != nil {
		return PutResult{}, err
	}
	return PutResult{Version: v}, nil
}

// DeleteParameter deletes a parameter. existed is false when it was already
// gone, which is success: deleting is idempotent.
func (c *Client) DeleteParameter(ctx context.Context, name string) (existed bool, err error) {
	err = c.ssmCall.Do(ctx, "DeleteParameter", name, func(ctx context.Context) error {
		_, err := c.ssm.DeleteParameter(ctx, &ssm.DeleteParameterInput{Name: aws.String(name)})
		return err
	})
	if hasCode(err, "ParameterNotFound") {
		return false, nil
	}
	return err == nil, err
}

// ListParameters lists the metadata of every parameter under pathPrefix
// (recursively), all pages, and says how many pages it fetched.
func (c *Client) ListParameters(ctx context.Context, pathPrefix string) ([]ParamMeta, int, error) {
	if !strings.HasPrefix(pathPrefix, "/") {
		return nil, 0, fmt.Errorf("ssm DescribeParameters: path %q must start with /", pathPrefix)
	}
	return c.describeParams(ctx, pathPrefix, types.ParameterStringFilter{
		Key: aws.String("Path"), Option: aws.String("Recursive"), Values: []string{strings.TrimSuffix(pathPrefix, "/")},
	})
}

// GetParameterMeta returns one parameter's metadata (ErrNotFound when none).
func (c *Client) GetParameterMeta(ctx context.Context, name string) (ParamMeta, error) {
	items, _, err := c.describeParams(ctx, name, types.ParameterStringFilter{
		Key: aws.String("Name"), Option: aws.String("Equals"), Values: []string{name},
	})
	if err != nil {
		return ParamMeta{}, err
	}
	for _, m := range items {
		if m.Name == name {
			return m, nil
		}
	}
	return ParamMeta{}, &apicall.Error{Provider: "ssm", Op: "DescribeParameters", Resource: name, Attempts: 1,
		Kind: ErrNotFound, Err: errors.New("no such parameter")}
}

// TagParameter adds tags to a parameter, overwriting the values of keys it
// already has (AddTagsToResource), so repeating it is harmless.
// ErrNotFound when the parameter does not exist.
func (c *Client) TagParameter(ctx context.Context, name string, tags map[string]string) error {
	keys := make([]string, 0, len(tags))
	for k := range tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	tagList := make([]types.Tag, 0, len(keys))
	for _, k := range keys {
		tagList = append(tagList, types.Tag{Key: aws.String(k), Value: aws.String(tags[k])})
	}
	err := c.ssmCall.Do(ctx, "AddTagsToResource", name, func(ctx context.Context) error {
		_, err := c.ssm.AddTagsToResource(ctx, &ssm.AddTagsToResourceInput{
			ResourceType: types.ResourceTypeForTaggingParameter, ResourceId: aws.String(name), Tags: tagList})
		return err
	})
	if hasCode(err, "InvalidResourceId", "ParameterNotFound") {
		return apicall.WithKind(err, ErrNotFound)
	}
	return err
}

// ParameterTags returns a parameter's tags (ErrNotFound when none), so an
// owner check can precede an overwrite or a delete.
func (c *Client) ParameterTags(ctx context.Context, name string) (map[string]string, error) {
	out := map[string]string{}
	err := c.ssmCall.Do(ctx, "ListTagsForResource", name, func(ctx context.Context) error {
		res, err := c.ssm.ListTagsForResource(ctx, &ssm.ListTagsForResourceInput{
			ResourceType: types.ResourceTypeForTaggingParameter, ResourceId: aws.String(name)})
		if err != nil {
			return err
		}
		clear(out)
		for _, t := range res.TagList {
			out[aws.ToString(t.Key)] = aws.ToString(t.Value)
		}
		return nil
	})
	if hasCode(err, "InvalidResourceId", "ParameterNotFound") {
		return nil, apicall.WithKind(err, ErrNotFound)
	}
	return out, err
}

func (c *Client) describeParams(ctx context.Context, what string, f types.ParameterStringFilter) ([]ParamMeta, int, error) {
	in := &ssm.DescribeParametersInput{ParameterFilters: []types.ParameterStringFilter{f}, MaxResults: aws.Int32(50)}
	if c.pageSize > 0 {
		in.MaxResults = aws.Int32(int32(min(50, c.pageSize)))
	}
	p := ssm.NewDescribeParametersPaginator(c.ssm, in)
	var out []ParamMeta
	pages, err := allPages(ctx, c.ssmCall, "DescribeParameters", what, p.HasMorePages, p.NextPage, func(res *ssm.DescribeParametersOutput) {
		for _, m := range res.Parameters {
			out = append(out, toMeta(m))
		}
	})
	if err != nil {
		return nil, pages, err
	}
	return out, pages, nil
}

// DocumentRunShellScript is the SSM document SendCommand runs.
const DocumentRunShellScript = "AWS-RunShellScript"

// SendCommand runs shell commands on one instance through SSM Run Command
// and returns the command id.
func (c *Client) SendCommand(ctx context.Context, instanceID string, commands []string, comment string) (string, error) {
	if len(commands) == 0 {
		return "", fmt.Errorf("ssm SendCommand %s: no commands", instanceID)
	}
	var id string
	err := c.ssmCall.Do(ctx, "SendCommand", instanceID, func(ctx context.Context) error {
		res, err := c.ssm.SendCommand(ctx, &ssm.SendCommandInput{
			DocumentName:   aws.String(DocumentRunShellScript),
			InstanceIds:    []string{instanceID},
			Parameters:     map[string][]string{"commands": commands},
			Comment:        aws.String(comment),
			TimeoutSeconds: aws.Int32(60),
		})
		if err != nil {
			return err
		}
		if res.Command == nil || aws.ToString(res.Command.CommandId) == "" {
			return errors.New("SendCommand returned no command id")
		}
		id = aws.ToString(res.Command.CommandId)
		return nil
	})
	if hasCode(err, "InvalidInstanceId") {
		return "", apicall.WithKind(err, ErrNotFound)
	}
	return id, err
}

// Invocation is a command's result on one instance.
type Invocation struct {
	Status   string // Pending, InProgress, Delayed, Success, Cancelled, TimedOut, Failed, ...
	StdOut   string
	StdErr   string
	ExitCode int32
}

// Done reports whether the invocation reached a final status.
func (i Invocation) Done() bool {
	switch i.Status {
	case "Pending", "InProgress", "Delayed", "":
		return false
	}
	return true
}

// GetCommandInvocation reads a command's result on an instance. Right after
// SendCommand the invocation may not exist yet: ErrNotFound, poll again.
func (c *Client) GetCommandInvocation(ctx context.Context, commandID, instanceID string) (Invocation, error) {
	var out Invocation
	err := c.ssmCall.Do(ctx, "GetCommandInvocation", commandID+" on "+instanceID, func(ctx context.Context) error {
		res, err := c.ssm.GetCommandInvocation(ctx, &ssm.GetCommandInvocationInput{
			CommandId: aws.String(commandID), InstanceId: aws.String(instanceID)})
		if err != nil {
			return err
		}
		out = Invocation{Status: string(res.Status), StdOut: aws.ToString(res.StandardOutputContent),
			StdErr: aws.ToString(res.StandardErrorContent), ExitCode: res.ResponseCode}
		return nil
	})
	if hasCode(err, "InvocationDoesNotExist") {
		return Invocation{}, apicall.WithKind(err, ErrNotFound)
	}
	return out, err
}

// redact hides tok in err's text should any layer ever echo the request.
func redact(err error, tok secret.Token) error {
	if err == nil || tok.IsZero() || !strings.Contains(err.Error(), tok.Reveal()) {
		return err
	}
	return redactedError{err: err, tok: tok}
}

type redactedError struct {
	err error
	tok secret.Token
}

func (e redactedError) Error() string {
	return strings.ReplaceAll(e.err.Error(), e.tok.Reveal(), secret.Redacted)
}
func (e redactedError) Unwrap() error { return e.err }
