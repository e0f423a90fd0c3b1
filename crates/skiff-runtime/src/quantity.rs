//! Kubernetes resource quantities (`500m`, `1.5`, `128Mi`, `1e3`, `2G`) as exact integers,
//! for the cgroup values the kubelet derives from requests and limits.

/// A quantity in thousandths of its unit (millicores for CPU), rounded up as Kubernetes'
/// `MilliValue` does. `None` for text that is not a quantity, a negative one, or one too large
/// for 64 bits.
pub fn milli_value(q: &str) -> Option<i128> {
    scaled(q, 1000)
}

/// A quantity in whole units (bytes for memory), rounded up as Kubernetes' `Value` does.
pub fn value(q: &str) -> Option<i128> {
    scaled(q, 1)
}

/// `q * factor`, rounded up.
fn scaled(q: &str, factor: i128) -> Option<i128> {
    let q = q.trim();
    let number_end = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+'))
        .unwrap_or(q.len());
    let (number, suffix) = q.split_at(number_end);
    let number = number.strip_prefix('+').unwrap_or(number);
    let (int, frac) = number.split_once('.').unwrap_or((number, ""));
    if int.is_empty() && frac.is_empty() || !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
        return None;
    }
    // mantissa / 10^frac.len(), exactly.
    let digits = format!("{int}{frac}");
    let mantissa: i128 = digits.trim_start_matches('0').parse().unwrap_or(0);
    if digits.len() > 30 {
        return None;
    }
    let mut num = mantissa.checked_mul(factor)?;
    let mut den: i128 = 10i128.checked_pow(u32::try_from(frac.len()).ok()?)?;
    match suffix {
        "Ki" | "Mi" | "Gi" | "Ti" | "Pi" | "Ei" => {
            let power = "KMGTPE".find(&suffix[..1])? as u32 + 1;
            num = num.checked_mul(1024i128.checked_pow(power)?)?;
        }
        _ => {
            let exp: i32 = match suffix {
                "" => 0,
                "n" => -9,
                "u" => -6,
                "m" => -3,
                "k" => 3,
                "M" => 6,
                "G" => 9,
                "T" => 12,
                "P" => 15,
                "E" => 18,
                s if s.starts_with(['e', 'E']) => s[1..].parse().ok().filter(|e: &i32| e.abs() <= 30)?,
                _ => return None,
            };
            if exp >= 0 {
                num = num.checked_mul(10i128.checked_pow(exp as u32)?)?;
            } else {
                den = den.checked_mul(10i128.checked_pow(exp.unsigned_abs())?)?;
            }
        }
    }
    let v = (num + den - 1) / den;
    // Kubernetes keeps quantities in 64 bits.
    (v <= i128::from(i64::MAX)).then_some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_quantities() {
        assert_eq!(milli_value("100m"), Some(100));
        assert_eq!(milli_value("1"), Some(1000));
        assert_eq!(milli_value("0.5"), Some(500));
        assert_eq!(milli_value("1.5"), Some(1500));
        assert_eq!(milli_value(".25"), Some(250));
        assert_eq!(milli_value("2500u"), Some(3), "rounds up");
        assert_eq!(milli_value("1n"), Some(1), "rounds up");
        assert_eq!(milli_value("0"), Some(0));
        assert_eq!(milli_value("+2"), Some(2000));
    }

    #[test]
    fn memory_quantities() {
        assert_eq!(value("128Mi"), Some(128 << 20));
        assert_eq!(value("1Gi"), Some(1 << 30));
        assert_eq!(value("1.5Gi"), Some(3 << 29));
        assert_eq!(value("1G"), Some(1_000_000_000));
        assert_eq!(value("100M"), Some(100_000_000));
        assert_eq!(value("1e3"), Some(1000));
        assert_eq!(value("5E2"), Some(500));
        assert_eq!(value("12345"), Some(12345));
        assert_eq!(value("1k"), Some(1000));
        assert_eq!(value("1Ki"), Some(1024));
        assert_eq!(value("100m"), Some(1), "a tenth of a byte rounds up");
    }

    #[test]
    fn bad_quantities() {
        for bad in [
            "", "m", "abc", "1.2.3", "-1", "1Qi", "1 Mi", "1e", "1e99", "Mi", "1KiB", ".", "1e-99",
        ] {
            assert_eq!(value(bad), None, "{bad:?}");
        }
        assert_eq!(value(&"9".repeat(40)), None);
        assert_eq!(value("999999999999Ei"), None, "overflow");
    }
}
