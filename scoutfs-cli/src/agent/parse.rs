//! Numbers and positions on the agent commands' command lines, read as the original reads
//! them (`utils/src/parse.c`: C's `strtoull` with base 0, so `0x` is hex, a leading `0`
//! octal, and `-1` the largest value), but stricter where the original lets garbage
//! through: a whole argument must be a number, an overflow is an error, and nothing may
//! follow a position.

use scoutfs_core::fs::Timespec;
use scoutfs_fuse::control::{IndexPos, IndxEntry};

/// C's `strtoull(s, &end, 0)`: leading white space, an optional sign (a `-` negates,
/// wrapping), then digits in base 16 (`0x`), 8 (leading `0`) or 10. The value and what
/// follows it; `None` if there are no digits or the value overflows.
fn strtoull(s: &str) -> Option<(u64, &str)> {
    let t = s.trim_start();
    let (neg, t) = match t.as_bytes().first() {
        Some(b'-') => (true, &t[1..]),
        Some(b'+') => (false, &t[1..]),
        _ => (false, t),
    };
    let lower = t.get(..2).map(str::to_ascii_lowercase);
    let (radix, digits) =
        if lower.as_deref() == Some("0x") && t[2..].starts_with(|c: char| c.is_ascii_hexdigit()) {
            (16, &t[2..])
        } else if t.starts_with('0') {
            (8, t)
        } else {
            (10, t)
        };
    let end = digits
        .find(|c: char| !c.is_digit(radix))
        .unwrap_or(digits.len());
    if end == 0 {
        return None;
    }
    let v = u64::from_str_radix(&digits[..end], radix).ok()?;
    Some((if neg { v.wrapping_neg() } else { v }, &digits[end..]))
}

/// A whole argument as `strtoull` reads it (an empty one is 0, as in C: scripts pass
/// `-V "$(scoutfs stat -s data_version F)"` and rely on the usage error that follows).
pub fn parse_u64(s: &str) -> Result<u64, String> {
    if s.is_empty() {
        return Ok(0);
    }
    strict_u64(s)
}

/// A whole number as `strtoull` reads it; empty is not one.
fn strict_u64(s: &str) -> Result<u64, String> {
    match strtoull(s) {
        Some((v, "")) => Ok(v),
        _ => Err(format!("invalid 64bit value: '{s}'")),
    }
}

/// A whole argument as `strtoll` reads it.
pub fn parse_s64(s: &str) -> Result<i64, String> {
    let bad = || format!("invalid 64bit value: '{s}'");
    let t = s.trim_start();
    let (neg, mag) = match t.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, t.strip_prefix('+').unwrap_or(t)),
    };
    if mag.starts_with(['-', '+']) {
        return Err(bad());
    }
    let v = strict_u64(mag).map_err(|_| bad())?;
    if neg {
        0i64.checked_sub_unsigned(v).ok_or_else(bad)
    } else {
        i64::try_from(v).map_err(|_| bad())
    }
}

/// A byte count or offset: a number as `strtoull` reads it, then an optional K, M, G, T
/// or P (powers of 1024; either case, optionally followed by `B` or `iB`).
pub fn parse_human(s: &str) -> Result<u64, String> {
    let (v, unit) = strtoull(s).ok_or_else(|| format!("invalid 64bit value: '{s}'"))?;
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" => 0,
        "k" | "kb" | "kib" => 10,
        "m" | "mb" | "mib" => 20,
        "g" | "gb" | "gib" => 30,
        "t" | "tb" | "tib" => 40,
        "p" | "pb" | "pib" => 50,
        _ => return Err(format!("unknown suffix: '{unit}'")),
    };
    if shift > 0 && v > u64::MAX >> shift {
        return Err(format!("size too big: '{s}'"));
    }
    Ok(v << shift)
}

/// `SEC.NSEC`, as `setattr -t` takes it.
pub fn parse_timespec(s: &str) -> Result<Timespec, String> {
    let bad = || format!("invalid timespec string: '{s}'");
    let (sec, nsec) = s.split_once('.').ok_or_else(bad)?;
    let sec = strict_u64(sec).map_err(|_| bad())?;
    let nsec = nsec
        .parse::<u32>()
        .ok()
        .filter(|_| nsec.bytes().all(|b| b.is_ascii_digit()))
        .ok_or_else(bad)?;
    if nsec >= 1_000_000_000 {
        return Err(format!("invalid timespec nsec value: '{s}'"));
    }
    Ok(Timespec {
        sec: sec as i64,
        nsec,
    })
}

/// A seq index position `MAJOR[.MINOR[.INO]]` (what is left out is 0); `-1` is the
/// largest value of a part. MINOR is at most `i32::MAX`, as the original takes it.
pub fn parse_walk_pos(s: &str) -> Result<IndexPos, String> {
    let mut parts = s.split('.');
    let mut next = |what: &str| -> Result<Option<u64>, String> {
        parts
            .next()
            .map(|p| strict_u64(p).map_err(|_| format!("bad index pos at '{p}' ({what})")))
            .transpose()
    };
    let major = next("major")?.unwrap_or(0);
    let minor = next("minor")?.unwrap_or(0);
    let ino = next("inode")?.unwrap_or(0);
    if let Some(extra) = parts.next() {
        return Err(format!(
            "bad index pos at '{extra}' (more than three parts)"
        ));
    }
    let minor = u32::try_from(minor)
        .ok()
        .filter(|&m| i32::try_from(m).is_ok())
        .ok_or_else(|| format!("bad index pos at '{minor}' (minor above {})", i32::MAX))?;
    Ok(IndexPos { major, minor, ino })
}

/// An `.indx.` index position `MAJOR.MINOR.INO` (C's `%i.%lli.%lli`: MAJOR 0..=255; a
/// negative MINOR or INO wraps, so `-1` is the largest).
pub fn parse_indx_pos(s: &str) -> Result<IndxEntry, String> {
    let form = || {
        format!(
            "bad index position entry argument '{s}', it must be in the form \"a.b.ino\" \
             where each value can be prefixed by '0' for octal or '0x' for hex"
        )
    };
    let parts: Vec<&str> = s.split('.').collect();
    let [major, minor, ino] = parts[..] else {
        return Err(form());
    };
    let wide = |p: &str| {
        parse_s64(p)
            .map(|v| v as u64)
            .or_else(|_| strict_u64(p))
            .map_err(|_| form())
    };
    let major = parse_s64(major).map_err(|_| form())?;
    let major = u8::try_from(major).map_err(|_| {
        format!("initial major index position '{major}' must be between 0 and 255, inclusive.")
    })?;
    Ok(IndxEntry {
        major,
        minor: wide(minor)?,
        ino: wide(ino)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_as_strtoull_reads_them() {
        assert_eq!(parse_u64("42"), Ok(42));
        assert_eq!(parse_u64("0x1F"), Ok(31));
        assert_eq!(parse_u64("010"), Ok(8));
        assert_eq!(parse_u64("0"), Ok(0));
        assert_eq!(parse_u64("-1"), Ok(u64::MAX));
        assert_eq!(parse_u64(" +7"), Ok(7));
        assert_eq!(parse_u64("18446744073709551615"), Ok(u64::MAX));
        assert_eq!(parse_u64(""), Ok(0));
        assert!(strict_u64("").is_err());
        for bad in [
            " ",
            "x",
            "1x",
            "08",
            "18446744073709551616",
            "0x",
            "--1",
            "1 ",
        ] {
            assert_eq!(
                parse_u64(bad),
                Err(format!("invalid 64bit value: '{bad}'")),
                "{bad}"
            );
        }
        assert_eq!(parse_s64("-5"), Ok(-5));
        assert_eq!(parse_s64("-0x10"), Ok(-16));
        assert_eq!(parse_s64("-9223372036854775808"), Ok(i64::MIN));
        assert!(parse_s64("9223372036854775808").is_err());
        assert!(parse_s64("-9223372036854775809").is_err());
        assert!(parse_s64("--5").is_err());
    }

    #[test]
    fn human_sizes_take_binary_suffixes() {
        assert_eq!(parse_human("0"), Ok(0));
        assert_eq!(parse_human("4096"), Ok(4096));
        assert_eq!(parse_human("4K"), Ok(4096));
        assert_eq!(parse_human("1m"), Ok(1 << 20));
        assert_eq!(parse_human("2GiB"), Ok(2 << 30));
        assert_eq!(parse_human("0x10K"), Ok(16 << 10));
        assert_eq!(parse_human("1P"), Ok(1 << 50));
        assert_eq!(parse_human("16384P"), Err("size too big: '16384P'".into()));
        assert_eq!(parse_human("3Q"), Err("unknown suffix: 'Q'".into()));
        assert!(parse_human("K").is_err());
    }

    #[test]
    fn timespecs_are_seconds_dot_nanoseconds() {
        assert_eq!(
            parse_timespec("67305985.999999999"),
            Ok(Timespec {
                sec: 67305985,
                nsec: 999_999_999
            })
        );
        assert_eq!(parse_timespec("1.0"), Ok(Timespec { sec: 1, nsec: 0 }));
        assert!(parse_timespec("1.1000000000").is_err());
        for bad in ["1", "1.", ".5", "a.b", "1.-5", "1.5x"] {
            assert!(parse_timespec(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn walk_positions_fill_what_is_left_out_with_zero() {
        let p = |major, minor, ino| IndexPos { major, minor, ino };
        assert_eq!(parse_walk_pos("5"), Ok(p(5, 0, 0)));
        assert_eq!(parse_walk_pos("5.1"), Ok(p(5, 1, 0)));
        assert_eq!(parse_walk_pos("5.1.0x10"), Ok(p(5, 1, 16)));
        assert_eq!(parse_walk_pos("-1"), Ok(p(u64::MAX, 0, 0)));
        assert_eq!(
            parse_walk_pos("1.2147483647.-1"),
            Ok(p(1, i32::MAX as u32, u64::MAX))
        );
        for bad in ["", "x", "1.x", "1.2.3.4", "1.2147483648", "1.-1", "1..2"] {
            assert!(parse_walk_pos(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn index_positions_are_three_parts_with_a_byte_major() {
        let e = |major, minor, ino| IndxEntry { major, minor, ino };
        assert_eq!(parse_indx_pos("0.0.0"), Ok(e(0, 0, 0)));
        assert_eq!(parse_indx_pos("255.-1.-1"), Ok(e(255, u64::MAX, u64::MAX)));
        assert_eq!(
            parse_indx_pos("0x10.010.18446744073709551615"),
            Ok(e(16, 8, u64::MAX))
        );
        assert!(parse_indx_pos("256.0.0")
            .unwrap_err()
            .starts_with("initial major index position '256' must be between 0 and 255"));
        assert!(parse_indx_pos("-1.0.0").is_err());
        for bad in ["1.2", "1.2.3.4", "a.b.c", ""] {
            assert!(
                parse_indx_pos(bad).unwrap_err().contains("a.b.ino"),
                "{bad}"
            );
        }
    }
}
