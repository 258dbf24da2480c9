package cloudsim

// AWS Signature Version 4 verification, shared by the EC2 and SSM handlers.
// Written from the SigV4 specification (canonical request, string to sign,
// derived signing key); it deliberately does not reuse the SDK's signer, so a
// signer bug cannot hide behind an identical verifier bug.

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"time"
)

// sigV4MaxSkew is how far a request's X-Amz-Date may be from now.
const sigV4MaxSkew = 15 * time.Minute

// awsAuthError is why a request's signature was refused.
type awsAuthError struct {
	// BadKey: the access key id is unknown (EC2 AuthFailure, SSM
	// UnrecognizedClientException); otherwise the signature or its scope is
	// wrong (EC2 SignatureDoesNotMatch, SSM InvalidSignatureException).
	BadKey  bool
	Missing bool // no Authorization header at all
	Expired bool // X-Amz-Date more than 15 minutes from now (EC2 RequestExpired)
	Message string
}

func (e *awsAuthError) Error() string { return e.Message }

// verifySigV4 checks r (whose body has already been read into body) against
// the configured access key and secret for service ("ec2", "ssm"), and
// returns the region of its credential scope: the region the request acts
// in, always one of Config.Regions.
func (s *Sim) verifySigV4(r *http.Request, body []byte, service string) (string, *awsAuthError) {
	auth := r.Header.Get("Authorization")
	if auth == "" {
		return "", &awsAuthError{Missing: true, Message: "Request is missing Authentication Token"}
	}
	const algo = "AWS4-HMAC-SHA256"
	if !strings.HasPrefix(auth, algo+" ") {
		return "", &awsAuthError{Message: "Unsupported authorization algorithm; only " + algo + " is accepted"}
	}
	var cred, signedHeaders, sig string
	for _, part := range strings.Split(strings.TrimPrefix(auth, algo+" "), ",") {
		k, v, _ := strings.Cut(strings.TrimSpace(part), "=")
		switch k {
		case "Credential":
			cred = v
		case "SignedHeaders":
			signedHeaders = v
		case "Signature":
			sig = v
		}
	}
	if cred == "" || signedHeaders == "" || sig == "" {
		return "", &awsAuthError{Message: "Authorization header requires 'Credential', 'SignedHeaders' and 'Signature' parameters"}
	}
	// Credential = AKID/date/region/service/aws4_request
	cp := strings.Split(cred, "/")
	if len(cp) != 5 || cp[4] != "aws4_request" {
		return "", &awsAuthError{Message: fmt.Sprintf("Credential %q is not of the form AKID/yyyymmdd/region/service/aws4_request", cred)}
	}
	akid, date, region, svc := cp[0], cp[1], cp[2], cp[3]
	if akid != s.cfg.AWSAccessKey {
		return "", &awsAuthError{BadKey: true, Message: "The security token included in the request is invalid."}
	}
	if svc != service {
		return "", &awsAuthError{Message: fmt.Sprintf("Credential should be scoped to correct service: '%s'.", service)}
	}
	// Each region is its own endpoint on AWS; here one address serves the
	// account's regions, told apart by the scope, and refuses the others.
	if !s.hasRegion(region) {
		return "", &awsAuthError{Message: fmt.Sprintf("Credential should be scoped to a valid region, not '%s'.", region)}
	}
	amzDate := r.Header.Get("X-Amz-Date")
	if len(amzDate) != len("20060102T150405Z") || !strings.HasPrefix(amzDate, date) {
		return "", &awsAuthError{Message: "X-Amz-Date is missing or does not match the credential scope date"}
	}
	// AWS refuses signatures more than 15 minutes off its own time. The SDK
	// signs with the wall clock, so that is the clock to compare with, not
	// the world's (possibly fake) clock.
	signedAt, err := time.Parse("20060102T150405Z", amzDate)
	if err != nil {
		return "", &awsAuthError{Message: fmt.Sprintf("X-Amz-Date %q is not of the form yyyymmddThhmmssZ", amzDate)}
	}
	if skew := time.Since(signedAt); skew > sigV4MaxSkew || skew < -sigV4MaxSkew {
		return "", &awsAuthError{Expired: true, Message: fmt.Sprintf("Signature expired: %s is now earlier or later than %s (15 min. skew allowed)",
			amzDate, time.Now().UTC().Format("20060102T150405Z"))}
	}

	// Canonical request.
	names := strings.Split(signedHeaders, ";")
	if !sort.StringsAreSorted(names) {
		return "", &awsAuthError{Message: "SignedHeaders must be sorted"}
	}
	hasHost := false
	var ch strings.Builder
	for _, n := range names {
		var vals []string
		if n == "host" {
			hasHost = true
			vals = []string{r.Host}
		} else {
			vals = r.Header.Values(n)
		}
		for i, v := range vals {
			vals[i] = strings.Join(strings.Fields(v), " ")
		}
		ch.WriteString(n)
		ch.WriteByte(':')
		ch.WriteString(strings.Join(vals, ","))
		ch.WriteByte('\n')
	}
	if !hasHost {
		return "", &awsAuthError{Message: "'Host' must be a signed header"}
	}
	payloadHash := r.Header.Get("X-Amz-Content-Sha256")
	if payloadHash == "" {
		sum := sha256.Sum256(body)
		payloadHash = hex.EncodeToString(sum[:])
	}
	path := r.URL.EscapedPath()
	if path == "" {
		path = "/"
	}
	canon := strings.Join([]string{
		r.Method,
		path,
		canonicalQuery(r.URL.Query()),
		ch.String(),
		signedHeaders,
		payloadHash,
	}, "\n")
	ch256 := sha256.Sum256([]byte(canon))
	scope := strings.Join([]string{date, region, svc, "aws4_request"}, "/")
	toSign := strings.Join([]string{algo, amzDate, scope, hex.EncodeToString(ch256[:])}, "\n")

	key := hmacSHA256([]byte("AWS4"+s.cfg.AWSSecret), date)
	key = hmacSHA256(key, region)
	key = hmacSHA256(key, svc)
	key = hmacSHA256(key, "aws4_request")
	want := hex.EncodeToString(hmacSHA256(key, toSign))
	if !hmac.Equal([]byte(want), []byte(sig)) {
		return "", &awsAuthError{Message: "The request signature we calculated does not match the signature you provided. Check your AWS Secret Access Key and signing method. Consult the service documentation for details."}
	}
	return region, nil
}

// sigV4Service is the service named by r's SigV4 credential scope
// (AKID/date/region/SERVICE/aws4_request), "" when r is not signed that way.
// Routing only: verifySigV4 still checks the whole signature.
func sigV4Service(r *http.Request) string {
	_, rest, ok := strings.Cut(r.Header.Get("Authorization"), "Credential=")
	if !ok {
		return ""
	}
	cred, _, _ := strings.Cut(rest, ",")
	if parts := strings.Split(strings.TrimSpace(cred), "/"); len(parts) == 5 {
		return parts[3]
	}
	return ""
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// canonicalQuery sorts parameters by name then value, RFC 3986-encoded.
func canonicalQuery(q url.Values) string {
	type kv struct{ k, v string }
	var all []kv
	for k, vs := range q {
		for _, v := range vs {
			all = append(all, kv{sigEscape(k), sigEscape(v)})
		}
	}
	sort.Slice(all, func(i, j int) bool {
		if all[i].k != all[j].k {
			return all[i].k < all[j].k
		}
		return all[i].v < all[j].v
	})
	parts := make([]string, len(all))
	for i, p := range all {
		parts[i] = p.k + "=" + p.v
	}
	return strings.Join(parts, "&")
}

// sigEscape percent-encodes everything but the RFC 3986 unreserved set.
func sigEscape(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		if c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_' || c == '.' || c == '~' {
			b.WriteByte(c)
		} else {
			fmt.Fprintf(&b, "%%%02X", c)
		}
	}
	return b.String()
}
