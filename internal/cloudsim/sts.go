package cloudsim

// STS (protocol awsQuery, API version 2011-06-15): GetCallerIdentity only,
// so a client can ask whom the sandbox credentials belong to. Form-encoded
// POST with Action=, XML answers in the 2011-06-15 namespace wrapped in
// <GetCallerIdentityResponse><GetCallerIdentityResult>, errors as
// <ErrorResponse><Error><Type><Code><Message>, as aws-sdk-go-v2's
// service/sts and the aws CLI send and parse them. STS shares the endpoint
// with EC2, whose requests are form POSTs too: the service a request was
// signed for tells them apart (Sim.Handler).

import (
	"encoding/xml"
	"io"
	"net/http"
	"net/url"
	"strings"
)

const (
	stsNamespace = "https://sts.amazonaws.com/doc/2011-06-15/"
	stsVersion   = "2011-06-15"
	// awsUserName is the sandbox's IAM user: the owner of the access key,
	// the caller GetCallerIdentity names and every parameter's
	// LastModifiedUser.
	awsUserName = "sandbox"
)

// callerARN is the sandbox user's ARN, in the partition of region.
func callerARN(region string) string {
	return "arn:" + partitionOf(region) + ":iam::" + awsAccountID + ":user/" + awsUserName
}

// callerUserID is the sandbox user's unique id: AIDA and 17 characters, the
// shape of an IAM user id.
func callerUserID() string { return "AIDA" + strings.ToUpper(hexOf("user/"+awsUserName, 17)) }

type stsError struct {
	Status  int
	Code    string
	Message string
}

type stsErrorResponse struct {
	XMLName xml.Name `xml:"ErrorResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Error   struct {
		Type    string `xml:"Type"`
		Code    string `xml:"Code"`
		Message string `xml:"Message"`
	} `xml:"Error"`
	RequestID string `xml:"RequestId"`
}

func writeSTSError(w http.ResponseWriter, e *stsError) {
	var out stsErrorResponse
	out.Xmlns, out.RequestID = stsNamespace, newRequestID()
	out.Error.Type, out.Error.Code, out.Error.Message = "Sender", e.Code, e.Message
	if e.Status >= 500 {
		out.Error.Type = "Receiver"
	}
	body, _ := xml.Marshal(out)
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(e.Status)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}

type stsCallerIdentityResponse struct {
	XMLName xml.Name `xml:"GetCallerIdentityResponse"`
	Xmlns   string   `xml:"xmlns,attr"`
	Result  struct {
		Arn     string `xml:"Arn"`
		UserID  string `xml:"UserId"`
		Account string `xml:"Account"`
	} `xml:"GetCallerIdentityResult"`
	RequestID string `xml:"ResponseMetadata>RequestId"`
}

// serveSTS serves the STS query API.
func (s *Sim) serveSTS(w http.ResponseWriter, r *http.Request) {
	op := "sts.Unknown"
	fail := func(e *stsError) {
		s.countCall(op, e.Status)
		writeSTSError(w, e)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxAWSBody+1))
	if err != nil || len(body) > maxAWSBody {
		fail(&stsError{http.StatusBadRequest, "InvalidParameterValue", "request body unreadable or too large"})
		return
	}
	form, err := url.ParseQuery(string(body))
	if err != nil {
		fail(&stsError{http.StatusBadRequest, "InvalidParameterValue", "request body is not form-encoded: " + err.Error()})
		return
	}
	action := form.Get("Action")
	if action != "" {
		op = "sts." + action
	}
	region, ae := s.verifySigV4(r, body, "sts")
	if ae != nil {
		// STS answers every authentication failure with 403.
		switch {
		case ae.Missing:
			fail(&stsError{http.StatusForbidden, "MissingAuthenticationToken", ae.Message})
		case ae.BadKey:
			fail(&stsError{http.StatusForbidden, "InvalidClientTokenId", ae.Message})
		default:
			fail(&stsError{http.StatusForbidden, "SignatureDoesNotMatch", ae.Message})
		}
		return
	}
	switch {
	case action == "":
		fail(&stsError{http.StatusBadRequest, "MissingAction", "Missing Action"})
		return
	case form.Get("Version") != stsVersion || action != "GetCallerIdentity":
		fail(&stsError{http.StatusBadRequest, "InvalidAction", "Could not find operation " + action + " for version " + form.Get("Version")})
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
		fail(&stsError{http.StatusBadRequest, "Throttling", "Rate exceeded"})
		return
	case FaultError:
		st := f.Status
		if st == 0 {
			st = http.StatusInternalServerError
		}
		fail(&stsError{st, "InternalFailure", "An internal error has occurred"})
		return
	}

	out := stsCallerIdentityResponse{Xmlns: stsNamespace, RequestID: newRequestID()}
	out.Result.Arn, out.Result.UserID, out.Result.Account = callerARN(region), callerUserID(), awsAccountID
	body, err = xml.Marshal(out)
	if err != nil {
		fail(&stsError{http.StatusInternalServerError, "InternalFailure", "encoding the response: " + err.Error()})
		return
	}
	s.countCall(op, http.StatusOK)
	w.Header().Set("Content-Type", "text/xml")
	w.WriteHeader(http.StatusOK)
	_, _ = w.Write([]byte(xml.Header))
	_, _ = w.Write(body)
}
