package cloudsim

// The EC2 query API (protocol ec2query, API version 2016-11-15): form-encoded
// POST with Action=, XML answers in the 2016-11-15 namespace, errors as
// <Response><Errors><Error>... with a RequestID, as aws-sdk-go-v2's
// service/ec2 serializes and parses them.

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/xml"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"
	"time"
)

const (
	ec2Namespace  = "http://ec2.amazonaws.com/doc/2016-11-15/"
	awsAccountID  = "123456789012" // the sandbox's AWS account (owner of instances, parameters)
	maxAWSBody    = 1 << 20
	ec2UserDataMx = 16 * 1024 // user data is limited to 16 KB before base64
	ec2TagsMax    = 50
	ec2MaxLaunch  = 100 // our sandbox instance limit per request
)

// EC2 instance state codes, as AWS numbers them.
var ec2StateCode = map[string]int{
	"pending": 0, "running": 16, "shutting-down": 32, "terminated": 48, "stopping": 64, "stopped": 80,
}

var (
	reInstanceID = regexp.MustCompile(`^i-([0-9a-f]{8}|[0-9a-f]{17})$`)
	reAMI        = regexp.MustCompile(`^ami-([0-9a-f]{8}|[0-9a-f]{17})$`)
	reInstType   = regexp.MustCompile(`^[a-z][a-z0-9-]*\.[a-z0-9-]+$`)
)

// awsRequestSeq numbers request ids; ids only need to be unique, not secret.
var awsRequestSeq atomic.Uint64

func newRequestID() string {
	n := awsRequestSeq.Add(1)
	return fmt.Sprintf("%08x-%04x-4%03x-8%03x-%012x", uint32(time.Now().Unix()), uint16(n>>32), n>>20&0xfff, n>>8&0xfff, n)
}

// ec2TokenLife is how long a RunInstances ClientToken is honoured after its
// last instance terminated (AWS: at least 24 hours).
const ec2TokenLife = 24 * time.Hour

// ec2Error is an EC2 API error answer.
type ec2Error struct {
	Status  int
	Code    string
	Message string
}

func ec2Err(status int, code, format string, a ...any) *ec2Error {
	return &ec2Error{Status: status, Code: code, Message: fmt.Sprintf(format, a...)}
}

func ec2BadParam(format string, a ...any) *ec2Error {
	return ec2Err(http.StatusBadRequest, "InvalidParameterValue", format, a...)
}

type ec2ErrorResponse struct {
	XMLName   xml.Name    `xml:"Response"`
	Errors    []ec2ErrXML `xml:"Errors>Error"`
	RequestID string      `xml:"RequestID"`
}

type ec2ErrXML struct {
	Code    string `xml:"Code"`
	Message string `xml:"Message"`
}

func writeEC2Error(w http.ResponseWriter, e *ec2Error) {
	body, _ := xml.Marshal(ec2ErrorResponse{Errors: []ec2ErrXML{{Code: e.Code, Message: e.Message}}, RequestID: newRequestID()})
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(e.Status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

func writeEC2(w http.ResponseWriter, v any) {
	body, err := xml.Marshal(v)
	if err != nil {
		writeEC2Error(w, ec2Err(http.StatusInternalServerError, "InternalError", "encoding the response: %v", err))
		return
	}
	w.Header().Set("Content-Type", "text/xml;charset=UTF-8")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

// serveEC2 serves the EC2 query API.
func (s *Sim) serveEC2(w http.ResponseWriter, r *http.Request) {
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAWSBody+1))
	op := "ec2.Unknown"
	if err != nil || len(body) > maxAWSBody {
		s.countCall(op, http.StatusBadRequest)
		writeEC2Error(w, ec2BadParam("request body unreadable or larger than %d bytes", maxAWSBody))
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		s.countCall(op, http.StatusBadRequest)
		writeEC2Error(w, ec2BadParam("request body is not form-encoded: %v", err))
		return
	}
	action := form.Get("Action")
	if action != "" {
		op = "ec2." + action
	}
	fail := func(e *ec2Error) {
		s.countCall(op, e.Status)
		writeEC2Error(w, e)
	}
	region, ae := s.verifySigV4(r, body, "ec2")
	if ae != nil {
		switch {
		case ae.Missing:
			fail(ec2Err(http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials"))
		case ae.BadKey:
			fail(ec2Err(http.StatusUnauthorized, "AuthFailure", "AWS was not able to validate the provided access credentials"))
		case ae.Expired:
			fail(ec2Err(http.StatusBadRequest, "RequestExpired", "Request has expired. %s", ae.Message))
		default:
			fail(ec2Err(http.StatusForbidden, "SignatureDoesNotMatch", "%s", ae.Message))
		}
		return
	}
	if action == "" {
		fail(ec2Err(http.StatusBadRequest, "MissingAction", "The request must contain the parameter Action"))
		return
	}
	if v := form.Get("Version"); v != "2016-11-15" {
		fail(ec2Err(http.StatusBadRequest, "InvalidParameterValue", "Version %q is not supported; this endpoint speaks 2016-11-15", v))
		return
	}
	handler, ok := map[string]func(string, url.Values) (any, *ec2Error){
		"RunInstances":       s.ec2RunInstances,
		"DescribeInstances":  s.ec2DescribeInstances,
		"TerminateInstances": s.ec2TerminateInstances,
		"StopInstances":      s.ec2StopInstances,
		"RebootInstances":    s.ec2RebootInstances,
		"CreateTags":         s.ec2CreateTags,
		"DescribeTags":       s.ec2DescribeTags,
	}[action]
	if !ok {
		fail(ec2Err(http.StatusBadRequest, "InvalidAction", "The action %s is not valid for this web service.", action))
		return
	}
	if form.Get("DryRun") == "true" {
		// Permission checks always pass in the sandbox.
		fail(ec2Err(http.StatusPreconditionFailed, "DryRunOperation", "Request would have succeeded, but DryRun flag is set."))
		return
	}

	f := s.injectFaultIn(r.Context(), op, region)
	w, cut := s.loseResponse(w, op, f)
	defer cut()
	switch f.Kind {
	case FaultHang:
		s.countCall(op, 0)
		return
	case FaultThrottle:
		fail(ec2Err(http.StatusServiceUnavailable, "RequestLimitExceeded", "Request limit exceeded."))
		return
	case FaultError:
		st := f.Status
		if st == 0 {
			st = http.StatusInternalServerError
		}
		code := "InternalError"
		if st == http.StatusServiceUnavailable {
			code = "Unavailable"
		}
		fail(ec2Err(st, code, "An internal error has occurred"))
		return
	}

	s.mu.Lock()
	s.tick()
	out, e := handler(region, form)
	s.changedBy(op)
	s.mu.Unlock()
	if e != nil {
		fail(e)
		return
	}
	s.countCall(op, http.StatusOK)
	writeEC2(w, out)
}

// ---- form helpers ----

// formList returns prefix.1, prefix.2, ... in order, stopping at the first gap.
func formList(form url.Values, prefix string) []string {
	var out []string
	for i := 1; ; i++ {
		k := prefix + "." + strconv.Itoa(i)
		if _, ok := form[k]; !ok {
			return out
		}
		out = append(out, form.Get(k))
	}
}

// formIndexes returns the sorted N of every "prefix.N.*" key.
func formIndexes(form url.Values, prefix string) []int {
	seen := map[int]bool{}
	for k := range form {
		rest, ok := strings.CutPrefix(k, prefix+".")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, ".")
		if i, err := strconv.Atoi(n); err == nil {
			seen[i] = true
		}
	}
	out := make([]int, 0, len(seen))
	for i := range seen {
		out = append(out, i)
	}
	sort.Ints(out)
	return out
}

// formTags reads prefix.N.Key / prefix.N.Value.
func formTags(form url.Values, prefix string) ([][2]string, *ec2Error) {
	var tags [][2]string
	seen := map[string]bool{}
	for _, i := range formIndexes(form, prefix) {
		p := prefix + "." + strconv.Itoa(i)
		k := form.Get(p + ".Key")
		v := form.Get(p + ".Value")
		if k == "" {
			return nil, ec2BadParam("Tag key must not be empty (%s.Key)", p)
		}
		if len(k) > 128 || len(v) > 256 {
			return nil, ec2BadParam("Tag %q: keys are limited to 128 and values to 256 characters", k)
		}
		if strings.HasPrefix(strings.ToLower(k), "aws:") {
			return nil, ec2BadParam("Tag keys starting with 'aws:' are reserved for internal use (%q)", k)
		}
		if seen[k] {
			return nil, ec2BadParam("Duplicate tag key '%s' specified.", k)
		}
		seen[k] = true
		tags = append(tags, [2]string{k, v})
	}
	return tags, nil
}

func formInt(form url.Values, key string) (int, bool, *ec2Error) {
	v, ok := form[key]
	if !ok {
		return 0, false, nil
	}
	n, err := strconv.Atoi(v[0])
	if err != nil {
		return 0, true, ec2BadParam("Invalid value '%s' for %s: not an integer", v[0], key)
	}
	return n, true, nil
}

// ---- XML shapes ----

type ec2StateXML struct {
	Code int    `xml:"code"`
	Name string `xml:"name"`
}

type ec2TagXML struct {
	Key   string `xml:"key"`
	Value string `xml:"value"`
}

type ec2GroupXML struct {
	GroupID   string `xml:"groupId"`
	GroupName string `xml:"groupName"`
}

type ec2InstanceXML struct {
	InstanceID     string       `xml:"instanceId"`
	ImageID        string       `xml:"imageId"`
	State          ec2StateXML  `xml:"instanceState"`
	PrivateDNSName string       `xml:"privateDnsName"`
	DNSName        string       `xml:"dnsName"`
	Reason         string       `xml:"reason"`
	AmiLaunchIndex int          `xml:"amiLaunchIndex"`
	InstanceType   string       `xml:"instanceType"`
	LaunchTime     string       `xml:"launchTime"`
	Placement      ec2Placement `xml:"placement"`
	Monitoring     struct {
		State string `xml:"state"`
	} `xml:"monitoring"`
	SubnetID           string         `xml:"subnetId,omitempty"`
	VpcID              string         `xml:"vpcId,omitempty"`
	PrivateIPAddress   string         `xml:"privateIpAddress,omitempty"`
	IPAddress          string         `xml:"ipAddress,omitempty"`
	GroupSet           []ec2GroupXML  `xml:"groupSet>item"`
	StateReason        *ec2Reason     `xml:"stateReason,omitempty"`
	Architecture       string         `xml:"architecture"`
	RootDeviceType     string         `xml:"rootDeviceType"`
	RootDeviceName     string         `xml:"rootDeviceName"`
	VirtualizationType string         `xml:"virtualizationType"`
	ClientToken        string         `xml:"clientToken,omitempty"`
	TagSet             []ec2TagXML    `xml:"tagSet>item"`
	Hypervisor         string         `xml:"hypervisor"`
	IamInstanceProfile *ec2ProfileXML `xml:"iamInstanceProfile,omitempty"`
	MetadataOptions    ec2MetadataXML `xml:"metadataOptions"`
}

type ec2MetadataXML struct {
	State                   string `xml:"state"`
	HttpTokens              string `xml:"httpTokens"`
	HttpPutResponseHopLimit int    `xml:"httpPutResponseHopLimit"`
	HttpEndpoint            string `xml:"httpEndpoint"`
	HttpProtocolIpv6        string `xml:"httpProtocolIpv6"`
	InstanceMetadataTags    string `xml:"instanceMetadataTags"`
}

type ec2Placement struct {
	AvailabilityZone string `xml:"availabilityZone"`
	Tenancy          string `xml:"tenancy"`
}

type ec2Reason struct {
	Code    string `xml:"code"`
	Message string `xml:"message"`
}

type ec2ProfileXML struct {
	Arn string `xml:"arn"`
	ID  string `xml:"id"`
}

type ec2ReservationXML struct {
	ReservationID string           `xml:"reservationId"`
	OwnerID       string           `xml:"ownerId"`
	GroupSet      []ec2GroupXML    `xml:"groupSet>item"`
	Instances     []ec2InstanceXML `xml:"instancesSet>item"`
}

type ec2RunInstancesResponse struct {
	XMLName   xml.Name `xml:"RunInstancesResponse"`
	Xmlns     string   `xml:"xmlns,attr"`
	RequestID string   `xml:"requestId"`
	ec2ReservationXML
}

type ec2DescribeInstancesResponse struct {
	XMLName      xml.Name            `xml:"DescribeInstancesResponse"`
	Xmlns        string              `xml:"xmlns,attr"`
	RequestID    string              `xml:"requestId"`
	Reservations []ec2ReservationXML `xml:"reservationSet>item"`
	NextToken    string              `xml:"nextToken,omitempty"`
}

type ec2StateChangeXML struct {
	InstanceID    string      `xml:"instanceId"`
	CurrentState  ec2StateXML `xml:"currentState"`
	PreviousState ec2StateXML `xml:"previousState"`
}

type ec2StateChangeResponse struct {
	XMLName   xml.Name
	Xmlns     string              `xml:"xmlns,attr"`
	RequestID string              `xml:"requestId"`
	Instances []ec2StateChangeXML `xml:"instancesSet>item"`
}

type ec2ReturnResponse struct {
	XMLName   xml.Name
	Xmlns     string `xml:"xmlns,attr"`
	RequestID string `xml:"requestId"`
	Return    bool   `xml:"return"`
}

func ec2Time(t time.Time) string { return t.UTC().Format("2006-01-02T15:04:05.000Z") }

func (s *Sim) instanceXML(inst *Instance) ec2InstanceXML {
	x := ec2InstanceXML{
		InstanceID:         inst.ID,
		ImageID:            inst.ImageID,
		State:              ec2StateXML{Code: ec2StateCode[inst.State], Name: inst.State},
		InstanceType:       inst.InstanceType,
		LaunchTime:         ec2Time(inst.LaunchTime),
		Placement:          ec2Placement{AvailabilityZone: s.regionOf(inst) + "a", Tenancy: "default"},
		SubnetID:           inst.SubnetID,
		PrivateIPAddress:   inst.PrivateIP,
		IPAddress:          inst.PublicIP,
		Architecture:       "x86_64",
		RootDeviceType:     "ebs",
		RootDeviceName:     "/dev/xvda",
		VirtualizationType: "hvm",
		Hypervisor:         "xen",
		ClientToken:        inst.ClientToken,
	}
	x.Monitoring.State = "disabled"
	mo := inst.MetadataOptions.withDefaults()
	x.MetadataOptions = ec2MetadataXML{State: "applied", HttpTokens: mo.HttpTokens, HttpPutResponseHopLimit: mo.HttpPutResponseHopLimit,
		HttpEndpoint: mo.HttpEndpoint, HttpProtocolIpv6: mo.HttpProtocolIpv6, InstanceMetadataTags: mo.InstanceMetadataTags}
	if inst.State == "pending" {
		// EC2 reports the options pending until the instance is up to serve them.
		x.MetadataOptions.State = "pending"
	}
	if inst.SubnetID != "" {
		x.VpcID = "vpc-" + hexOf(inst.SubnetID, 17)
	}
	if inst.State != "terminated" && inst.PrivateIP != "" {
		x.PrivateDNSName = privateDNSName(inst.PrivateIP, s.regionOf(inst))
	}
	for _, g := range inst.SecurityGroupIDs {
		x.GroupSet = append(x.GroupSet, ec2GroupXML{GroupID: g, GroupName: g})
	}
	switch inst.State {
	case "shutting-down", "terminated":
		x.Reason = "User initiated (" + inst.StateChangedAt.UTC().Format("2006-01-02 15:04:05 MST") + ")"
		x.StateReason = &ec2Reason{Code: "Client.UserInitiatedShutdown", Message: "Client.UserInitiatedShutdown: User initiated shutdown"}
	case "stopping", "stopped":
		x.Reason = "User initiated (" + inst.StateChangedAt.UTC().Format("2006-01-02 15:04:05 MST") + ")"
		x.StateReason = &ec2Reason{Code: "Client.UserInitiatedShutdown", Message: "Client.UserInitiatedShutdown: User initiated shutdown"}
	}
	keys := make([]string, 0, len(inst.Tags))
	for k := range inst.Tags {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		x.TagSet = append(x.TagSet, ec2TagXML{Key: k, Value: inst.Tags[k]})
	}
	if inst.IamInstanceProfile != "" {
		arn := inst.IamInstanceProfile
		if !strings.HasPrefix(arn, "arn:") {
			arn = "arn:aws:iam::" + awsAccountID + ":instance-profile/" + arn
		}
		x.IamInstanceProfile = &ec2ProfileXML{Arn: arn, ID: "AIPA" + strings.ToUpper(hexOf(arn, 17))}
	}
	return x
}

// region is the home region (Config.Region, set by New).
func (s *Sim) region() string {
	if s.cfg.Region == "" {
		return DefaultRegion
	}
	return s.cfg.Region
}

// regionOf is the region inst was launched in.
func (s *Sim) regionOf(inst *Instance) string {
	if inst.Region == "" {
		return s.region()
	}
	return inst.Region
}

// privateDNSName is EC2's internal host name: ec2.internal in us-east-1,
// <region>.compute.internal everywhere else.
func privateDNSName(ip, region string) string {
	host := "ip-" + strings.ReplaceAll(ip, ".", "-")
	if region == "us-east-1" {
		return host + ".ec2.internal"
	}
	return host + "." + region + ".compute.internal"
}

// hexOf derives a stable hex string of n characters from v.
func hexOf(v string, n int) string {
	sum := sha256.Sum256([]byte(v))
	return hex.EncodeToString(sum[:])[:n]
}

func (s *Sim) reservationXML(resID string, insts []*Instance) ec2ReservationXML {
	rx := ec2ReservationXML{ReservationID: resID, OwnerID: awsAccountID}
	for i, inst := range insts {
		x := s.instanceXML(inst)
		x.AmiLaunchIndex = i
		rx.Instances = append(rx.Instances, x)
	}
	return rx
}

// ---- RunInstances ----

func (s *Sim) ec2RunInstances(region string, form url.Values) (any, *ec2Error) {
	token := form.Get("ClientToken")
	if len(token) > 64 {
		return nil, ec2BadParam("Value (%s) for parameter clientToken is invalid. Length exceeds maximum of 64 characters.", token)
	}
	for _, c := range token {
		if c < 0x20 || c > 0x7e {
			return nil, ec2BadParam("Value for parameter clientToken is invalid. It must contain printable ASCII characters only.")
		}
	}
	fp := runFingerprint(form)
	if token != "" {
		if ct, ok := s.clientToks[tokenKey{region, token}]; ok {
			if ct.Fingerprint != fp {
				return nil, ec2Err(http.StatusBadRequest, "IdempotentParameterMismatch",
					"Arguments on this idempotent request are inconsistent with arguments used in previous request(s).")
			}
			return ec2RunInstancesResponse{Xmlns: ec2Namespace, RequestID: newRequestID(),
				ec2ReservationXML: s.reservationXML(ct.ReservationID, ct.Instances)}, nil
		}
	}

	image := form.Get("ImageId")
	if image == "" {
		return nil, ec2Err(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter ImageId")
	}
	if !reAMI.MatchString(image) {
		return nil, ec2Err(http.StatusBadRequest, "InvalidAMIID.Malformed", "Invalid id: \"%s\" (expecting \"ami-...\")", image)
	}
	itype := form.Get("InstanceType")
	if itype == "" {
		itype = "m1.small" // the EC2 default
	}
	if !reInstType.MatchString(itype) {
		return nil, ec2BadParam("Invalid value '%s' for InstanceType.", itype)
	}
	minC, okMin, e := formInt(form, "MinCount")
	if e != nil {
		return nil, e
	}
	maxC, okMax, e := formInt(form, "MaxCount")
	if e != nil {
		return nil, e
	}
	if !okMin {
		return nil, ec2Err(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter MinCount")
	}
	if !okMax {
		return nil, ec2Err(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter MaxCount")
	}
	if minC < 1 || maxC < 1 {
		return nil, ec2BadParam("MinCount (%d) and MaxCount (%d) must be at least 1", minC, maxC)
	}
	if minC > maxC {
		return nil, ec2BadParam("MinCount (%d) must be less than or equal to MaxCount (%d)", minC, maxC)
	}
	if minC > ec2MaxLaunch {
		return nil, ec2Err(http.StatusBadRequest, "InstanceLimitExceeded",
			"You have requested more instances (%d) than your current instance limit of %d allows for the specified instance type.", minC, ec2MaxLaunch)
	}
	if maxC > ec2MaxLaunch {
		maxC = ec2MaxLaunch
	}
	userData := form.Get("UserData")
	if userData != "" {
		raw, err := base64.StdEncoding.DecodeString(userData)
		if err != nil {
			return nil, ec2BadParam("Invalid BASE64 encoding of user data.")
		}
		if len(raw) > ec2UserDataMx {
			return nil, ec2BadParam("User data is limited to %d bytes.", ec2UserDataMx)
		}
	}
	tags := map[string]string{}
	for _, i := range formIndexes(form, "TagSpecification") {
		p := "TagSpecification." + strconv.Itoa(i)
		rt := form.Get(p + ".ResourceType")
		switch rt {
		case "instance", "volume", "network-interface":
		case "":
			return nil, ec2Err(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter %s.ResourceType", p)
		default:
			return nil, ec2BadParam("'%s' is not a valid taggable resource type for this operation.", rt)
		}
		ts, e := formTags(form, p+".Tag")
		if e != nil {
			return nil, e
		}
		if len(ts) > ec2TagsMax {
			return nil, ec2Err(http.StatusBadRequest, "TagLimitExceeded", "The maximum number of tags per resource is %d", ec2TagsMax)
		}
		if rt == "instance" {
			for _, t := range ts {
				tags[t[0]] = t[1]
			}
		}
	}
	profile := form.Get("IamInstanceProfile.Arn")
	if name := form.Get("IamInstanceProfile.Name"); name != "" {
		if profile != "" {
			return nil, ec2Err(http.StatusBadRequest, "InvalidParameterCombination", "The parameter 'iamInstanceProfile.name' may not be used in combination with 'iamInstanceProfile.arn'")
		}
		profile = name
	}
	if profile != "" && strings.HasPrefix(profile, "arn:") && !strings.Contains(profile, ":instance-profile/") {
		return nil, ec2BadParam("Value (%s) for parameter iamInstanceProfile.arn is invalid. Invalid IAM Instance Profile ARN", profile)
	}
	metadata, e := formMetadataOptions(form)
	if e != nil {
		return nil, e
	}
	subnet := form.Get("SubnetId")
	publicIP := false
	if subnet != "" && !strings.HasPrefix(subnet, "subnet-") {
		return nil, ec2Err(http.StatusBadRequest, "InvalidSubnetID.Malformed", "The subnet ID '%s' is malformed", subnet)
	}
	groups := formList(form, "SecurityGroupId")
	// A launch may place the instance through its primary network interface
	// instead (how a caller says "no public IP"); AWS refuses both at once.
	if nis := formIndexes(form, "NetworkInterface"); len(nis) > 0 {
		if subnet != "" || len(groups) > 0 {
			return nil, ec2Err(http.StatusBadRequest, "InvalidParameterCombination", "Network interfaces and an instance-level subnet ID or security groups may not be specified on the same request")
		}
		ni := "NetworkInterface." + strconv.Itoa(nis[0]) + "."
		if idx := form.Get(ni + "DeviceIndex"); idx != "0" {
			return nil, ec2BadParam("Value (%s) for parameter networkInterface.deviceIndex is invalid; the primary network interface has DeviceIndex 0", idx)
		}
		subnet = form.Get(ni + "SubnetId")
		groups = formList(form, ni+"SecurityGroupId")
		publicIP = form.Get(ni+"AssociatePublicIpAddress") == "true"
	}
	if subnet != "" && !strings.HasPrefix(subnet, "subnet-") {
		return nil, ec2Err(http.StatusBadRequest, "InvalidSubnetID.Malformed", "The subnet ID '%s' is malformed", subnet)
	}
	for _, g := range groups {
		if !strings.HasPrefix(g, "sg-") {
			return nil, ec2Err(http.StatusBadRequest, "InvalidGroupId.Malformed", "Invalid id: \"%s\" (expecting \"sg-...\")", g)
		}
	}

	now := s.now()
	resID := "r-" + s.newHex(17)
	var insts []*Instance
	for n := 0; n < maxC; n++ {
		s.seq++
		inst := &Instance{
			ID:                 "i-" + s.newHex(17),
			ReservationID:      resID,
			ImageID:            image,
			InstanceType:       itype,
			State:              "pending",
			UserData:           userData,
			Tags:               copyTags(tags),
			IamInstanceProfile: profile,
			SubnetID:           subnet,
			SecurityGroupIDs:   append([]string(nil), groups...),
			PrivateIP:          fmt.Sprintf("10.0.%d.%d", (s.seq/250)%250, s.seq%250+2),
			PublicIP:           publicIPFor(publicIP, s.seq),
			LaunchTime:         now,
			StateChangedAt:     now,
			ClientToken:        token,
			Region:             region,
			MetadataOptions:    metadata,
		}
		s.instances[inst.ID] = inst
		s.reservation[resID] = append(s.reservation[resID], inst.ID)
		insts = append(insts, inst)
		s.schedule(now.Add(s.cfg.BootDelay), event{Kind: evBoot, Instance: inst.ID})
	}
	if token != "" {
		s.clientToks[tokenKey{region, token}] = &clientToken{Fingerprint: fp, ReservationID: resID, CreatedAt: now, Instances: insts}
	}
	return ec2RunInstancesResponse{Xmlns: ec2Namespace, RequestID: newRequestID(),
		ec2ReservationXML: s.reservationXML(resID, insts)}, nil
}

// formMetadataOptions reads and checks RunInstances' MetadataOptions.*; the
// instance keeps what was sent (defaults are filled in when it is shown).
func formMetadataOptions(form url.Values) (MetadataOptions, *ec2Error) {
	var m MetadataOptions
	oneOf := func(key string, dst *string, allowed ...string) *ec2Error {
		v, ok := form["MetadataOptions."+key]
		if !ok {
			return nil
		}
		for _, a := range allowed {
			if v[0] == a {
				*dst = a
				return nil
			}
		}
		return ec2BadParam("Value (%s) for parameter MetadataOptions.%s is invalid. Valid values: %s", v[0], key, strings.Join(allowed, ", "))
	}
	for _, e := range []*ec2Error{
		oneOf("HttpTokens", &m.HttpTokens, "optional", "required"),
		oneOf("HttpEndpoint", &m.HttpEndpoint, "enabled", "disabled"),
		oneOf("HttpProtocolIpv6", &m.HttpProtocolIpv6, "enabled", "disabled"),
		oneOf("InstanceMetadataTags", &m.InstanceMetadataTags, "enabled", "disabled"),
	} {
		if e != nil {
			return m, e
		}
	}
	hops, ok, e := formInt(form, "MetadataOptions.HttpPutResponseHopLimit")
	if e != nil {
		return m, e
	}
	if ok {
		if hops < 1 || hops > 64 {
			return m, ec2BadParam("Value (%d) for parameter MetadataOptions.HttpPutResponseHopLimit is invalid. Expecting a value between 1 and 64.", hops)
		}
		m.HttpPutResponseHopLimit = hops
	}
	return m, nil
}

func copyTags(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

// runFingerprint hashes every RunInstances parameter but the token itself, so
// a retry with the same token is recognised and a changed request is not.
// Lists whose order means nothing (tags, security groups) are compared as
// sets, so a client that builds them from a map still matches itself.
func runFingerprint(form url.Values) string {
	var items []string
	for k, vs := range form {
		switch k {
		case "ClientToken", "Action", "Version", "DryRun":
			continue
		}
		parts := strings.Split(k, ".")
		switch {
		case len(parts) == 5 && parts[0] == "TagSpecification" && parts[2] == "Tag" && parts[4] == "Key":
			spec := strings.Join(parts[:2], ".")
			tag := strings.Join(parts[:4], ".")
			items = append(items, fmt.Sprintf("tag %q %q=%q", form.Get(spec+".ResourceType"), form.Get(k), form.Get(tag+".Value")))
		case len(parts) == 5 && parts[0] == "TagSpecification" && parts[2] == "Tag" && parts[4] == "Value",
			len(parts) == 3 && parts[0] == "TagSpecification" && parts[2] == "ResourceType":
			// folded into the tag item above
		case len(parts) == 2 && parts[0] == "SecurityGroupId":
			items = append(items, fmt.Sprintf("sg %q", form.Get(k)))
		default:
			for _, v := range vs {
				items = append(items, fmt.Sprintf("%q=%q", k, v))
			}
		}
	}
	sort.Strings(items)
	h := sha256.New()
	for _, it := range items {
		fmt.Fprintln(h, it)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// ---- lifecycle ----

// terminateInstanceLocked moves inst to shutting-down and, after
// ShutdownDelay, to terminated; it stays visible for TerminatedRetention.
// Caller holds s.mu. Terminating an already terminating instance is a no-op.
func (s *Sim) terminateInstanceLocked(inst *Instance) {
	if inst.State == "shutting-down" || inst.State == "terminated" {
		return
	}
	wasUp := inst.State == "running" || inst.State == "pending" || inst.State == "stopping"
	now := s.now()
	inst.State = "shutting-down"
	inst.StateChangedAt = now
	if wasUp {
		s.instanceDown(inst)
	}
	s.schedule(now.Add(s.cfg.ShutdownDelay), event{Kind: evShutdownDone, Instance: inst.ID})
}

// shutdownDone ends a termination (evShutdownDone, due ShutdownDelay after
// it began): the instance is terminated, listed for TerminatedRetention,
// and its ClientToken honoured for ec2TokenLife. Caller holds s.mu.
func (s *Sim) shutdownDone(inst *Instance) {
	if inst == nil || inst.State != "shutting-down" {
		return
	}
	doneAt := s.now()
	inst.State = "terminated"
	inst.StateChangedAt = doneAt
	s.schedule(doneAt.Add(s.cfg.TerminatedRetention), event{Kind: evForget, Instance: inst.ID})
	if inst.ClientToken != "" {
		s.schedule(doneAt.Add(max(ec2TokenLife, s.cfg.TerminatedRetention)),
			event{Kind: evTokenExpire, Region: s.regionOf(inst), Token: inst.ClientToken})
	}
}

// expireToken forgets a ClientToken once every instance it launched has
// been terminated for ec2TokenLife; the same token then launches anew.
// Caller holds s.mu.
func (s *Sim) expireToken(token tokenKey) {
	ct := s.clientToks[token]
	if ct == nil {
		return
	}
	now := s.now()
	for _, inst := range ct.Instances {
		if inst.State != "terminated" || now.Before(inst.StateChangedAt.Add(ec2TokenLife)) {
			return
		}
	}
	delete(s.clientToks, token)
	for _, inst := range ct.Instances {
		if s.instances[inst.ID] == inst { // retention longer than the token's life
			return
		}
	}
	delete(s.reservation, ct.ReservationID)
}

// stopInstanceLocked moves a pending or running inst to stopping and, after
// ShutdownDelay, to stopped. Caller holds s.mu. Other states: no-op.
func (s *Sim) stopInstanceLocked(inst *Instance) {
	if inst.State != "running" && inst.State != "pending" {
		return
	}
	now := s.now()
	inst.State = "stopping"
	inst.StateChangedAt = now
	s.instanceDown(inst)
	s.schedule(now.Add(s.cfg.ShutdownDelay), event{Kind: evStopDone, Instance: inst.ID})
}

// lookupInstances resolves InstanceId.N all-or-nothing, as EC2 does, in
// region: an instance of another region does not exist there.
func (s *Sim) lookupInstances(region string, ids []string) ([]*Instance, *ec2Error) {
	var missing []string
	var out []*Instance
	for _, id := range ids {
		if !reInstanceID.MatchString(id) {
			return nil, ec2Err(http.StatusBadRequest, "InvalidInstanceID.Malformed", "Invalid id: \"%s\"", id)
		}
		inst, ok := s.instances[id]
		if !ok || s.regionOf(inst) != region {
			missing = append(missing, id)
			continue
		}
		out = append(out, inst)
	}
	switch len(missing) {
	case 0:
		return out, nil
	case 1:
		return nil, ec2Err(http.StatusBadRequest, "InvalidInstanceID.NotFound", "The instance ID '%s' does not exist", missing[0])
	default:
		return nil, ec2Err(http.StatusBadRequest, "InvalidInstanceID.NotFound", "The instance IDs '%s' do not exist", strings.Join(missing, ", "))
	}
}

func (s *Sim) stateChange(region string, form url.Values, name string, apply func(*Instance)) (any, *ec2Error) {
	ids := formList(form, "InstanceId")
	if len(ids) == 0 {
		return nil, ec2Err(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter InstanceId")
	}
	insts, e := s.lookupInstances(region, ids)
	if e != nil {
		return nil, e
	}
	resp := ec2StateChangeResponse{XMLName: xml.Name{Local: name}, Xmlns: ec2Namespace, RequestID: newRequestID()}
	for _, inst := range insts {
		prev := ec2StateXML{Code: ec2StateCode[inst.State], Name: inst.State}
		apply(inst)
		resp.Instances = append(resp.Instances, ec2StateChangeXML{
			InstanceID: inst.ID, PreviousState: prev,
			CurrentState: ec2StateXML{Code: ec2StateCode[inst.State], Name: inst.State},
		})
	}
	return resp, nil
}

func (s *Sim) ec2TerminateInstances(region string, form url.Values) (any, *ec2Error) {
	return s.stateChange(region, form, "TerminateInstancesResponse", s.terminateInstanceLocked)
}

func (s *Sim) ec2StopInstances(region string, form url.Values) (any, *ec2Error) {
	ids := formList(form, "InstanceId")
	insts, e := s.lookupInstances(region, ids)
	if e != nil {
		return nil, e
	}
	for _, inst := range insts {
		if inst.State == "shutting-down" || inst.State == "terminated" {
			return nil, ec2Err(http.StatusBadRequest, "IncorrectInstanceState",
				"This instance '%s' is not in a state from which it can be stopped.", inst.ID)
		}
	}
	return s.stateChange(region, form, "StopInstancesResponse", s.stopInstanceLocked)
}

func (s *Sim) ec2RebootInstances(region string, form url.Values) (any, *ec2Error) {
	ids := formList(form, "InstanceId")
	if len(ids) == 0 {
		return nil, ec2Err(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter InstanceId")
	}
	insts, e := s.lookupInstances(region, ids)
	if e != nil {
		return nil, e
	}
	for _, inst := range insts {
		if inst.State != "running" {
			return nil, ec2Err(http.StatusBadRequest, "IncorrectInstanceState",
				"The instance '%s' is not in a state from which it can be rebooted.", inst.ID)
		}
	}
	now := s.now()
	for _, inst := range insts {
		// A reboot drops the connector and boots the OS again; the instance
		// stays "running" throughout, as on EC2.
		s.instanceDown(inst)
		s.schedule(now.Add(s.cfg.BootDelay), event{Kind: evRebootUp, Instance: inst.ID, Since: inst.StateChangedAt})
	}
	return ec2ReturnResponse{XMLName: xml.Name{Local: "RebootInstancesResponse"}, Xmlns: ec2Namespace, RequestID: newRequestID(), Return: true}, nil
}

// ---- CreateTags ----

func (s *Sim) ec2CreateTags(region string, form url.Values) (any, *ec2Error) {
	ids := formList(form, "ResourceId")
	if len(ids) == 0 {
		return nil, ec2Err(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter ResourceId")
	}
	tags, e := formTags(form, "Tag")
	if e != nil {
		return nil, e
	}
	if len(tags) == 0 {
		return nil, ec2Err(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter Tag")
	}
	for _, id := range ids {
		if !strings.HasPrefix(id, "i-") {
			return nil, ec2Err(http.StatusBadRequest, "InvalidID", "The ID '%s' is not valid", id)
		}
	}
	insts, e := s.lookupInstances(region, ids)
	if e != nil {
		return nil, e
	}
	for _, inst := range insts {
		n := len(inst.Tags)
		for _, t := range tags {
			if _, ok := inst.Tags[t[0]]; !ok {
				n++
			}
		}
		if n > ec2TagsMax {
			return nil, ec2Err(http.StatusBadRequest, "TagLimitExceeded", "The maximum number of tags per resource is %d (%s)", ec2TagsMax, inst.ID)
		}
	}
	for _, inst := range insts {
		if inst.Tags == nil {
			inst.Tags = map[string]string{}
		}
		for _, t := range tags {
			inst.Tags[t[0]] = t[1]
		}
	}
	return ec2ReturnResponse{XMLName: xml.Name{Local: "CreateTagsResponse"}, Xmlns: ec2Namespace, RequestID: newRequestID(), Return: true}, nil
}

// ---- DescribeInstances ----

type ec2Filter struct {
	name   string
	values []string
}

// parseEC2Filters reads DescribeInstances' Filter.N.Name / Filter.N.Value.M.
func parseEC2Filters(form url.Values) ([]ec2Filter, *ec2Error) {
	return parseFilters(form, func(name string) bool {
		switch name {
		case "tag-key", "tag-value", "instance-state-name", "instance-state-code",
			"instance-id", "client-token", "image-id", "instance-type", "subnet-id":
			return true
		}
		return false
	})
}

// parseFilters reads Filter.N.Name / Filter.N.Value.M, accepting tag:<key>
// and the names served says an action knows; any other name is refused as
// EC2 refuses it.
func parseFilters(form url.Values, served func(name string) bool) ([]ec2Filter, *ec2Error) {
	var out []ec2Filter
	for _, i := range formIndexes(form, "Filter") {
		p := "Filter." + strconv.Itoa(i)
		name := form.Get(p + ".Name")
		if name == "" {
			return nil, ec2Err(http.StatusBadRequest, "MissingParameter", "The request must contain the parameter %s.Name", p)
		}
		if !(strings.HasPrefix(name, "tag:") && len(name) > 4) && !served(name) {
			return nil, ec2BadParam("The filter '%s' is invalid", name)
		}
		out = append(out, ec2Filter{name: name, values: formList(form, p+".Value")})
	}
	return out, nil
}

// anyValue reports whether v matches one of the filter's values.
func (f ec2Filter) anyValue(v string) bool {
	for _, p := range f.values {
		if globMatch(p, v) {
			return true
		}
	}
	return false
}

// globMatch implements EC2 filter wildcards: * any run, ? one character.
func globMatch(pattern, s string) bool {
	if !strings.ContainsAny(pattern, "*?") {
		return pattern == s
	}
	var b strings.Builder
	b.WriteString("^")
	for _, c := range pattern {
		switch c {
		case '*':
			b.WriteString(".*")
		case '?':
			b.WriteString(".")
		default:
			b.WriteString(regexp.QuoteMeta(string(c)))
		}
	}
	b.WriteString("$")
	re, err := regexp.Compile(b.String())
	return err == nil && re.MatchString(s)
}

func (f ec2Filter) match(inst *Instance) bool {
	any := f.anyValue
	switch {
	case strings.HasPrefix(f.name, "tag:"):
		v, ok := inst.Tags[f.name[4:]]
		return ok && any(v)
	case f.name == "tag-key":
		for k := range inst.Tags {
			if any(k) {
				return true
			}
		}
		return false
	case f.name == "tag-value":
		for _, v := range inst.Tags {
			if any(v) {
				return true
			}
		}
		return false
	case f.name == "instance-state-name":
		return any(inst.State)
	case f.name == "instance-state-code":
		return any(strconv.Itoa(ec2StateCode[inst.State]))
	case f.name == "instance-id":
		return any(inst.ID)
	case f.name == "client-token":
		return any(inst.ClientToken)
	case f.name == "image-id":
		return any(inst.ImageID)
	case f.name == "instance-type":
		return any(inst.InstanceType)
	case f.name == "subnet-id":
		return any(inst.SubnetID)
	}
	return false
}

// instanceKey orders instances for pagination: launch time, then id. A
// NextToken is the key of the last instance returned, so a page boundary
// survives instances appearing or disappearing between calls.
func instanceKey(inst *Instance) string {
	return fmt.Sprintf("%020d/%s", inst.LaunchTime.UnixNano(), inst.ID)
}

func (s *Sim) ec2DescribeInstances(region string, form url.Values) (any, *ec2Error) {
	ids := formList(form, "InstanceId")
	filters, e := parseEC2Filters(form)
	if e != nil {
		return nil, e
	}
	maxRes, hasMax, e := formInt(form, "MaxResults")
	if e != nil {
		return nil, e
	}
	if hasMax {
		if len(ids) > 0 {
			return nil, ec2Err(http.StatusBadRequest, "InvalidParameterCombination", "The parameter instancesSet cannot be used with the parameter maxResults")
		}
		if maxRes < 5 || maxRes > 1000 {
			return nil, ec2BadParam("Value ( %d ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", maxRes)
		}
	} else {
		maxRes = 1000
	}
	after := ""
	if tok := form.Get("NextToken"); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || !bytes.HasPrefix(raw, []byte("di1:")) {
			return nil, ec2BadParam("Invalid NextToken value: %q", tok)
		}
		after = string(raw[4:])
	}

	var cands []*Instance
	if len(ids) > 0 {
		insts, e := s.lookupInstances(region, ids)
		if e != nil {
			return nil, e
		}
		cands = insts
	} else {
		for _, inst := range s.instances {
			if s.regionOf(inst) == region {
				cands = append(cands, inst)
			}
		}
	}
	keys := make(map[*Instance]string, len(cands))
	for _, inst := range cands {
		keys[inst] = instanceKey(inst)
	}
	sort.Slice(cands, func(i, j int) bool { return keys[cands[i]] < keys[cands[j]] })
	var page []*Instance
	next := ""
	seen := map[string]bool{}
	for _, inst := range cands {
		if seen[inst.ID] || (after != "" && keys[inst] <= after) {
			continue
		}
		seen[inst.ID] = true
		ok := true
		for _, f := range filters {
			if !f.match(inst) {
				ok = false
				break
			}
		}
		if !ok {
			continue
		}
		if len(page) == maxRes {
			next = base64.RawURLEncoding.EncodeToString([]byte("di1:" + instanceKey(page[len(page)-1])))
			break
		}
		page = append(page, inst)
	}

	resp := ec2DescribeInstancesResponse{Xmlns: ec2Namespace, RequestID: newRequestID(), NextToken: next}
	idx := map[string]int{}
	for _, inst := range page {
		i, ok := idx[inst.ReservationID]
		if !ok {
			i = len(resp.Reservations)
			idx[inst.ReservationID] = i
			resp.Reservations = append(resp.Reservations, ec2ReservationXML{ReservationID: inst.ReservationID, OwnerID: awsAccountID})
		}
		x := s.instanceXML(inst)
		for n, id := range s.reservation[inst.ReservationID] {
			if id == inst.ID {
				x.AmiLaunchIndex = n
			}
		}
		resp.Reservations[i].Instances = append(resp.Reservations[i].Instances, x)
	}
	return resp, nil
}

// ---- DescribeTags ----

type ec2TagDescXML struct {
	ResourceID   string `xml:"resourceId"`
	ResourceType string `xml:"resourceType"`
	Key          string `xml:"key"`
	Value        string `xml:"value"`
}

type ec2DescribeTagsResponse struct {
	XMLName   xml.Name `xml:"DescribeTagsResponse"`
	Xmlns     string   `xml:"xmlns,attr"`
	RequestID string   `xml:"requestId"`
	// A struct, not a "tagSet>item" path, so an empty answer still carries
	// <tagSet/> as EC2's does.
	TagSet struct {
		Items []ec2TagDescXML `xml:"item"`
	} `xml:"tagSet"`
	NextToken string `xml:"nextToken,omitempty"`
}

// tagDescKey orders DescribeTags' answer: resource id, then tag key (NUL
// sorts below every character of either). A NextToken is the key of the
// last tag returned, so a page boundary survives tags coming and going.
func tagDescKey(d ec2TagDescXML) string { return d.ResourceID + "\x00" + d.Key }

// ec2DescribeTags lists the tags of the region's resources: instances are
// the only taggable resource kept (a launch's volume tags are not). Filters
// key, value, resource-id, resource-type select tags; tag:<key> selects
// resources carrying that tag, so all their tags are listed.
func (s *Sim) ec2DescribeTags(region string, form url.Values) (any, *ec2Error) {
	filters, e := parseFilters(form, func(name string) bool {
		switch name {
		case "key", "value", "resource-id", "resource-type":
			return true
		}
		return false
	})
	if e != nil {
		return nil, e
	}
	maxRes, hasMax, e := formInt(form, "MaxResults")
	if e != nil {
		return nil, e
	}
	if !hasMax {
		maxRes = 1000
	} else if maxRes < 5 || maxRes > 1000 {
		return nil, ec2BadParam("Value ( %d ) for parameter maxResults is invalid. Expecting a value between 5 and 1000.", maxRes)
	}
	after := ""
	if tok := form.Get("NextToken"); tok != "" {
		raw, err := base64.RawURLEncoding.DecodeString(tok)
		if err != nil || !bytes.HasPrefix(raw, []byte("dt1:")) {
			return nil, ec2BadParam("Invalid NextToken value: %q", tok)
		}
		after = string(raw[4:])
	}

	var all []ec2TagDescXML
	for _, inst := range s.instances {
		if s.regionOf(inst) != region {
			continue
		}
		selected := true
		for _, f := range filters {
			if k, ok := strings.CutPrefix(f.name, "tag:"); ok {
				if v, has := inst.Tags[k]; !has || !f.anyValue(v) {
					selected = false
				}
			}
		}
		if !selected {
			continue
		}
		for k, v := range inst.Tags {
			all = append(all, ec2TagDescXML{ResourceID: inst.ID, ResourceType: "instance", Key: k, Value: v})
		}
	}
	sort.Slice(all, func(i, j int) bool { return tagDescKey(all[i]) < tagDescKey(all[j]) })
	resp := ec2DescribeTagsResponse{Xmlns: ec2Namespace, RequestID: newRequestID()}
	var page []ec2TagDescXML
	for _, d := range all {
		if after != "" && tagDescKey(d) <= after {
			continue
		}
		ok := true
		for _, f := range filters {
			switch f.name {
			case "key":
				ok = f.anyValue(d.Key)
			case "value":
				ok = f.anyValue(d.Value)
			case "resource-id":
				ok = f.anyValue(d.ResourceID)
			case "resource-type":
				ok = f.anyValue(d.ResourceType)
			}
			if !ok {
				break
			}
		}
		if !ok {
			continue
		}
		if len(page) == maxRes {
			resp.NextToken = base64.RawURLEncoding.EncodeToString([]byte("dt1:" + tagDescKey(page[len(page)-1])))
			break
		}
		page = append(page, d)
	}
	resp.TagSet.Items = page
	return resp, nil
}

// publicIPFor gives an instance a documentation-range public address only
// when its launch asked for one.
func publicIPFor(want bool, seq uint64) string {
	if !want {
		return ""
	}
	return fmt.Sprintf("198.51.100.%d", seq%250+2)
}
