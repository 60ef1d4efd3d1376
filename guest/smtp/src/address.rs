//! Envelope paths (RFC 5321 4.1.2): `<local@domain>` after `MAIL FROM:` and
//! `RCPT TO:`, then the command's parameters. ASCII only (no SMTPUTF8).

/// Longest path, angle brackets included (RFC 5321 4.5.3.1.3).
pub const MAX_PATH: usize = 256;
/// Longest local part (RFC 5321 4.5.3.1.1).
const MAX_LOCAL: usize = 64;
/// Longest domain (RFC 5321 4.5.3.1.2).
const MAX_DOMAIN: usize = 255;

/// Why a `FROM:` or `TO:` argument was refused.
#[derive(Debug, PartialEq, Eq)]
pub enum PathError {
    /// Not `KEYWORD:<...>` followed by nothing or a space: the command's syntax.
    Syntax,
    /// Brackets in place, but the address within is not one.
    Address,
}

/// Splits `FROM:<path> params` (the keyword `FROM:` or `TO:` given in
/// `keyword`, matched in any case; spaces after the colon tolerated, as most
/// servers do) into the path's contents and the parameters.
pub fn split<'a>(arg: &'a str, keyword: &str) -> Result<(&'a str, &'a str), PathError> {
    let head = arg.get(..keyword.len()).filter(|h| h.eq_ignore_ascii_case(keyword)).ok_or(PathError::Syntax)?;
    let rest = arg[head.len()..].trim_start_matches(' ');
    let inner = rest.strip_prefix('<').ok_or(PathError::Syntax)?;
    let mut quoted = false;
    let mut escaped = false;
    for (i, c) in inner.char_indices() {
        if escaped {
            escaped = false;
            continue;
        }
        match c {
            '\\' if quoted => escaped = true,
            '"' => quoted = !quoted,
            '>' if !quoted => {
                let params = &inner[i + 1..];
                if !params.is_empty() && !params.starts_with(' ') {
                    return Err(PathError::Syntax);
                }
                if i + 2 > MAX_PATH {
                    return Err(PathError::Address);
                }
                return Ok((&inner[..i], params.trim_matches(' ')));
            }
            _ => {}
        }
    }
    Err(PathError::Syntax)
}

/// The mailbox of a path, its source route (`@a,@b:`) dropped: RFC 5321
/// 4.1.2 has servers accept and ignore one. None if it is not `local@domain`.
pub fn mailbox(path: &str) -> Option<&str> {
    let mailbox = if path.starts_with('@') {
        let (route, mailbox) = path.split_once(':')?;
        route.split(',').all(|hop| hop.strip_prefix('@').is_some_and(domain)).then_some(mailbox)?
    } else {
        path
    };
    let at = mailbox.rfind('@')?;
    (local(&mailbox[..at]) && domain(&mailbox[at + 1..])).then_some(mailbox)
}

/// `atext` of RFC 5322 3.2.3: what a dot-atom's atoms are made of.
fn atext(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-/=?^_`{|}~".contains(&b)
}

/// A dot-atom (`first.last`) or a quoted string (`"first last"`).
fn local(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_LOCAL {
        return false;
    }
    match s.strip_prefix('"').and_then(|q| q.strip_suffix('"')) {
        Some(quoted) => {
            let mut escaped = false;
            quoted.bytes().all(|b| {
                let ok = (b' '..=b'~').contains(&b) && (escaped || (b != b'"'));
                escaped = !escaped && b == b'\\';
                ok
            }) && !escaped
        }
        None => s.split('.').all(|atom| !atom.is_empty() && atom.bytes().all(atext)),
    }
}

/// A domain name (`mail.example.com`) or an address literal (`[127.0.0.1]`,
/// `[IPv6:::1]`).
fn domain(s: &str) -> bool {
    if s.is_empty() || s.len() > MAX_DOMAIN {
        return false;
    }
    match s.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
        Some(literal) => !literal.is_empty() && literal.bytes().all(|b| b.is_ascii_graphic() && !b"[]\\".contains(&b)),
        None => s.split('.').all(|label| {
            !label.is_empty()
                && label.len() <= 63
                && label.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
                && !label.starts_with('-')
                && !label.ends_with('-')
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_path_and_parameters() {
        assert_eq!(split("FROM:<a@b.c>", "FROM:"), Ok(("a@b.c", "")));
        assert_eq!(split("from: <a@b.c> SIZE=10  BODY=8BITMIME", "FROM:"), Ok(("a@b.c", "SIZE=10  BODY=8BITMIME")));
        assert_eq!(split("FROM:<>", "FROM:"), Ok(("", "")));
        assert_eq!(split("TO:<\"a>b\"@c>", "TO:"), Ok(("\"a>b\"@c", "")));
        assert_eq!(split("FROM:bad", "FROM:"), Err(PathError::Syntax));
        assert_eq!(split("FROM:<a@b", "FROM:"), Err(PathError::Syntax));
        assert_eq!(split("FROM:<a@b>x", "FROM:"), Err(PathError::Syntax));
        assert_eq!(split("TO:<a@b>", "FROM:"), Err(PathError::Syntax));
        assert_eq!(split("FR", "FROM:"), Err(PathError::Syntax));
        let long = format!("FROM:<{}@{}>", "a".repeat(60), "b".repeat(200));
        assert_eq!(split(&long, "FROM:"), Err(PathError::Address));
    }

    #[test]
    fn mailboxes() {
        for good in ["a@example.com", "first.last+tag@x-y.example", "\"a b\"@c", "\"a\\\"b\"@c", "u@[127.0.0.1]"] {
            assert_eq!(mailbox(good), Some(good), "{good}");
        }
        assert_eq!(mailbox("@relay.example,@r2:u@d"), Some("u@d"));
        for bad in [
            "",
            "a",
            "@d",
            "a@",
            "a..b@c",
            ".a@c",
            "a@-c",
            "a@c..d",
            "a b@c",
            "\"a\"b\"@c",
            "a@c\u{e9}",
            "@r:a",
            "@:a@b",
        ] {
            assert_eq!(mailbox(bad), None, "{bad:?}");
        }
        assert_eq!(mailbox(&format!("{}@d", "a".repeat(65))), None);
    }
}
