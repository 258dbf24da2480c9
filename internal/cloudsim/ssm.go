package cloudsim

// The SSM JSON 1.1 API (X-Amz-Target: AmazonSSM.<Operation>, Content-Type
// application/x-amz-json-1.1): Parameter Store and Run Command, as
// aws-sdk-go-v2's service/ssm sends and parses them. Errors are
// {"__type":"<Code>","message":"..."} with HTTP 400 (500 for server faults).

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"
)

const (
	ssmStandardValueMax = 4096
	ssmAdvancedValueMax = 8192
	ssmNameMax          = 2048
	ssmTagsMax          = 50
	ssmDepthMax         = 15
	ssmOutputMax        = 24000 // GetCommandInvocation truncates stdout/stderr here
	ssmDefaultKeyID     = "alias/aws/ssm"
	// ssmCommandRunDelay is how long a Run Command invocation stays
	// Pending/InProgress before its script runs.
	ssmCommandRunDelay = 200 * time.Millisecond
	// ssmInvocationVisibleDelay: as on AWS, GetCommandInvocation answers
	// InvocationDoesNotExist for a moment after SendCommand (the CLI's
	// command-executed waiter retries on exactly that), so clients must
	// treat it as "not yet".
	ssmInvocationVisibleDelay = 100 * time.Millisecond
)

var reSSMSegment = regexp.MustCompile(`^[a-zA-Z0-9_.\-]+$`)

type ssmError struct {
	Status  int
	Type    string
	Message string
}

func ssmErr(typ, format string, a ...any) *ssmError {
	return &ssmError{Status: http.StatusBadRequest, Type: typ, Message: fmt.Sprintf(format, a...)}
}

func ssmValidation(format string, a ...any) *ssmError {
	return ssmErr("ValidationException", format, a...)
}

func writeSSMError(w http.ResponseWriter, e *ssmError) {
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", newRequestID())
	w.WriteHeader(e.Status)
	_ = json.NewEncoder(w).Encode(map[string]string{"__type": e.Type, "message": e.Message})
}

// ssmTime is a timestamp as awsJson sends it: epoch seconds, fractional.
type ssmTime time.Time

func (t ssmTime) MarshalJSON() ([]byte, error) {
	ms := time.Time(t).UnixMilli()
	return []byte(fmt.Sprintf("%d.%03d", ms/1000, ms%1000)), nil
}

// serveSSM serves the SSM JSON 1.1 API.
func (s *Sim) serveSSM(w http.ResponseWriter, r *http.Request) {
	name := strings.TrimPrefix(r.Header.Get("X-Amz-Target"), "AmazonSSM.")
	op := "ssm." + name
	fail := func(e *ssmError) {
		s.countCall(op, e.Status)
		writeSSMError(w, e)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAWSBody+1))
	if err != nil || len(body) > maxAWSBody {
		fail(ssmErr("SerializationException", "request body unreadable or larger than %d bytes", maxAWSBody))
		return
	}
	region, ae := s.verifySigV4(r, body, "ssm")
	if ae != nil {
		switch {
		case ae.Missing:
			fail(ssmErr("MissingAuthenticationTokenException", "%s", ae.Message))
		case ae.BadKey:
			fail(ssmErr("UnrecognizedClientException", "%s", ae.Message))
		default:
			fail(ssmErr("InvalidSignatureException", "%s", ae.Message))
		}
		return
	}
	if r.Method != http.MethodPost {
		fail(ssmErr("UnknownOperationException", "SSM accepts POST only"))
		return
	}
	type handlerFn func(region string, body []byte) (any, *ssmError)
	handlers := map[string]handlerFn{
		"PutParameter":           s.ssmPutParameter,
		"GetParameter":           s.ssmGetParameter,
		"GetParameters":          s.ssmGetParameters,
		"DeleteParameter":        s.ssmDeleteParameter,
		"GetParametersByPath":    s.ssmGetParametersByPath,
		"DescribeParameters":     s.ssmDescribeParameters,
		"ListTagsForResource":    s.ssmListTagsForResource,
		"AddTagsToResource":      s.ssmAddTagsToResource,
		"RemoveTagsFromResource": s.ssmRemoveTagsFromResource,
		"SendCommand":            s.ssmSendCommand,
		"GetCommandInvocation":   s.ssmGetCommandInvocation,
	}
	h, ok := handlers[name]
	if !ok {
		fail(ssmErr("UnknownOperationException", "Operation %q is not served by this endpoint", name))
		return
	}
	if len(body) == 0 {
		body = []byte("{}")
	}

	f := s.injectFaultIn(r.Context(), op, region)
	w, cut := s.loseResponse(w, op, f)
	defer cut()
	switch f.Kind {
	case FaultHang:
		s.countCall(op, 0)
		return
	case FaultThrottle:
		fail(&ssmError{Status: http.StatusBadRequest, Type: "ThrottlingException", Message: "Rate exceeded"})
		return
	case FaultError:
		st := f.Status
		if st == 0 {
			st = http.StatusInternalServerError
		}
		fail(&ssmError{Status: st, Type: "InternalServerError", Message: "An internal error has occurred"})
		return
	}

	s.mu.Lock()
	s.tick()
	out, e := h(region, body)
	s.changedBy(op)
	s.mu.Unlock()
	if e != nil {
		fail(e)
		return
	}
	b, err := json.Marshal(out)
	if err != nil {
		fail(&ssmError{Status: http.StatusInternalServerError, Type: "InternalServerError", Message: "encoding the response: " + err.Error()})
		return
	}
	s.countCall(op, http.StatusOK)
	w.Header().Set("Content-Type", "application/x-amz-json-1.1")
	w.Header().Set("X-Amzn-RequestId", newRequestID())
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write(b)
}

func ssmDecode(body []byte, v any) *ssmError {
	if err := json.Unmarshal(body, v); err != nil {
		return ssmErr("SerializationException", "request body is not valid JSON for this operation: %v", err)
	}
	return nil
}

// ---- Parameter Store ----

type ssmTag struct {
	Key   string `json:"Key"`
	Value string `json:"Value"`
}

func checkSSMTags(tags []ssmTag) *ssmError {
	for _, t := range tags {
		if t.Key == "" || len(t.Key) > 128 || len(t.Value) > 256 {
			return ssmValidation("Tag key %q: keys must be 1..128 and values at most 256 characters", t.Key)
		}
		if strings.HasPrefix(strings.ToLower(t.Key), "aws:") {
			return ssmErr("InvalidParameters", "Tag keys starting with 'aws:' are reserved (%q)", t.Key)
		}
	}
	return nil
}

// validParamName applies Parameter Store's naming rules.
func validParamName(name string) *ssmError {
	if name == "" {
		return ssmValidation("1 validation error detected: Value at 'name' failed to satisfy constraint: Member must have length greater than or equal to 1")
	}
	if len(name) > ssmNameMax {
		return ssmValidation("1 validation error detected: Value at 'name' failed to satisfy constraint: Member must have length less than or equal to %d", ssmNameMax)
	}
	path := name
	if strings.Contains(name, "/") {
		if !strings.HasPrefix(name, "/") {
			return ssmValidation("Parameter name must be a fully qualified name.")
		}
		path = name[1:]
	}
	segs := strings.Split(path, "/")
	if len(segs) > ssmDepthMax {
		return ssmErr("HierarchyLevelLimitExceededException", "A hierarchy can have a maximum of %d levels.", ssmDepthMax)
	}
	for _, seg := range segs {
		if !reSSMSegment.MatchString(seg) {
			return ssmValidation("Parameter name: can't be prefixed with \"aws\" or \"ssm\" (case-insensitive). If formed as a path, it can consist of sub-paths divided by slash symbol; each sub-path can be formed as a mix of letters, numbers and the following 3 symbols .-_")
		}
	}
	first := strings.ToLower(segs[0])
	if strings.HasPrefix(first, "aws") || strings.HasPrefix(first, "ssm") {
		return ssmValidation("No access to reserved parameter name: %s.", name)
	}
	return nil
}

// paramARN is the ARN of parameter name in region.
func paramARN(region, name string) string {
	if !strings.HasPrefix(name, "/") {
		name = "/" + name
	}
	return "arn:" + partitionOf(region) + ":ssm:" + region + ":" + awsAccountID + ":parameter" + name
}

// ciphertext is what SSM shows of a SecureString read without decryption:
// an opaque blob that depends on, but does not reveal, the value. KMS keys
// are regional, so the same value in two regions encrypts differently.
func (s *Sim) ciphertext(p *Parameter) string {
	m := hmac.New(sha256.New, []byte("cloudsim-kms:"+s.cfg.AWSSecret))
	fmt.Fprintf(m, "%s\x00%s\x00%d\x00%s", p.Region, p.Name, p.Version, p.Value)
	return "AQICAHh" + base64.StdEncoding.EncodeToString(m.Sum(nil))
}

type ssmParamJSON struct {
	Name             string  `json:"Name"`
	Type             string  `json:"Type"`
	Value            string  `json:"Value"`
	Version          int64   `json:"Version"`
	LastModifiedDate ssmTime `json:"LastModifiedDate"`
	ARN              string  `json:"ARN"`
	DataType         string  `json:"DataType"`
}

func (s *Sim) paramJSON(p *Parameter, decrypt bool) ssmParamJSON {
	v := p.Value
	if p.Type == "SecureString" && !decrypt {
		v = s.ciphertext(p)
	}
	return ssmParamJSON{Name: p.Name, Type: p.Type, Value: v, Version: p.Version,
		LastModifiedDate: ssmTime(p.LastModifiedDate), ARN: paramARN(p.Region, p.Name), DataType: p.DataType}
}

type ssmParamMetaJSON struct {
	Name             string   `json:"Name"`
	ARN              string   `json:"ARN"`
	Type             string   `json:"Type"`
	KeyID            string   `json:"KeyId,omitempty"`
	LastModifiedDate ssmTime  `json:"LastModifiedDate"`
	LastModifiedUser string   `json:"LastModifiedUser"`
	Description      string   `json:"Description,omitempty"`
	Version          int64    `json:"Version"`
	Tier             string   `json:"Tier"`
	Policies         []string `json:"Policies"`
	DataType         string   `json:"DataType"`
}

func (s *Sim) paramMeta(p *Parameter) ssmParamMetaJSON {
	return ssmParamMetaJSON{Name: p.Name, ARN: paramARN(p.Region, p.Name), Type: p.Type, KeyID: p.KeyID,
		LastModifiedDate: ssmTime(p.LastModifiedDate), LastModifiedUser: callerARN(p.Region),
		Description: p.Description, Version: p.Version, Tier: p.Tier, Policies: []string{}, DataType: p.DataType}
}

func (s *Sim) ssmPutParameter(region string, body []byte) (any, *ssmError) {
	var in struct {
		Name           string
		Value          *string
		Type           string
		Overwrite      *bool
		Tags           []ssmTag
		Description    string
		KeyId          string
		Tier           string
		DataType       string
		AllowedPattern string
	}
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	if e := validParamName(in.Name); e != nil {
		return nil, e
	}
	if in.Value == nil || *in.Value == "" {
		return nil, ssmValidation("1 validation error detected: Value at 'value' failed to satisfy constraint: Member must have length greater than or equal to 1")
	}
	overwrite := in.Overwrite != nil && *in.Overwrite
	if len(in.Tags) > 0 && overwrite {
		return nil, ssmValidation("Invalid request: tags and overwrite can't be used together. To create a parameter with tags, please remove overwrite flag. To update tags for an existing parameter, please use AddTagsToResource or RemoveTagsFromResource.")
	}
	if len(in.Tags) > ssmTagsMax {
		return nil, ssmErr("TooManyTagsError", "A parameter can have at most %d tags.", ssmTagsMax)
	}
	if e := checkSSMTags(in.Tags); e != nil {
		return nil, e
	}
	switch in.Type {
	case "", "String", "StringList", "SecureString":
	default:
		return nil, ssmValidation("1 validation error detected: Value '%s' at 'type' failed to satisfy constraint: Member must satisfy enum value set: [SecureString, StringList, String]", in.Type)
	}
	tier := in.Tier
	switch tier {
	case "", "Standard", "Intelligent-Tiering":
		tier = "Standard"
	case "Advanced":
	default:
		return nil, ssmValidation("1 validation error detected: Value '%s' at 'tier' failed to satisfy constraint: Member must satisfy enum value set: [Advanced, Intelligent-Tiering, Standard]", in.Tier)
	}
	if tier == "Standard" && len(*in.Value) > ssmStandardValueMax {
		return nil, ssmValidation("Standard tier parameters support a maximum parameter value of %d characters. To create a larger parameter value, upgrade the parameter to use the advanced-parameter tier.", ssmStandardValueMax)
	}
	if len(*in.Value) > ssmAdvancedValueMax {
		return nil, ssmValidation("Parameter value can't exceed %d characters.", ssmAdvancedValueMax)
	}
	if in.AllowedPattern != "" {
		re, err := regexp.Compile(in.AllowedPattern)
		if err != nil {
			return nil, ssmValidation("AllowedPattern %q is not a valid regular expression", in.AllowedPattern)
		}
		if !re.MatchString(*in.Value) {
			return nil, ssmErr("ParameterPatternMismatchException", "Parameter value, cannot be validated against allowedPattern: %s", in.AllowedPattern)
		}
	}
	dataType := in.DataType
	if dataType == "" {
		dataType = "text"
	}
	if dataType != "text" {
		return nil, ssmValidation("The data type %q is not served by this emulator; use text", dataType)
	}

	p, exists := s.params[paramKey{region, in.Name}]
	if exists && !overwrite {
		return nil, ssmErr("ParameterAlreadyExists", "The parameter already exists. To overwrite this value, set the overwrite option in the request to true.")
	}
	if !exists && in.Type == "" {
		return nil, ssmValidation("A parameter type is required when you create a parameter.")
	}
	if in.Type != "SecureString" && in.KeyId != "" {
		return nil, ssmValidation("KeyId is required for SecureString type parameter only.")
	}
	now := s.now()
	if !exists {
		p = &Parameter{Name: in.Name, Region: region, Tags: map[string]string{}}
		s.setParam(p)
	}
	if in.Type != "" {
		p.Type = in.Type
	}
	p.Value = *in.Value
	p.Version++
	p.LastModifiedDate = now
	p.Tier = tier
	p.DataType = dataType
	if in.Description != "" || !exists {
		p.Description = in.Description
	}
	p.KeyID = ""
	if p.Type == "SecureString" {
		p.KeyID = in.KeyId
		if p.KeyID == "" {
			p.KeyID = ssmDefaultKeyID
		}
	}
	for _, t := range in.Tags {
		p.Tags[t.Key] = t.Value
	}
	return map[string]any{"Version": p.Version, "Tier": p.Tier}, nil
}

func (s *Sim) ssmGetParameter(region string, body []byte) (any, *ssmError) {
	var in struct {
		Name           string
		WithDecryption bool
	}
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	if in.Name == "" {
		return nil, ssmValidation("1 validation error detected: Value at 'name' failed to satisfy constraint: Member must not be null")
	}
	p, ok := s.params[paramKey{region, in.Name}]
	if !ok {
		return nil, ssmErr("ParameterNotFound", "Parameter %s not found.", in.Name)
	}
	return map[string]any{"Parameter": s.paramJSON(p, in.WithDecryption)}, nil
}

// ssmGetParametersMax is how many names one GetParameters may ask for.
const ssmGetParametersMax = 10

// ssmGetParameters reads several parameters at once: those found as
// GetParameter shows them, in the order asked (each once), and the names not
// found in InvalidParameters; a missing name is not an error here.
func (s *Sim) ssmGetParameters(region string, body []byte) (any, *ssmError) {
	var in struct {
		Names          []string
		WithDecryption bool
	}
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	if len(in.Names) == 0 {
		return nil, ssmValidation("1 validation error detected: Value at 'names' failed to satisfy constraint: Member must have length greater than or equal to 1")
	}
	if len(in.Names) > ssmGetParametersMax {
		return nil, ssmValidation("1 validation error detected: Value '[%s]' at 'names' failed to satisfy constraint: Member must have length less than or equal to %d",
			strings.Join(in.Names, ", "), ssmGetParametersMax)
	}
	found, invalid := []ssmParamJSON{}, []string{}
	seen := map[string]bool{}
	for _, name := range in.Names {
		if seen[name] {
			continue
		}
		seen[name] = true
		if p, ok := s.params[paramKey{region, name}]; ok {
			found = append(found, s.paramJSON(p, in.WithDecryption))
		} else {
			invalid = append(invalid, name)
		}
	}
	return map[string]any{"Parameters": found, "InvalidParameters": invalid}, nil
}

func (s *Sim) ssmDeleteParameter(region string, body []byte) (any, *ssmError) {
	var in struct{ Name string }
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	if _, ok := s.params[paramKey{region, in.Name}]; !ok {
		return nil, ssmErr("ParameterNotFound", "Parameter %s not found.", in.Name)
	}
	s.deleteParam(region, in.Name)
	return map[string]any{}, nil
}

// ssmPage decodes a NextToken (the last name of the previous page).
func ssmPageToken(tok string) (string, *ssmError) {
	if tok == "" {
		return "", nil
	}
	raw, err := base64.RawURLEncoding.DecodeString(tok)
	if err != nil || !strings.HasPrefix(string(raw), "p1:") {
		return "", ssmErr("InvalidNextToken", "The specified token isn't valid.")
	}
	return string(raw[3:]), nil
}

func ssmNextToken(lastName string) string {
	return base64.RawURLEncoding.EncodeToString([]byte("p1:" + lastName))
}

// sortedParams lists region's parameters by name, starting after the given
// name. The sorted order is kept between calls and rebuilt only after a
// parameter of the region was added or removed: a paginated listing of 100k
// parameters asks for it once per page. Caller holds mu.
func (s *Sim) sortedParams(region, after string) []*Parameter {
	order, ok := s.paramOrder[region]
	if !ok {
		for k := range s.params {
			if k.region == region {
				order = append(order, k.name)
			}
		}
		sort.Strings(order)
		s.paramOrder[region] = order
	}
	i := sort.SearchStrings(order, after)
	if i < len(order) && order[i] == after {
		i++
	}
	out := make([]*Parameter, 0, len(order)-i)
	for _, name := range order[i:] {
		out = append(out, s.params[paramKey{region, name}])
	}
	return out
}

// allParams lists every region's parameters by name, then region in the
// order of Config.Regions (home region first). Caller holds mu.
func (s *Sim) allParams() []*Parameter {
	out := make([]*Parameter, 0, len(s.params))
	for _, p := range s.params {
		out = append(out, p)
	}
	rank := make(map[string]int, len(s.cfg.Regions))
	for i, r := range s.cfg.Regions {
		rank[r] = i
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Name != b.Name {
			return a.Name < b.Name
		}
		ra, oka := rank[a.Region]
		rb, okb := rank[b.Region]
		if oka != okb || ra != rb {
			return oka && (!okb || ra < rb)
		}
		return a.Region < b.Region
	})
	return out
}

// setParam and deleteParam are the only writers of s.params, so a region's
// sorted order is dropped whenever its set of names changes. A parameter
// without a region goes to the home region. Caller holds mu.
func (s *Sim) setParam(p *Parameter) {
	if p.Region == "" {
		p.Region = s.region()
	}
	k := paramKey{p.Region, p.Name}
	if _, ok := s.params[k]; !ok {
		delete(s.paramOrder, p.Region)
	}
	s.params[k] = p
}

func (s *Sim) deleteParam(region, name string) {
	k := paramKey{region, name}
	if _, ok := s.params[k]; ok {
		delete(s.paramOrder, region)
	}
	delete(s.params, k)
}

type ssmParamFilter struct {
	Key    string
	Option string
	Values []string
}

// compileParamFilters checks ParameterFilters and returns one predicate.
// byPath restricts the keys to those GetParametersByPath accepts.
func compileParamFilters(fs []ssmParamFilter, byPath bool) (func(*Parameter) bool, *ssmError) {
	var preds []func(*Parameter) bool
	for _, f := range fs {
		key, opt, vals := f.Key, f.Option, f.Values
		oneOf := func(v string) bool {
			for _, x := range vals {
				if x == v {
					return true
				}
			}
			return false
		}
		checkOpt := func(allowed ...string) *ssmError {
			if opt == "" {
				return nil
			}
			for _, a := range allowed {
				if a == opt {
					return nil
				}
			}
			return ssmErr("InvalidFilterOption", "The filter option %q is not valid for key %q. Valid options: %s", opt, key, strings.Join(allowed, ", "))
		}
		switch {
		case (key == "Name" || key == "Path") && byPath:
			return nil, ssmErr("InvalidFilterKey", "The filter key %q is not valid for GetParametersByPath.", key)
		case key == "Name":
			if e := checkOpt("Equals", "BeginsWith", "Contains"); e != nil {
				return nil, e
			}
			o := opt
			preds = append(preds, func(p *Parameter) bool {
				for _, v := range vals {
					switch o {
					case "", "Equals":
						if p.Name == v {
							return true
						}
					case "BeginsWith":
						if strings.HasPrefix(p.Name, v) {
							return true
						}
					case "Contains":
						if strings.Contains(p.Name, v) {
							return true
						}
					}
				}
				return false
			})
		case key == "Path":
			if e := checkOpt("Recursive", "OneLevel"); e != nil {
				return nil, e
			}
			recursive := opt == "Recursive"
			for _, v := range vals {
				if !strings.HasPrefix(v, "/") {
					return nil, ssmValidation("The parameter path %q must begin with a forward slash (/).", v)
				}
			}
			preds = append(preds, func(p *Parameter) bool {
				for _, v := range vals {
					if underPath(p.Name, v, recursive) {
						return true
					}
				}
				return false
			})
		case key == "Type", key == "KeyId", key == "Tier", key == "DataType":
			if e := checkOpt("Equals"); e != nil {
				return nil, e
			}
			k := key
			preds = append(preds, func(p *Parameter) bool {
				switch k {
				case "Type":
					return oneOf(p.Type)
				case "KeyId":
					return oneOf(p.KeyID)
				case "Tier":
					return oneOf(p.Tier)
				default:
					return oneOf(p.DataType)
				}
			})
		case strings.HasPrefix(key, "tag:") && len(key) > 4:
			if e := checkOpt("Equals", "BeginsWith"); e != nil {
				return nil, e
			}
			tk, o := key[4:], opt
			preds = append(preds, func(p *Parameter) bool {
				v, ok := p.Tags[tk]
				if !ok {
					return false
				}
				if len(vals) == 0 {
					return true
				}
				for _, x := range vals {
					if (o == "BeginsWith" && strings.HasPrefix(v, x)) || (o != "BeginsWith" && v == x) {
						return true
					}
				}
				return false
			})
		default:
			return nil, ssmErr("InvalidFilterKey", "The filter key %q is not valid.", key)
		}
	}
	return func(p *Parameter) bool {
		for _, pr := range preds {
			if !pr(p) {
				return false
			}
		}
		return true
	}, nil
}

// underPath reports whether name sits below path (one level or any depth).
func underPath(name, path string, recursive bool) bool {
	prefix := strings.TrimSuffix(path, "/") + "/"
	rest, ok := strings.CutPrefix(name, prefix)
	if !ok || rest == "" {
		return false
	}
	return recursive || !strings.Contains(rest, "/")
}

func maxResults(v *int32, def, max int, field string) (int, *ssmError) {
	if v == nil {
		return def, nil
	}
	if *v < 1 {
		return 0, ssmValidation("1 validation error detected: Value '%d' at '%s' failed to satisfy constraint: Member must have value greater than or equal to 1", *v, field)
	}
	if int(*v) > max {
		return 0, ssmValidation("1 validation error detected: Value '%d' at '%s' failed to satisfy constraint: Member must have value less than or equal to %d", *v, field, max)
	}
	return int(*v), nil
}

func (s *Sim) ssmGetParametersByPath(region string, body []byte) (any, *ssmError) {
	var in struct {
		Path             string
		Recursive        bool
		WithDecryption   bool
		MaxResults       *int32
		NextToken        string
		ParameterFilters []ssmParamFilter
	}
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	if !strings.HasPrefix(in.Path, "/") {
		return nil, ssmValidation("The parameter path %q must begin with a forward slash (/).", in.Path)
	}
	n, e := maxResults(in.MaxResults, 10, 10, "maxResults")
	if e != nil {
		return nil, e
	}
	after, e := ssmPageToken(in.NextToken)
	if e != nil {
		return nil, e
	}
	pred, e := compileParamFilters(in.ParameterFilters, true)
	if e != nil {
		return nil, e
	}
	out := []ssmParamJSON{}
	next := ""
	for _, p := range s.sortedParams(region, after) {
		if !underPath(p.Name, in.Path, in.Recursive) || !pred(p) {
			continue
		}
		if len(out) == n {
			next = ssmNextToken(out[n-1].Name)
			break
		}
		out = append(out, s.paramJSON(p, in.WithDecryption))
	}
	resp := map[string]any{"Parameters": out}
	if next != "" {
		resp["NextToken"] = next
	}
	return resp, nil
}

func (s *Sim) ssmDescribeParameters(region string, body []byte) (any, *ssmError) {
	var in struct {
		Filters []struct {
			Key    string
			Values []string
		}
		ParameterFilters []ssmParamFilter
		MaxResults       *int32
		NextToken        string
	}
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	if len(in.Filters) > 0 && len(in.ParameterFilters) > 0 {
		return nil, ssmValidation("You can use either Filters or ParameterFilters in a single request.")
	}
	filters := in.ParameterFilters
	for _, f := range in.Filters {
		switch f.Key {
		case "Name":
			filters = append(filters, ssmParamFilter{Key: "Name", Option: "BeginsWith", Values: f.Values})
		case "Type", "KeyId":
			filters = append(filters, ssmParamFilter{Key: f.Key, Values: f.Values})
		default:
			return nil, ssmErr("InvalidFilterKey", "The filter key %q is not valid.", f.Key)
		}
	}
	n, e := maxResults(in.MaxResults, 50, 50, "maxResults")
	if e != nil {
		return nil, e
	}
	after, e := ssmPageToken(in.NextToken)
	if e != nil {
		return nil, e
	}
	pred, e := compileParamFilters(filters, false)
	if e != nil {
		return nil, e
	}
	out := []ssmParamMetaJSON{}
	next := ""
	for _, p := range s.sortedParams(region, after) {
		if !pred(p) {
			continue
		}
		if len(out) == n {
			next = ssmNextToken(out[n-1].Name)
			break
		}
		out = append(out, s.paramMeta(p))
	}
	resp := map[string]any{"Parameters": out}
	if next != "" {
		resp["NextToken"] = next
	}
	return resp, nil
}

func (s *Sim) tagTarget(region, resourceType, id string) (*Parameter, *ssmError) {
	if resourceType != "Parameter" {
		return nil, ssmErr("InvalidResourceType", "The resource type %q is not served by this emulator; use Parameter.", resourceType)
	}
	p, ok := s.params[paramKey{region, id}]
	if !ok {
		return nil, ssmErr("InvalidResourceId", "The resource ID %q isn't valid. Verify that you entered the correct ID and try again.", id)
	}
	return p, nil
}

func sortedTags(m map[string]string) []ssmTag {
	out := make([]ssmTag, 0, len(m))
	for k, v := range m {
		out = append(out, ssmTag{Key: k, Value: v})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

func (s *Sim) ssmListTagsForResource(region string, body []byte) (any, *ssmError) {
	var in struct{ ResourceType, ResourceId string }
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	p, e := s.tagTarget(region, in.ResourceType, in.ResourceId)
	if e != nil {
		return nil, e
	}
	return map[string]any{"TagList": sortedTags(p.Tags)}, nil
}

func (s *Sim) ssmAddTagsToResource(region string, body []byte) (any, *ssmError) {
	var in struct {
		ResourceType, ResourceId string
		Tags                     []ssmTag
	}
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	p, e := s.tagTarget(region, in.ResourceType, in.ResourceId)
	if e != nil {
		return nil, e
	}
	if len(in.Tags) == 0 {
		return nil, ssmValidation("1 validation error detected: Value at 'tags' failed to satisfy constraint: Member must not be null")
	}
	if e := checkSSMTags(in.Tags); e != nil {
		return nil, e
	}
	n := len(p.Tags)
	for _, t := range in.Tags {
		if _, ok := p.Tags[t.Key]; !ok {
			n++
		}
	}
	if n > ssmTagsMax {
		return nil, ssmErr("TooManyTagsError", "The Tags parameter contains too many tags. A resource can have at most %d tags.", ssmTagsMax)
	}
	if p.Tags == nil {
		p.Tags = map[string]string{}
	}
	for _, t := range in.Tags {
		p.Tags[t.Key] = t.Value
	}
	return map[string]any{}, nil
}

func (s *Sim) ssmRemoveTagsFromResource(region string, body []byte) (any, *ssmError) {
	var in struct {
		ResourceType, ResourceId string
		TagKeys                  []string
	}
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	p, e := s.tagTarget(region, in.ResourceType, in.ResourceId)
	if e != nil {
		return nil, e
	}
	for _, k := range in.TagKeys {
		delete(p.Tags, k)
	}
	return map[string]any{}, nil
}

// ---- Run Command ----

func (s *Sim) ssmSendCommand(region string, body []byte) (any, *ssmError) {
	var in struct {
		DocumentName   string
		InstanceIds    []string
		Targets        []json.RawMessage
		Parameters     map[string][]string
		Comment        string
		TimeoutSeconds *int32
	}
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	if in.DocumentName == "" {
		return nil, ssmValidation("1 validation error detected: Value at 'documentName' failed to satisfy constraint: Member must not be null")
	}
	if in.DocumentName != "AWS-RunShellScript" {
		return nil, ssmErr("InvalidDocument", "Document with name %s does not exist.", in.DocumentName)
	}
	if len(in.Targets) > 0 {
		return nil, ssmValidation("Targets are not served by this emulator; name the instances in InstanceIds")
	}
	if len(in.InstanceIds) == 0 {
		return nil, ssmValidation("Either InstanceIds or Targets must be specified.")
	}
	if len(in.InstanceIds) > 50 {
		return nil, ssmValidation("1 validation error detected: Value at 'instanceIds' failed to satisfy constraint: Member must have length less than or equal to 50")
	}
	if len(in.Comment) > 100 {
		return nil, ssmValidation("1 validation error detected: Value at 'comment' failed to satisfy constraint: Member must have length less than or equal to 100")
	}
	timeout := int32(3600)
	if in.TimeoutSeconds != nil {
		timeout = *in.TimeoutSeconds
		if timeout < 30 || timeout > 2592000 {
			return nil, ssmValidation("1 validation error detected: Value '%d' at 'timeoutSeconds' failed to satisfy constraint: Member must have value between 30 and 2592000", timeout)
		}
	}
	for k := range in.Parameters {
		if k != "commands" && k != "workingDirectory" && k != "executionTimeout" {
			return nil, ssmErr("InvalidParameters", "Parameter %q is not a parameter of document AWS-RunShellScript.", k)
		}
	}
	cmds := in.Parameters["commands"]
	if len(cmds) == 0 {
		return nil, ssmErr("InvalidParameters", "document AWS-RunShellScript requires parameter \"commands\".")
	}
	var bad []string
	var insts []*Instance
	for _, id := range in.InstanceIds {
		inst, ok := s.instances[id]
		if !ok || s.regionOf(inst) != region || inst.State != "running" {
			bad = append(bad, id)
			continue
		}
		insts = append(insts, inst)
	}
	if len(bad) > 0 {
		return nil, ssmErr("InvalidInstanceId", "Instances [%s] not in a valid state for account %s", strings.Join(bad, ", "), awsAccountID)
	}
	now := s.now()
	cmd := &Command{
		ID:           s.newUUID(),
		DocumentName: in.DocumentName,
		InstanceIDs:  append([]string(nil), in.InstanceIds...),
		Commands:     append([]string(nil), cmds...),
		Comment:      in.Comment,
		RequestedAt:  now,
		Region:       region,
		Invocations:  map[string]*Invocation{},
	}
	s.commands[cmd.ID] = cmd
	for _, inst := range insts {
		inv := &Invocation{InstanceID: inst.ID, Status: "Pending", ExitCode: -1}
		cmd.Invocations[inst.ID] = inv
		s.schedule(now.Add(ssmInvocationVisibleDelay), event{Kind: evSSMVisible, Command: cmd.ID, Instance: inst.ID})
		s.schedule(now.Add(ssmCommandRunDelay), event{Kind: evSSMRun, Command: cmd.ID, Instance: inst.ID})
	}
	return map[string]any{"Command": map[string]any{
		"CommandId":              cmd.ID,
		"DocumentName":           cmd.DocumentName,
		"DocumentVersion":        "$DEFAULT",
		"Comment":                cmd.Comment,
		"ExpiresAfter":           ssmTime(now.Add(time.Duration(timeout) * time.Second)),
		"Parameters":             in.Parameters,
		"InstanceIds":            cmd.InstanceIDs,
		"Targets":                []any{},
		"RequestedDateTime":      ssmTime(now),
		"Status":                 "Pending",
		"StatusDetails":          "Pending",
		"OutputS3Region":         region,
		"MaxConcurrency":         "50",
		"MaxErrors":              "0",
		"TargetCount":            len(insts),
		"CompletedCount":         0,
		"ErrorCount":             0,
		"DeliveryTimedOutCount":  0,
		"ServiceRole":            "",
		"TimeoutSeconds":         timeout,
		"NotificationConfig":     map[string]any{"NotificationArn": "", "NotificationEvents": []string{}, "NotificationType": ""},
		"CloudWatchOutputConfig": map[string]any{"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
	}}, nil
}

// runInvocation runs cmd's script on one instance (evSSMRun, due
// ssmCommandRunDelay after SendCommand). Caller holds s.mu.
func (s *Sim) runInvocation(cmd *Command, instanceID string, runAt time.Time) {
	inv := cmd.Invocations[instanceID]
	if inv.Status != "Pending" && inv.Status != "InProgress" {
		return
	}
	inv.DoneAt = runAt
	inst := s.instances[instanceID]
	if inst == nil || inst.State != "running" {
		inv.Status, inv.ExitCode, inv.StdErr = "Failed", -1, "instance is no longer running"
		return
	}
	out, code := s.runShellScript(inst, cmd.Commands)
	inv.StdOut, inv.ExitCode = out, code
	if code == 0 {
		inv.Status = "Success"
	} else {
		inv.Status = "Failed"
		inv.StdErr = fmt.Sprintf("failed to run commands: exit status %d", code)
	}
}

func (s *Sim) ssmGetCommandInvocation(region string, body []byte) (any, *ssmError) {
	var in struct{ CommandId, InstanceId, PluginName string }
	if e := ssmDecode(body, &in); e != nil {
		return nil, e
	}
	if in.CommandId == "" || in.InstanceId == "" {
		return nil, ssmValidation("CommandId and InstanceId are required")
	}
	cmd, ok := s.commands[in.CommandId]
	var inv *Invocation
	if ok && cmd.Region == region {
		inv = cmd.Invocations[in.InstanceId]
	}
	if inv == nil || s.now().Before(cmd.RequestedAt.Add(ssmInvocationVisibleDelay)) {
		return nil, ssmErr("InvocationDoesNotExist", "An error occurred (InvocationDoesNotExist) when calling the GetCommandInvocation operation")
	}
	if in.PluginName != "" && in.PluginName != "aws:runShellScript" && in.PluginName != "runShellScript" {
		return nil, ssmErr("InvalidPluginName", "The plugin name %q is not valid.", in.PluginName)
	}
	out := map[string]any{
		"CommandId":              cmd.ID,
		"InstanceId":             inv.InstanceID,
		"Comment":                cmd.Comment,
		"DocumentName":           cmd.DocumentName,
		"DocumentVersion":        "1",
		"PluginName":             "aws:runShellScript",
		"ResponseCode":           -1,
		"ExecutionStartDateTime": "",
		"ExecutionElapsedTime":   "",
		"ExecutionEndDateTime":   "",
		"Status":                 inv.Status,
		"StatusDetails":          inv.Status,
		"StandardOutputContent":  truncate(inv.StdOut, ssmOutputMax),
		"StandardOutputUrl":      "",
		"StandardErrorContent":   truncate(inv.StdErr, ssmOutputMax),
		"StandardErrorUrl":       "",
		"CloudWatchOutputConfig": map[string]any{"CloudWatchLogGroupName": "", "CloudWatchOutputEnabled": false},
	}
	if inv.Status != "Pending" {
		out["ExecutionStartDateTime"] = cmd.RequestedAt.UTC().Format("2006-01-02T15:04:05.000Z")
	}
	if !inv.DoneAt.IsZero() {
		out["ResponseCode"] = inv.ExitCode
		out["ExecutionEndDateTime"] = inv.DoneAt.UTC().Format("2006-01-02T15:04:05.000Z")
		d := inv.DoneAt.Sub(cmd.RequestedAt)
		out["ExecutionElapsedTime"] = fmt.Sprintf("PT%.3fS", d.Seconds())
	}
	return out, nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}
