package secret

import "strings"

// RedactURL hides the password or token in a URL, or in each URL of a
// comma-separated list (a NATS server list), for logs and errors:
// nats://u:p@host becomes nats://u:[redacted]@host and nats://tok@host
// becomes nats://[redacted]@host. It works on the text, not on a parsed
// URL, so a malformed URL (the kind that ends up in an error message) cannot
// leak either. Use it on every URL printed before a connection exists; a
// connected nats.Conn has ConnectedUrlRedacted.
func RedactURL(s string) string {
	parts := strings.Split(s, ",")
	for i, p := range parts {
		parts[i] = redactOne(p)
	}
	return strings.Join(parts, ",")
}

// RedactURLsIn replaces, in text, the credentials of every URL of the
// comma-separated list urls, wherever they occur (an error from a URL
// parser quotes the raw URL).
func RedactURLsIn(text, urls string) string {
	for _, p := range strings.Split(urls, ",") {
		if ui, ok := userinfo(p); ok {
			text = strings.ReplaceAll(text, ui+"@", redactUserinfo(ui)+"@")
		}
	}
	return text
}

func redactOne(u string) string {
	ui, ok := userinfo(u)
	if !ok {
		return u
	}
	return strings.Replace(u, ui+"@", redactUserinfo(ui)+"@", 1)
}

// userinfo is the text between the scheme's "//" (or the start) and the
// last "@" of the authority.
func userinfo(u string) (string, bool) {
	rest := u
	if _, after, ok := strings.Cut(u, "://"); ok {
		rest = after
	}
	if i := strings.IndexAny(rest, "/?#"); i >= 0 {
		rest = rest[:i]
	}
	at := strings.LastIndex(rest, "@")
	if at < 0 {
		return "", false
	}
	return rest[:at], true
}

// redactUserinfo keeps a user name (it says which account, and is no
// secret) and hides the password; a lone value is a token and is hidden.
func redactUserinfo(ui string) string {
	if user, _, ok := strings.Cut(ui, ":"); ok {
		return user + ":" + Redacted
	}
	return Redacted
}
