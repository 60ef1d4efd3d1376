//! Redis's glob patterns (KEYS, SCAN MATCH): `*`, `?`, `[abc]`, `[^a]`,
//! `[a-z]`, `\x`. A line-by-line port of Redis 7.0's `stringmatchlen`, odd
//! corners included (an unclosed `[` matches what it listed so far, a range
//! compares bytes as C's signed `char`), so that every pattern selects the
//! same keys as on redis-server.

/// Whether `string` matches `pattern`. As in Redis, nothing matches the
/// empty string but the empty pattern (KEYS and SCAN treat a lone `*` as
/// "every key" before matching).
pub fn matches(pattern: &[u8], string: &[u8]) -> bool {
    let mut skip_longer = false;
    match_from(pattern, string, &mut skip_longer)
}

/// The byte at `i`, or 0 past the end (Redis reads the string's NUL).
fn at(text: &[u8], i: usize) -> u8 {
    text.get(i).copied().unwrap_or(0)
}

/// C's signed `char`, for ranges.
fn signed(b: u8) -> i32 {
    i32::from(b as i8)
}

fn match_from(pattern: &[u8], string: &[u8], skip_longer: &mut bool) -> bool {
    let (mut p, mut s) = (0, 0);
    while p < pattern.len() && s < string.len() {
        match pattern[p] {
            b'*' => {
                while p + 1 < pattern.len() && pattern[p + 1] == b'*' {
                    p += 1;
                }
                if p + 1 == pattern.len() {
                    return true;
                }
                while s < string.len() {
                    if match_from(&pattern[p + 1..], &string[s..], skip_longer) {
                        return true;
                    }
                    if *skip_longer {
                        return false;
                    }
                    s += 1;
                }
                // No match of the rest anywhere: a longer match for an
                // earlier `*` cannot help either (Redis's early exit).
                *skip_longer = true;
                return false;
            }
            b'?' => s += 1,
            b'[' => {
                p += 1;
                let not = at(pattern, p) == b'^';
                if not {
                    p += 1;
                }
                let c = string[s];
                let mut matched = false;
                loop {
                    if at(pattern, p) == b'\\' && pattern.len() - p >= 2 {
                        p += 1;
                        matched |= pattern[p] == c;
                    } else if at(pattern, p) == b']' {
                        break;
                    } else if p >= pattern.len() {
                        p -= 1;
                        break;
                    } else if pattern.len() - p >= 3 && pattern[p + 1] == b'-' {
                        let (mut start, mut end) = (signed(pattern[p]), signed(pattern[p + 2]));
                        if start > end {
                            std::mem::swap(&mut start, &mut end);
                        }
                        p += 2;
                        matched |= (start..=end).contains(&signed(c));
                    } else {
                        matched |= pattern[p] == c;
                    }
                    p += 1;
                }
                if matched == not {
                    return false;
                }
                s += 1;
            }
            b'\\' if pattern.len() - p >= 2 => {
                p += 1;
                if pattern[p] != string[s] {
                    return false;
                }
                s += 1;
            }
            b => {
                if b != string[s] {
                    return false;
                }
                s += 1;
            }
        }
        p += 1;
        if s == string.len() {
            while at(pattern, p) == b'*' {
                p += 1;
            }
            break;
        }
    }
    p >= pattern.len() && s == string.len()
}

#[cfg(test)]
mod tests {
    use super::matches;

    #[test]
    fn patterns_select_what_redis_selects() {
        let yes = [
            ("*", "anything"),
            ("h?llo", "hello"),
            ("h*llo", "heeeello"),
            ("h[ae]llo", "hallo"),
            ("h[^e]llo", "hallo"),
            ("h[a-b]llo", "hbllo"),
            ("h[b-a]llo", "hallo"),
            ("h\\*llo", "h*llo"),
            ("user:*:name", "user:42:name"),
            ("a*b*c", "aXbYc"),
            ("[\\]]", "]"),
            ("ab[c", "abc"),
            ("**a", "a"),
        ];
        for (pattern, string) in yes {
            assert!(matches(pattern.as_bytes(), string.as_bytes()), "{pattern} {string}");
        }
        let no = [
            ("h?llo", "hllo"),
            ("h[ae]llo", "hillo"),
            ("h[^e]llo", "hello"),
            ("h\\*llo", "hello"),
            ("a*b*c", "aXbY"),
            ("?", ""),
            ("a", "ab"),
            ("[a-z]", "A"),
            ("*", ""),
        ];
        for (pattern, string) in no {
            assert!(!matches(pattern.as_bytes(), string.as_bytes()), "{pattern} {string}");
        }
    }
}
