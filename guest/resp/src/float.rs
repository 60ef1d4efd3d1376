//! INCRBYFLOAT's arithmetic as redis-server does it on x86-64: C's `long
//! double` (the x87 80-bit format, a 64-bit mantissa), parsed as `strtold`
//! parses, added with round-to-nearest-even, printed as `%.17Lf` with the
//! trailing zeros trimmed. `f64` would not do: it answers 0.1 + 0.2 with
//! 0.30000000000000004 where Redis answers 0.3. So the format is emulated
//! exactly, on small big integers (at most a few KiB: the exponent range of
//! the format bounds them).

use std::cmp::Ordering;

/// Longest text Redis reads as a long double (its `MAX_LONG_DOUBLE_CHARS`).
const MAX_CHARS: usize = 5 * 1024;
/// Exponent of the top mantissa bit of the largest finite value (2^16383).
const MAX_TOP: i64 = 16383;
/// Below 2^-16446 a value rounds to zero (`strtold` then reports ERANGE).
const MIN_TOP: i64 = -16446;

/// A long double: `(-1)^neg × mant × 2^exp`, or an infinity. A nonzero
/// `mant` has its top bit set. (Subnormals are kept at full precision: no
/// answer of INCRBYFLOAT shows the difference, `%.17Lf` prints them as 0.)
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ld {
    Finite { neg: bool, mant: u64, exp: i64 },
    Inf { neg: bool },
}

/// A natural number, little-endian 32-bit limbs, no high zero limbs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
struct Big(Vec<u32>);

impl Big {
    fn from_u128(mut n: u128) -> Big {
        let mut limbs = Vec::new();
        while n > 0 {
            limbs.push(n as u32);
            n >>= 32;
        }
        Big(limbs)
    }

    fn trim(&mut self) {
        while self.0.last() == Some(&0) {
            self.0.pop();
        }
    }

    fn is_zero(&self) -> bool {
        self.0.is_empty()
    }

    fn bits(&self) -> i64 {
        self.0.last().map_or(0, |top| 32 * self.0.len() as i64 - i64::from(top.leading_zeros()))
    }

    fn bit(&self, i: i64) -> bool {
        let limb = self.0.get((i / 32) as usize).copied().unwrap_or(0);
        limb >> (i % 32) & 1 == 1
    }

    /// Whether any bit below `i` is set.
    fn any_below(&self, i: i64) -> bool {
        let (whole, part) = ((i / 32) as usize, i % 32);
        self.0[..whole.min(self.0.len())].iter().any(|&l| l != 0)
            || (part > 0 && self.0.get(whole).is_some_and(|&l| l & ((1 << part) - 1) != 0))
    }

    /// The bits from `i` up, at most 128 of them.
    fn bits_from(&self, i: i64) -> u128 {
        (0..128).filter(|&j| self.bit(i + j)).fold(0, |n, j| n | 1 << j)
    }

    fn mul_add_small(&mut self, mul: u32, add: u32) {
        let mut carry = u64::from(add);
        for limb in &mut self.0 {
            let t = u64::from(*limb) * u64::from(mul) + carry;
            *limb = t as u32;
            carry = t >> 32;
        }
        if carry > 0 {
            self.0.push(carry as u32);
        }
        self.trim();
    }

    /// Divides in place; the remainder.
    fn div_small(&mut self, div: u32) -> u32 {
        let mut rem = 0u64;
        for limb in self.0.iter_mut().rev() {
            let t = rem << 32 | u64::from(*limb);
            *limb = (t / u64::from(div)) as u32;
            rem = t % u64::from(div);
        }
        self.trim();
        rem as u32
    }

    fn shl(&self, bits: i64) -> Big {
        if self.is_zero() {
            return Big::default();
        }
        let (whole, part) = ((bits / 32) as usize, bits % 32);
        let mut limbs = vec![0; whole];
        let mut carry = 0u32;
        for &limb in &self.0 {
            limbs.push(limb << part | carry);
            carry = if part == 0 { 0 } else { limb >> (32 - part) };
        }
        limbs.push(carry);
        let mut big = Big(limbs);
        big.trim();
        big
    }

    fn cmp(&self, other: &Big) -> Ordering {
        self.0.len().cmp(&other.0.len()).then_with(|| self.0.iter().rev().cmp(other.0.iter().rev()))
    }

    fn add(&mut self, other: &Big) {
        self.0.resize(self.0.len().max(other.0.len()) + 1, 0);
        let mut carry = 0u64;
        for (i, limb) in self.0.iter_mut().enumerate() {
            let t = u64::from(*limb) + u64::from(other.0.get(i).copied().unwrap_or(0)) + carry;
            *limb = t as u32;
            carry = t >> 32;
        }
        self.trim();
    }

    /// `self - other`, which must not be negative.
    fn sub(&mut self, other: &Big) {
        let mut borrow = 0i64;
        for (i, limb) in self.0.iter_mut().enumerate() {
            let t = i64::from(*limb) - i64::from(other.0.get(i).copied().unwrap_or(0)) - borrow;
            *limb = t.rem_euclid(1 << 32) as u32;
            borrow = i64::from(t < 0);
        }
        self.trim();
    }

    fn pow10(n: i64) -> Big {
        let mut big = Big::from_u128(1);
        for _ in 0..n / 9 {
            big.mul_add_small(1_000_000_000, 0);
        }
        big.mul_add_small(10u32.pow((n % 9) as u32), 0);
        big
    }

    fn decimal(mut self) -> String {
        let mut chunks = Vec::new();
        while !self.is_zero() {
            chunks.push(self.div_small(1_000_000_000));
        }
        let mut text = chunks.pop().map_or("0".to_string(), |top| top.to_string());
        for chunk in chunks.iter().rev() {
            text.push_str(&format!("{chunk:09}"));
        }
        text
    }
}

/// `(-1)^neg × n × 2^exp`, rounded to the nearest long double (ties to
/// even); `sticky` says that the exact value is a little above `n`.
/// None if the value rounds to zero from a nonzero value.
fn round(neg: bool, n: &Big, exp: i64, sticky: bool) -> Option<Ld> {
    let bits = n.bits();
    if bits == 0 {
        return Some(Ld::Finite { neg, mant: 0, exp: 0 });
    }
    let shift = bits - 64;
    let (mut mant, mut exp) = ((n.bits_from(shift.max(0)) as u64) << (-shift).max(0), exp + shift);
    if shift > 0 && n.bit(shift - 1) && (sticky || n.any_below(shift - 1) || mant & 1 == 1) {
        // Round up; past 64 bits the mantissa becomes 2^63 one place up.
        (mant, exp) = match mant.checked_add(1) {
            Some(m) => (m, exp),
            None => (1 << 63, exp + 1),
        };
    }
    match exp + 63 {
        top if top > MAX_TOP => Some(Ld::Inf { neg }),
        top if top < MIN_TOP => None,
        _ => Some(Ld::Finite { neg, mant, exp }),
    }
}

/// Reads a value as Redis's `string2ld` does (`strtold`, then: no leading
/// space, all of it used, no NaN, no overflow, no underflow to zero).
pub fn parse(text: &[u8]) -> Option<Ld> {
    if text.is_empty() || text.len() >= MAX_CHARS {
        return None;
    }
    // Redis hands strtold a C string: it ends at the first NUL.
    let text = &text[..text.iter().position(|&b| b == 0).unwrap_or(text.len())];
    if text.is_empty() {
        return Some(Ld::Finite { neg: false, mant: 0, exp: 0 });
    }
    let (neg, body) = match text[0] {
        b'-' => (true, &text[1..]),
        b'+' => (false, &text[1..]),
        _ => (false, text),
    };
    let lower = body.to_ascii_lowercase();
    if lower == b"inf" || lower == b"infinity" {
        return Some(Ld::Inf { neg });
    }
    if lower.starts_with(b"0x") {
        return parse_hex(neg, &body[2..]);
    }
    parse_decimal(neg, body)
}

/// Digits, then an optional `.` and digits: the mantissa's digit values and
/// how many came after the point. None unless there is at least one digit.
fn mantissa(text: &[u8], radix: u32) -> Option<(Vec<u32>, i64, &[u8])> {
    let mut digits = Vec::new();
    let mut after_point = 0;
    let mut point = false;
    let mut i = 0;
    while i < text.len() {
        match (text[i] as char).to_digit(radix) {
            Some(d) => {
                digits.push(d);
                after_point += i64::from(point);
            }
            None if text[i] == b'.' && !point => point = true,
            None => break,
        }
        i += 1;
    }
    (!digits.is_empty()).then_some((digits, after_point, &text[i..]))
}

/// An exponent's `[+-]digits`, all of the rest; saturated (the value then
/// over- or underflows anyway).
fn exponent(text: &[u8]) -> Option<i64> {
    let (neg, digits) = match text.first() {
        Some(b'-') => (true, &text[1..]),
        Some(b'+') => (false, &text[1..]),
        _ => (false, text),
    };
    if digits.is_empty() || !digits.iter().all(u8::is_ascii_digit) {
        return None;
    }
    let n = digits.iter().fold(0i64, |n, &d| n.saturating_mul(10).saturating_add(i64::from(d - b'0')).min(1 << 40));
    Some(if neg { -n } else { n })
}

fn big_of(digits: &[u32], radix: u32) -> Big {
    let mut big = Big::default();
    for &d in digits {
        big.mul_add_small(radix, d);
    }
    big
}

fn parse_hex(neg: bool, text: &[u8]) -> Option<Ld> {
    let (digits, after_point, rest) = mantissa(text, 16)?;
    let exp = match rest {
        [] => 0,
        [b'p' | b'P', e @ ..] => exponent(e)?,
        _ => return None,
    };
    let n = big_of(&digits, 16);
    if n.is_zero() {
        return Some(Ld::Finite { neg, mant: 0, exp: 0 });
    }
    let exp = exp - 4 * after_point;
    if !(MIN_TOP..=MAX_TOP).contains(&(exp + n.bits() - 1)) {
        return None;
    }
    round(neg, &n, exp, false).filter(|v| !matches!(v, Ld::Inf { .. }))
}

fn parse_decimal(neg: bool, text: &[u8]) -> Option<Ld> {
    let (digits, after_point, rest) = mantissa(text, 10)?;
    let exp = match rest {
        [] => 0,
        [b'e' | b'E', e @ ..] => exponent(e)?,
        _ => return None,
    };
    let first = digits.iter().position(|&d| d != 0);
    let Some(first) = first else { return Some(Ld::Finite { neg, mant: 0, exp: 0 }) };
    let digits = &digits[first..];
    let exp = exp - after_point;
    // The value is below 10^(len + exp): refuse what cannot be in range
    // before building big powers of ten (10^4933 > the largest value).
    let magnitude = digits.len() as i64 + exp;
    if !(-4952..=4934).contains(&magnitude) {
        return None;
    }
    let n = big_of(digits, 10);
    let value = if exp >= 0 {
        let mut scaled = n;
        for _ in 0..exp / 9 {
            scaled.mul_add_small(1_000_000_000, 0);
        }
        scaled.mul_add_small(10u32.pow((exp % 9) as u32), 0);
        round(neg, &scaled, 0, false)
    } else {
        // n / 10^-exp: a quotient of 66 or 67 bits and whether a remainder
        // is left is all rounding needs.
        let den = Big::pow10(-exp);
        let shift = 66 + den.bits() - n.bits();
        let (num, den) = if shift >= 0 { (n.shl(shift), den) } else { (n, den.shl(-shift)) };
        let (q, rem) = divide(num, &den);
        round(neg, &Big::from_u128(q), -shift, rem)
    };
    value.filter(|v| !matches!(v, Ld::Inf { .. }))
}

/// `num / den` for a quotient under 2^70, and whether a remainder is left.
fn divide(mut num: Big, den: &Big) -> (u128, bool) {
    let mut q = 0u128;
    for i in (0..=(num.bits() - den.bits()).clamp(0, 70)).rev() {
        let part = den.shl(i);
        if num.cmp(&part) != Ordering::Less {
            num.sub(&part);
            q |= 1 << i;
        }
    }
    (q, !num.is_zero())
}

/// `a + b` as the x87 adds them; None for an infinite or NaN sum (Redis:
/// "increment would produce NaN or Infinity").
pub fn add(a: Ld, b: Ld) -> Option<Ld> {
    let (Ld::Finite { neg: na, mant: ma, exp: ea }, Ld::Finite { neg: nb, mant: mb, exp: eb }) = (a, b) else {
        return None;
    };
    if ma == 0 {
        return Some(if mb == 0 { Ld::Finite { neg: na && nb, mant: 0, exp: 0 } } else { b });
    }
    if mb == 0 {
        return Some(a);
    }
    let low = ea.min(eb);
    let x = Big::from_u128(ma.into()).shl(ea - low);
    let y = Big::from_u128(mb.into()).shl(eb - low);
    // Exact: the sum of the two aligned mantissas, or their difference.
    let (neg, mut sum, other) = match x.cmp(&y) {
        Ordering::Less => (nb, y, x),
        _ => (na, x, y),
    };
    if na == nb {
        sum.add(&other);
    } else {
        sum.sub(&other);
    }
    if sum.is_zero() {
        return Some(Ld::Finite { neg: false, mant: 0, exp: 0 });
    }
    round(neg, &sum, low, false).filter(|v| matches!(v, Ld::Finite { .. }))
}

/// `%.17Lf`, trailing zeros (and a bare point) removed, `-0` as `0`: what
/// Redis stores and answers (its `ld2string` in human mode).
pub fn format(value: Ld) -> String {
    let (neg, mant, exp) = match value {
        Ld::Inf { neg } => return if neg { "-inf" } else { "inf" }.to_string(),
        Ld::Finite { neg, mant, exp } => (neg, mant, exp),
    };
    let mut text = String::from(if neg { "-" } else { "" });
    if exp >= 0 {
        text.push_str(&Big::from_u128(mant.into()).shl(exp).decimal());
    } else {
        const SCALE: u128 = 100_000_000_000_000_000;
        let k = -exp;
        let (mut int, frac) = if k < 64 { (mant >> k, mant & ((1 << k) - 1)) } else { (0, mant) };
        let scaled = u128::from(frac) * SCALE;
        let mut q = 0;
        if k < 128 {
            q = scaled >> k;
            let (rem, half) = (scaled & ((1 << k) - 1), 1u128 << (k - 1));
            if rem > half || (rem == half && q & 1 == 1) {
                q += 1;
            }
            if q == SCALE {
                (int, q) = (int + 1, 0);
            }
        }
        text.push_str(&format!("{int}.{q:017}"));
        let kept = text.trim_end_matches('0').trim_end_matches('.').len();
        text.truncate(kept);
    }
    if text == "-0" { "0".to_string() } else { text }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// INCRBYFLOAT of `start` by `by`, as text: Redis's answer or None.
    fn incr(start: &str, by: &str) -> Option<String> {
        add(parse(start.as_bytes())?, parse(by.as_bytes())?).map(format)
    }

    #[test]
    fn answers_as_redis_server_7_0_does() {
        // Each checked against redis-server 7.0.15 on x86-64.
        let cases = [
            ("1.5", "0.1", "1.6"),
            ("0.1", "0.2", "0.3"),
            ("10.50", "0.1", "10.6"),
            ("1", "-10.5", "-9.5"),
            ("11.5", "-10.5", "1"),
            ("1", "5.0e3", "5001"),
            ("0", "1e-5", "0.00001"),
            ("0", "1e20", "100000000000000000000"),
            ("1e20", "12345678901234567890", "112345678901234567888"),
            ("3", "0.3", "3.3"),
            ("1.0", "0", "1"),
            ("1.10", "0", "1.1"),
            ("1.1", "1e-350", "1.1"),
            ("1.5e2", "0", "150"),
            ("0x10", "1", "17"),
            ("17", "1.", "18"),
            ("0.3", ".5", "0.8"),
            ("0.8", "-0", "0.8"),
            ("0.8", "1e-5", "0.80001"),
            ("1", "1e17", "100000000000000001"),
            ("100000000000000002", "0.1", "100000000000000002.1015625"),
            ("1", "123456789.123456789", "123456790.12345678899873747"),
            ("1", "0.00000000000000001", "1.00000000000000001"),
            ("1.00000000000000001", "1e-20", "1.00000000000000001"),
            ("0", "-0.5e-20", "0"),
            ("5", "+5", "10"),
        ];
        for (start, by, want) in cases {
            assert_eq!(incr(start, by).as_deref(), Some(want), "{start} + {by}");
        }
        let big = "1000000000000000000008997324079559193870523944273290747938260082321265646596180935755849152083750497190350372508614274835903592556184672983913096260520748646287327135641843653294084255107606016789726652932370030551382947620994540294772781889620606179267611627097410650567187386105690089424915104006144";
        assert_eq!(incr("1.6", "1e300").as_deref(), Some(big));
        let max = "1797693134862315700037172979832244333126691528546293291340154022512526345446187215204722275610002264464012854721311288966889522964362629899046646139186400923107613675233385175712431854540107728588261691716826703993516570594322538258751668119392697527887003733971267841814703087626434079640422653388568708251648";
        assert_eq!(incr("1.1", "1.7976931348623157e309").as_deref(), Some(max));
    }

    #[test]
    fn what_redis_refuses() {
        for bad in
            ["", " 1", "1 ", "abc", "nan", "-nan", "1_0", "1e", "0x", "0x1p", ".", "-", "1e99999", "1e-99999", "1.5.5"]
        {
            assert_eq!(parse(bad.as_bytes()), None, "{bad:?}");
        }
        assert_eq!(parse(b"1e-99999999999999999999999"), None);
        assert!(matches!(parse(b"inf"), Some(Ld::Inf { neg: false })));
        assert!(matches!(parse(b"-Infinity"), Some(Ld::Inf { neg: true })));
        assert_eq!(incr("1", "inf"), None, "an infinite sum");
        assert_eq!(incr("1e4932", "1e4932"), None, "an overflow");
        assert_eq!(parse(b"0e99999999"), Some(Ld::Finite { neg: false, mant: 0, exp: 0 }));
        assert_eq!(incr("1\0junk", "1").as_deref(), Some("2"), "strtold stops at NUL");
    }
}
