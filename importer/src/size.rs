//! Parsing sizes: plain bytes or Kubernetes quantities (`10Gi`, `500Mi`,
//! `1G`, `1.5Gi`, `1e9`), as CDI's `IMPORTER_IMAGE_SIZE` and PVC sizes use.

/// Parses a size in bytes. Fractions are allowed with a suffix and rounded
/// up to a whole byte; the result must fit in a `u64`.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let bad = || format!("Invalid size {:?}", formats::text::escape(s));
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, suffix) = t.split_at(split);
    let mult: u128 = match suffix {
        "" => 1,
        "k" | "K" => 1000,
        "M" => 1000u128.pow(2),
        "G" => 1000u128.pow(3),
        "T" => 1000u128.pow(4),
        "P" => 1000u128.pow(5),
        "E" => 1000u128.pow(6),
        "Ki" => 1 << 10,
        "Mi" => 1 << 20,
        "Gi" => 1 << 30,
        "Ti" => 1 << 40,
        "Pi" => 1 << 50,
        "Ei" => 1 << 60,
        // A decimal exponent, as Kubernetes writes `1e9`.
        e if e.len() > 1
            && (e.starts_with('e') || e.starts_with('E'))
            && e[1..].bytes().all(|b| b.is_ascii_digit()) =>
        {
            let exp: u32 = e[1..].parse().map_err(|_| bad())?;
            10u128
                .checked_pow(exp)
                .filter(|&m| m <= 1 << 64)
                .ok_or_else(bad)?
        }
        _ => return Err(bad()),
    };
    if num.is_empty() || num.matches('.').count() > 1 {
        return Err(bad());
    }
    let (int, frac) = num.split_once('.').unwrap_or((num, ""));
    if int.len() > 30 || frac.len() > 18 {
        return Err(bad());
    }
    let int: u128 = if int.is_empty() {
        0
    } else {
        int.parse().map_err(|_| bad())?
    };
    let frac_val: u128 = if frac.is_empty() {
        0
    } else {
        frac.parse().map_err(|_| bad())?
    };
    let scale = 10u128.pow(frac.len() as u32);
    let total = int
        .checked_mul(mult)
        .and_then(|v| v.checked_add((frac_val * mult).div_ceil(scale)))
        .ok_or_else(bad)?;
    u64::try_from(total).map_err(|_| bad())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_quantities_parse() {
        assert_eq!(parse_size("10Gi").unwrap(), 10 << 30);
        assert_eq!(parse_size("500Mi").unwrap(), 500 << 20);
        assert_eq!(parse_size("1G").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5Gi").unwrap(), 3 << 29);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert_eq!(parse_size("1k").unwrap(), 1000);
        // Decimal exponents and plain decimal suffixes, as CDI accepts.
        assert_eq!(parse_size("1e9").unwrap(), 1_000_000_000);
        assert_eq!(parse_size("1.5E3").unwrap(), 1500);
        assert_eq!(parse_size("1500M").unwrap(), 1_500_000_000);
    }

    #[test]
    fn malformed_sizes_are_refused() {
        for s in [
            "",
            "Gi",
            "10Q",
            "1.2.3",
            "-5",
            "99999999999999999999999Ei",
            "1e",
            "1e-3",
            "1e40",
        ] {
            assert!(parse_size(s).is_err(), "{s}");
        }
    }
}
