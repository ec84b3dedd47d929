//! Sizes on the command line: a number of bytes with an optional K/M/G/T/P suffix
//! (powers of 1024), as the original command accepts.

/// Parse `SIZE[K|M|G|T|P]`: decimal digits and an optional unit, case-insensitive, which
/// may also be written `KB` or `KiB` (all powers of 1024), or `B` for bytes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let t = s.trim();
    let split = t.find(|c: char| !c.is_ascii_digit()).unwrap_or(t.len());
    let (digits, unit) = t.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => {
            return Err(format!(
                "invalid size '{s}': expected a number of bytes with an optional K, M, G, T \
                 or P suffix"
            ))
        }
    };
    if digits.is_empty() {
        return Err(format!("invalid size '{s}': no number"));
    }
    let v = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1u64 << shift))
        .ok_or_else(|| format!("invalid size '{s}': too large"))?;
    if v == 0 {
        return Err(format!("invalid size '{s}': must be greater than zero"));
    }
    Ok(v)
}

/// `bytes` in the largest power-of-1024 unit that divides it, e.g. `64 MiB`, or in bytes.
pub fn format_size(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = None;
    for (i, u) in UNITS.iter().enumerate() {
        let shift = 10 * (i as u32 + 1);
        if bytes != 0 && bytes.trailing_zeros() >= shift {
            unit = Some((bytes >> shift, *u));
        }
    }
    match unit {
        Some((n, u)) => format!("{n} {u}"),
        None => format!("{bytes} bytes"),
    }
}

#[cfg(test)]
mod tests {
    use super::{format_size, parse_size};

    #[test]
    fn sizes_print_in_the_largest_exact_unit() {
        assert_eq!(format_size(0), "0 bytes");
        assert_eq!(format_size(1000), "1000 bytes");
        assert_eq!(format_size(64 << 20), "64 MiB");
        assert_eq!(format_size((64 << 20) + 4096), "65540 KiB");
        assert_eq!(format_size(3 << 50), "3 PiB");
        assert_eq!(
            parse_size(&format_size(5 << 40).replace(' ', "")),
            Ok(5 << 40)
        );
    }

    #[test]
    fn suffixes_are_powers_of_1024() {
        assert_eq!(parse_size("4096"), Ok(4096));
        assert_eq!(parse_size("64K"), Ok(64 << 10));
        assert_eq!(parse_size("64k"), Ok(64 << 10));
        assert_eq!(parse_size("2M"), Ok(2 << 20));
        assert_eq!(parse_size("3G"), Ok(3 << 30));
        assert_eq!(parse_size("1T"), Ok(1 << 40));
        assert_eq!(parse_size("1P"), Ok(1 << 50));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("10GB"), Ok(10 << 30));
        assert_eq!(parse_size("7b"), Ok(7));
        assert_eq!(parse_size(" 2m "), Ok(2 << 20));
        assert_eq!(parse_size("16383P"), Ok(16383 << 50));
        assert_eq!(parse_size("18446744073709551615"), Ok(u64::MAX));
    }

    #[test]
    fn garbage_zero_and_overflow_are_refused() {
        for bad in [
            "",
            "K",
            "abc",
            "-1",
            "1.5G",
            "12Q",
            "0",
            "0K",
            "99999999999P",
            "1 G",
            "١٢",
            "5iB",
            "KiB",
            "1KK",
            "+5",
            "0x10",
            "16384P",
            "18446744073709551616",
        ] {
            assert!(parse_size(bad).is_err(), "{bad:?} was accepted");
        }
    }
}
