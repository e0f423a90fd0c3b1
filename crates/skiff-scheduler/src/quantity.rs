//! Kubernetes resource quantities (`100m`, `0.5`, `64Mi`, `1G`, `1e3`) as integers: CPU in
//! millicores, everything else in units. Written by hand: k8s-openapi keeps quantities as
//! strings.

/// Parse a quantity into thousandths of its unit (so `100m` → 100, `2` → 2000, `1Ki` → 1,024,000).
pub fn milli(q: &str) -> Option<i128> {
    let q = q.trim();
    if q.is_empty() {
        return None;
    }
    let split = q
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(q.len());
    let (num, suffix) = q.split_at(split);
    let (int_part, frac_part) = num.split_once('.').unwrap_or((num, ""));
    let neg = int_part.starts_with('-');
    let int_part = int_part.trim_start_matches(['+', '-']);
    let mut value: i128 = if int_part.is_empty() { 0 } else { int_part.parse().ok()? };
    // Work in units of 10^-9 to keep fractions exact enough, then scale.
    let mut nanos: i128 = value * 1_000_000_000;
    if !frac_part.is_empty() {
        let digits: String = frac_part.chars().take(9).collect();
        let scale = 10i128.pow(9 - digits.len() as u32);
        nanos += digits.parse::<i128>().ok()? * scale;
    }
    let mul_nanos = |m: i128| nanos.checked_mul(m);
    let result_nanos = match suffix {
        "" => Some(nanos),
        "m" => Some(nanos / 1000),
        "u" => Some(nanos / 1_000_000),
        "n" => Some(nanos / 1_000_000_000),
        "k" => mul_nanos(1_000),
        "M" => mul_nanos(1_000_000),
        "G" => mul_nanos(1_000_000_000),
        "T" => mul_nanos(1_000_000_000_000),
        "P" => mul_nanos(1_000_000_000_000_000),
        "Ki" => mul_nanos(1 << 10),
        "Mi" => mul_nanos(1 << 20),
        "Gi" => mul_nanos(1 << 30),
        "Ti" => mul_nanos(1 << 40),
        "Pi" => mul_nanos(1 << 50),
        s if s.starts_with('e') || s.starts_with('E') => {
            let exp: u32 = s[1..].parse().ok()?;
            mul_nanos(10i128.checked_pow(exp)?)
        }
        _ => None,
    }?;
    value = result_nanos / 1_000_000;
    Some(if neg { -value } else { value })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_kubernetes_quantities() {
        assert_eq!(milli("100m"), Some(100));
        assert_eq!(milli("2"), Some(2000));
        assert_eq!(milli("0.5"), Some(500));
        assert_eq!(milli("1Ki"), Some(1_024_000));
        assert_eq!(milli("64Mi"), Some(64 * 1024 * 1024 * 1000));
        assert_eq!(milli("1G"), Some(1_000_000_000_000));
        assert_eq!(milli("1e3"), Some(1_000_000));
        assert_eq!(milli("bogus"), None);
        assert_eq!(milli(""), None);
    }
}
