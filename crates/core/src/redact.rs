//! Hiding passwords in text that may hold a database, Redis or provider URL, before it reaches a log line, an
//! error message or a response: the one place that knows the forms a credential takes in a URL or DSN.
//!
//! Handled: the password of a URL's user info in any scheme (`postgres://u:p@h`, `redis://:p@h`, `rediss://`,
//! percent-encoded or not, `@` and `/` inside it included), and the value of a password-like parameter, in a
//! query string (`?password=...&sslpassword=...`) or a key-value DSN (`host=h password='p w'`). User names,
//! hosts and everything else are kept, so the text still says which database failed.

/// What a password is replaced with.
pub const MASK: &str = "***";

/// `text` with every password it holds replaced by [`MASK`]. Works on free text: an error message that quotes
/// a URL is redacted as well as the URL alone.
pub fn redact(text: &str) -> String {
    redact_params(&redact_userinfo(text))
}

/// Characters that end a URL inside free text.
fn ends_url(c: char) -> bool {
    ends_userinfo(c) || matches!(c, '\'' | ',' | ')')
}

/// Characters that end a URL's user info inside free text: fewer than [`ends_url`], because a password may hold
/// an unencoded `'`, `,` or `)` (RFC 3986 allows them, and URL parsers keep them as written).
fn ends_userinfo(c: char) -> bool {
    c.is_whitespace() || matches!(c, '"' | '<' | '>' | '`')
}

/// `scheme://user:PASSWORD@host` -> `scheme://user:***@host`.
fn redact_userinfo(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(i) = rest.find("://") {
        let (head, tail) = rest.split_at(i + 3);
        out.push_str(head);
        let wide = &tail[..tail.find(ends_userinfo).unwrap_or(tail.len())];
        // The user info ends at the last `@` (a password may hold an unencoded `@` or `/`); it has a password
        // when a `:` comes before any `/`, `?` or `#` (else the `@` belongs to a path or a query).
        let password = wide.rfind('@').and_then(|at| {
            let colon = wide[..at].find(':')?;
            let delimiter = wide[..at].find(['/', '?', '#']).unwrap_or(at);
            (colon < delimiter).then_some((colon, at))
        });
        rest = match password {
            Some((colon, at)) => {
                out.push_str(&wide[..=colon]);
                out.push_str(MASK);
                &tail[at..]
            }
            None => {
                let end = tail.find(ends_url).unwrap_or(tail.len());
                out.push_str(&tail[..end]);
                &tail[end..]
            }
        };
    }
    out.push_str(rest);
    out
}

/// Whether a parameter named `name` holds a secret.
fn is_secret_param(name: &str) -> bool {
    let name = name.to_ascii_lowercase();
    ["password", "passwd", "pwd", "secret", "token", "api_key", "apikey"].iter().any(|s| name.ends_with(s))
        || name == "pass"
}

/// `password=VALUE` -> `password=***` where the parameter starts the text or follows `?`, `&`, `;` or blank.
/// A value runs to `&`, `;` or blank, or is quoted (`'...'` with `\'` inside, as in libpq DSNs).
fn redact_params(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(eq) = rest.find('=') {
        let name_start = rest[..eq]
            .rfind(|c: char| c.is_whitespace() || matches!(c, '?' | '&' | ';' | '"' | '\'' | '('))
            .map_or(0, |i| i + rest[i..].chars().next().map_or(1, char::len_utf8));
        let name = &rest[name_start..eq];
        out.push_str(&rest[..=eq]);
        let value = &rest[eq + 1..];
        if name.is_empty() || !is_secret_param(name) {
            rest = value;
            continue;
        }
        let value_end = if let Some(quoted) = value.strip_prefix('\'') {
            quoted_end(quoted).map_or(value.len(), |end| end + 2)
        } else {
            value
                .find(|c: char| c.is_whitespace() || matches!(c, '&' | ';' | '"' | '#'))
                .unwrap_or(value.len())
        };
        if value_end > 0 {
            out.push_str(MASK);
        }
        rest = &value[value_end..];
    }
    out.push_str(rest);
    out
}

/// Where the closing `'` of a quoted DSN value is (backslash escapes skipped).
fn quoted_end(quoted: &str) -> Option<usize> {
    let mut escaped = false;
    for (i, c) in quoted.char_indices() {
        match c {
            _ if escaped => escaped = false,
            '\\' => escaped = true,
            '\'' => return Some(i),
            _ => {}
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::redact;

    #[test]
    fn hides_passwords_in_every_url_form() {
        let table = [
            ("postgres://u:secret@h:5432/db", "postgres://u:***@h:5432/db"),
            ("postgresql://u:secret@h/db?sslmode=require", "postgresql://u:***@h/db?sslmode=require"),
            ("postgres://u:p%40ss%2Fw@h/db", "postgres://u:***@h/db"),
            ("postgres://u:p@ss/w@h/db", "postgres://u:***@h/db"),
            ("postgres://u:@h/db", "postgres://u:***@h/db"),
            ("redis://:secret@127.0.0.1:6379/0", "redis://:***@127.0.0.1:6379/0"),
            ("rediss://default:secret@cache.example:6380", "rediss://default:***@cache.example:6380"),
            ("https://user:secret@proxy.example/v1", "https://user:***@proxy.example/v1"),
            ("postgres://h/db?user=u&password=secret", "postgres://h/db?user=u&password=***"),
            (
                "postgres://h/db?password=secret&sslmode=disable",
                "postgres://h/db?password=***&sslmode=disable",
            ),
            ("postgres://h/db?sslpassword=s3&PASSWORD=x", "postgres://h/db?sslpassword=***&PASSWORD=***"),
            ("host=h user=u password=secret dbname=db", "host=h user=u password=*** dbname=db"),
            ("host=h password='s e\\'cret' dbname=db", "host=h password=*** dbname=db"),
            ("Server=h;User Id=u;Password=secret;", "Server=h;User Id=u;Password=***;"),
            (
                "error connecting to \"postgres://u:secret@h/db\": refused",
                "error connecting to \"postgres://u:***@h/db\": refused",
            ),
            ("a postgres://u:one@h and redis://:two@r", "a postgres://u:***@h and redis://:***@r"),
            ("https://u:p,secret@proxy/v1", "https://u:***@proxy/v1"),
            ("https://u:p)secret@proxy/v1", "https://u:***@proxy/v1"),
            ("(https://u:p'secret@proxy/v1)", "(https://u:***@proxy/v1)"),
            ("at 'postgres://u:secret@h/db', retrying", "at 'postgres://u:***@h/db', retrying"),
        ];
        for (input, want) in table {
            assert_eq!(redact(input), want, "{input}");
            assert!(!redact(input).contains("secret"), "{input}");
        }
    }

    #[test]
    fn keeps_what_holds_no_password() {
        for text in [
            "postgres://u@h/db",
            "postgres://h/db",
            "sqlite://leadscore.db",
            "sqlite::memory:",
            "https://api.example/v1/chat?user=a@b.example",
            "https://h/p@q",
            "host=h dbname=db sslmode=require",
            "a=b == c, tokens=5",
            "",
        ] {
            assert_eq!(redact(text), text, "{text}");
        }
        assert_eq!(redact("ü://é:ß@ñ ç=password=ï"), "ü://é:***@ñ ç=password=***");
    }
}
