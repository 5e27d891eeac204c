// Package conninfo keeps passwords off the command lines of the PostgreSQL
// client programs pitr runs (pg_basebackup, pg_dump, pg_dumpall, pg_restore,
// psql). Any local user can read a process's arguments in /proc or ps;
// its environment only the same user and root can. So a password written
// in the connection settings (--dsn) is taken out of the -d argument and
// handed to the program as PGPASSWORD, which libpq reads when the
// connection string has none.
package conninfo

import (
	"errors"
	"net/url"
	"strings"
)

// errInvalid never quotes the connection string: it may hold a password.
var errInvalid = errors.New("connection settings (--dsn) are not a valid connection string")

// WithoutPassword returns dsn with every password removed, and the
// password libpq would use (the last one given; "" if none). Keyword/value
// strings keep the rest of their text exactly; URIs are re-encoded.
func WithoutPassword(dsn string) (string, string, error) {
	if strings.HasPrefix(dsn, "postgres://") || strings.HasPrefix(dsn, "postgresql://") {
		return uriWithoutPassword(dsn)
	}
	return keywordsWithoutPassword(dsn)
}

func uriWithoutPassword(dsn string) (string, string, error) {
	u, err := url.Parse(dsn)
	if err != nil {
		return "", "", errInvalid
	}
	var password string
	changed := false
	if u.User != nil {
		if p, ok := u.User.Password(); ok {
			password, changed = p, true
			u.User = url.User(u.User.Username())
		}
	}
	// libpq lets a query parameter override the user-info part.
	if q := u.Query(); q.Has("password") {
		vs := q["password"]
		password, changed = vs[len(vs)-1], true
		q.Del("password")
		u.RawQuery = q.Encode()
	}
	if !changed {
		return dsn, "", nil
	}
	return u.String(), password, nil
}

// keywordsWithoutPassword parses keyword = value pairs as libpq's
// conninfo_parse does: values are bare (ending at white space) or in single
// quotes, and a backslash takes the next character literally in both.
func keywordsWithoutPassword(dsn string) (string, string, error) {
	var (
		out      strings.Builder
		password string
		found    bool
	)
	i, keep := 0, 0 // keep: start of the text not yet copied to out
	for {
		for i < len(dsn) && isSpace(dsn[i]) {
			i++
		}
		if i == len(dsn) {
			break
		}
		start := i
		for i < len(dsn) && dsn[i] != '=' && !isSpace(dsn[i]) {
			i++
		}
		key := dsn[start:i]
		for i < len(dsn) && isSpace(dsn[i]) {
			i++
		}
		if key == "" || i == len(dsn) || dsn[i] != '=' {
			return "", "", errInvalid
		}
		i++
		for i < len(dsn) && isSpace(dsn[i]) {
			i++
		}
		var value strings.Builder
		if i < len(dsn) && dsn[i] == '\'' {
			i++
			closed := false
			for i < len(dsn) {
				c := dsn[i]
				if c == '\\' && i+1 < len(dsn) {
					value.WriteByte(dsn[i+1])
					i += 2
					continue
				}
				i++
				if c == '\'' {
					closed = true
					break
				}
				value.WriteByte(c)
			}
			if !closed {
				return "", "", errInvalid
			}
		} else {
			for i < len(dsn) && !isSpace(dsn[i]) {
				if dsn[i] == '\\' && i+1 < len(dsn) {
					i++
				}
				value.WriteByte(dsn[i])
				i++
			}
		}
		if key == "password" {
			password, found = value.String(), true
			out.WriteString(dsn[keep:start])
			for i < len(dsn) && isSpace(dsn[i]) {
				i++
			}
			keep = i
		}
	}
	if !found {
		return dsn, "", nil
	}
	out.WriteString(dsn[keep:])
	return strings.TrimSpace(out.String()), password, nil
}

func isSpace(c byte) bool {
	return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\f' || c == '\v'
}

// HidePassword returns args with the password taken out of the connection
// string after each -d, and the environment entries that pass it instead
// (PGPASSWORD=...; nil when there is none). Give them to the program as
// cmd.Env = append(os.Environ(), env...).
func HidePassword(args []string) ([]string, []string, error) {
	out := append([]string(nil), args...)
	var password string
	found := false
	for i := 0; i+1 < len(out); i++ {
		if out[i] != "-d" {
			continue
		}
		clean, p, err := WithoutPassword(out[i+1])
		if err != nil {
			return nil, nil, err
		}
		if clean != out[i+1] || p != "" {
			out[i+1], password, found = clean, p, true
		}
		i++
	}
	if !found {
		return out, nil, nil
	}
	return out, []string{"PGPASSWORD=" + password}, nil
}
