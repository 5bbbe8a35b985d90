package httpio

// Interning: the reader hands out strings for methods and common field
// names from constants instead of the head's backing string so that code
// comparing or storing them (maps, logs) works with short-lived constants,
// and CanonicalName can return a constant instead of allocating.

// internMethod returns a constant for a common method, or "".
func internMethod(b string) string {
	switch len(b) {
	case 3:
		if b == "GET" {
			return "GET"
		}
		if b == "PUT" {
			return "PUT"
		}
	case 4:
		if b == "POST" {
			return "POST"
		}
		if b == "HEAD" {
			return "HEAD"
		}
	case 5:
		if b == "PATCH" {
			return "PATCH"
		}
		if b == "TRACE" {
			return "TRACE"
		}
	case 6:
		if b == "DELETE" {
			return "DELETE"
		}
	case 7:
		if b == "OPTIONS" {
			return "OPTIONS"
		}
		if b == "CONNECT" {
			return "CONNECT"
		}
	}
	return ""
}

// canonicalCommon lists canonical spellings of frequent field names.
var canonicalCommon = [...]string{
	"Accept", "Accept-Charset", "Accept-Encoding", "Accept-Language", "Accept-Ranges",
	"Age", "Allow", "Authorization", "Cache-Control", "Connection", "Content-Disposition",
	"Content-Encoding", "Content-Language", "Content-Length", "Content-Location",
	"Content-Range", "Content-Type", "Cookie", "Date", "Etag", "Expect", "Expires",
	"Forwarded", "From", "Host", "If-Match", "If-Modified-Since", "If-None-Match",
	"If-Range", "If-Unmodified-Since", "Keep-Alive", "Last-Modified", "Link", "Location",
	"Origin", "Pragma", "Proxy-Authenticate", "Proxy-Authorization", "Proxy-Connection",
	"Range", "Referer", "Retry-After", "Server", "Set-Cookie", "Te", "Trailer",
	"Transfer-Encoding", "Upgrade", "User-Agent", "Vary", "Via", "Www-Authenticate",
	"X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto", "X-Request-Id",
	"Sec-Fetch-Dest", "Sec-Fetch-Mode", "Sec-Fetch-Site", "Upgrade-Insecure-Requests",
	"Dnt", "Priority",
}

// commonByLen indexes canonicalCommon by length for a cheap lookup.
var commonByLen = func() (t [32][]string) {
	for _, s := range canonicalCommon {
		t[len(s)] = append(t[len(s)], s)
	}
	return t
}()

// commonName returns the canonical constant for a common field name in any
// ASCII case, or "".
func commonName(name string) string {
	if len(name) >= len(commonByLen) {
		return ""
	}
	for _, s := range commonByLen[len(name)] {
		if EqualFold(s, name) {
			return s
		}
	}
	return ""
}

// internName returns a constant equal (byte for byte) to b when b spells a
// common field name exactly as we keep it, or "". The reader keeps names as
// received, so only exact matches of canonical or all-lower-case spellings
// are interned.
func internName(b string) string {
	if len(b) >= len(commonByLen) {
		return ""
	}
	for _, s := range commonByLen[len(b)] {
		if b == s {
			return s
		}
	}
	return ""
}
