//! What the agent commands print: the original's exact text lines (`utils/src/*.c`), and
//! the fields of their `--json` documents. Pure functions of the values, tested against
//! the formats byte for byte.

use scoutfs_core::fs::Timespec;
use scoutfs_fuse::control::{
    DataWaiting, FiemapExtent, IndexEntry, IndxEntry, StatMore, StatfsMore, XattrTotal,
    DATA_WAIT_CHANGE_SIZE, DATA_WAIT_READ, DATA_WAIT_WRITE,
};
use serde::Serialize;

/// `SEC.NSEC` with nine digits of nanoseconds (seconds as the original's `%llu`).
pub fn timespec(t: Timespec) -> String {
    format!("{}.{:09}", t.sec as u64, t.nsec)
}

/// The fields `stat` prints, in order.
pub const STAT_FIELDS: [&str; 6] = [
    "meta_seq",
    "data_seq",
    "data_version",
    "online_blocks",
    "offline_blocks",
    "crtime",
];

/// The fields `statfs` prints, in order.
pub const STATFS_FIELDS: [&str; 5] = [
    "fsid",
    "rid",
    "committed_seq",
    "total_meta_blocks",
    "total_data_blocks",
];

fn stat_value(s: &StatMore, field: &str) -> Option<String> {
    Some(match field {
        "meta_seq" => s.meta_seq.to_string(),
        "data_seq" => s.data_seq.to_string(),
        "data_version" => s.data_version.to_string(),
        "online_blocks" => s.online_blocks.to_string(),
        "offline_blocks" => s.offline_blocks.to_string(),
        "crtime" => timespec(s.crtime),
        _ => return None,
    })
}

fn statfs_value(s: &StatfsMore, field: &str) -> Option<String> {
    Some(match field {
        "fsid" => format!("{:016x}", s.fsid),
        "rid" => format!("{:016x}", s.rid),
        "committed_seq" => s.committed_seq.to_string(),
        "total_meta_blocks" => s.total_meta_blocks.to_string(),
        "total_data_blocks" => s.total_data_blocks.to_string(),
        _ => return None,
    })
}

/// Every field as `%-17s VALUE` lines, or only the value of `single`; `None` if `single`
/// is not a field.
fn fields(
    names: &[&str],
    single: Option<&str>,
    value: impl Fn(&str) -> Option<String>,
) -> Option<String> {
    match single {
        Some(f) => Some(format!("{}\n", value(f)?)),
        None => Some(
            names
                .iter()
                .filter_map(|n| Some(format!("{n:<17} {}\n", value(n)?)))
                .collect(),
        ),
    }
}

/// `stat`'s output (all fields, or the value of `single`).
pub fn stat_text(s: &StatMore, single: Option<&str>) -> Option<String> {
    fields(&STAT_FIELDS, single, |f| stat_value(s, f))
}

/// `statfs`'s output (all fields, or the value of `single`).
pub fn statfs_text(s: &StatfsMore, single: Option<&str>) -> Option<String> {
    fields(&STATFS_FIELDS, single, |f| statfs_value(s, f))
}

/// The header `walk-inodes` prints before every 25 rows.
pub fn walk_header() -> String {
    format!(
        "{:<20} {:<20} {:<10} {:<20}\n",
        "#", "major", "minor", "ino"
    )
}

/// A row of `walk-inodes`: the running count and the entry.
pub fn walk_row(nr: u64, e: &IndexEntry) -> String {
    format!("{nr:<20} {:<20} {:<10} {:<20}\n", e.major, e.minor, e.ino)
}

/// Rows between headers of `walk-inodes`.
pub const WALK_HEADER_EVERY: u64 = 25;

/// The names of a set of data wait ops, in bit order.
pub fn ops_names(ops: u8) -> Vec<&'static str> {
    [
        (DATA_WAIT_READ, "read"),
        (DATA_WAIT_WRITE, "write"),
        (DATA_WAIT_CHANGE_SIZE, "change_size"),
    ]
    .into_iter()
    .filter(|(bit, _)| ops & bit != 0)
    .map(|(_, n)| n)
    .collect()
}

/// A line of `data-waiting`.
pub fn waiting_line(w: &DataWaiting) -> String {
    format!(
        "ino {} iblock {} ops {}\n",
        w.ino,
        w.iblock,
        ops_names(w.ops).join(",")
    )
}

/// The op of `data-wait-err -O`.
pub fn parse_op(s: &str) -> Option<u8> {
    match s {
        "read" => Some(DATA_WAIT_READ),
        "write" => Some(DATA_WAIT_WRITE),
        "change_size" => Some(DATA_WAIT_CHANGE_SIZE),
        _ => None,
    }
}

/// What `data-wait-err` prints.
pub fn wait_err_line(found: u64) -> String {
    format!("data_wait_err found {found} waiters.\n")
}

/// What `get-fiemap` prints of offsets: both (the default), or one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FiemapOffsets {
    Both,
    Logical,
    Physical,
}

/// A line of `get-fiemap`: extent `nr`, in units of `unit` bytes (the file's block size,
/// or 1 with `-b`).
pub fn fiemap_line(nr: u64, e: &FiemapExtent, offsets: FiemapOffsets, unit: u64) -> String {
    let unit = unit.max(1);
    let (l, p, len) = (e.logical / unit, e.physical / unit, e.length / unit);
    let off = match offsets {
        FiemapOffsets::Both => format!("{l} {p}"),
        FiemapOffsets::Logical => l.to_string(),
        FiemapOffsets::Physical => p.to_string(),
    };
    let flag = |on: bool, c: char| if on { c } else { '.' };
    format!(
        "{nr}: offset: {off} length: {len} flags: {}{}{}\n",
        flag(e.offline, 'O'),
        flag(e.unwritten, 'U'),
        flag(e.last, 'L')
    )
}

/// The last line of `get-fiemap`.
pub fn fiemap_tail(count: u64) -> String {
    format!("extents: {count}\n")
}

/// A line of `read-xattr-totals` (total and count signed, as the original prints them).
pub fn total_line(t: &XattrTotal) -> String {
    format!(
        "{}.{}.{} = {}, {}\n",
        t.name[0], t.name[1], t.name[2], t.total as i64, t.count as i64
    )
}

/// A line of `read-xattr-index`.
pub fn index_line(e: &IndxEntry) -> String {
    format!("{}.{} = {}\n", e.major, e.minor, e.ino)
}

/// A line of `list-hidden-xattrs`: the name with bytes that are not printable ASCII as
/// `?`.
pub fn hidden_line(name: &[u8]) -> String {
    let mut s: String = name
        .iter()
        .map(|&b| {
            if (0x20..0x7f).contains(&b) {
                b as char
            } else {
                '?'
            }
        })
        .collect();
    s.push('\n');
    s
}

/// A line of `search-xattrs`.
pub fn ino_line(ino: u64) -> String {
    format!("{ino}\n")
}

/// A time in JSON.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonTime {
    pub sec: i64,
    pub nsec: u32,
}

impl From<Timespec> for JsonTime {
    fn from(t: Timespec) -> JsonTime {
        JsonTime {
            sec: t.sec,
            nsec: t.nsec,
        }
    }
}

/// `stat --json`.
#[derive(Serialize, Debug)]
pub struct StatJson {
    pub ino: u64,
    pub meta_seq: u64,
    pub data_seq: u64,
    pub data_version: u64,
    pub online_blocks: u64,
    pub offline_blocks: u64,
    pub crtime: JsonTime,
    pub size: u64,
}

impl StatJson {
    pub fn new(ino: u64, s: &StatMore) -> StatJson {
        StatJson {
            ino,
            meta_seq: s.meta_seq,
            data_seq: s.data_seq,
            data_version: s.data_version,
            online_blocks: s.online_blocks,
            offline_blocks: s.offline_blocks,
            crtime: s.crtime.into(),
            size: s.size,
        }
    }
}

/// `statfs --json` (ids as the hex strings the text shows).
#[derive(Serialize, Debug)]
pub struct StatfsJson {
    pub fsid: String,
    pub rid: String,
    pub committed_seq: u64,
    pub total_meta_blocks: u64,
    pub total_data_blocks: u64,
    pub reserved_meta_blocks: u64,
}

impl From<&StatfsMore> for StatfsJson {
    fn from(s: &StatfsMore) -> StatfsJson {
        StatfsJson {
            fsid: format!("{:016x}", s.fsid),
            rid: format!("{:016x}", s.rid),
            committed_seq: s.committed_seq,
            total_meta_blocks: s.total_meta_blocks,
            total_data_blocks: s.total_data_blocks,
            reserved_meta_blocks: s.reserved_meta_blocks,
        }
    }
}

/// A seq index entry or position in JSON.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonPos {
    pub major: u64,
    pub minor: u32,
    pub ino: u64,
}

impl From<&IndexEntry> for JsonPos {
    fn from(e: &IndexEntry) -> JsonPos {
        JsonPos {
            major: e.major,
            minor: e.minor,
            ino: e.ino,
        }
    }
}

/// An `.indx.` entry in JSON.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonIndx {
    pub major: u8,
    pub minor: u64,
    pub ino: u64,
}

impl From<&IndxEntry> for JsonIndx {
    fn from(e: &IndxEntry) -> JsonIndx {
        JsonIndx {
            major: e.major,
            minor: e.minor,
            ino: e.ino,
        }
    }
}

/// A `.totl.` total in JSON.
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonTotal {
    pub name: [u64; 3],
    pub total: u64,
    pub count: u64,
}

impl From<&XattrTotal> for JsonTotal {
    fn from(t: &XattrTotal) -> JsonTotal {
        JsonTotal {
            name: t.name,
            total: t.total,
            count: t.count,
        }
    }
}

/// A waited-for block in JSON.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct JsonWaiting {
    pub ino: u64,
    pub iblock: u64,
    pub ops: Vec<&'static str>,
}

impl From<&DataWaiting> for JsonWaiting {
    fn from(w: &DataWaiting) -> JsonWaiting {
        JsonWaiting {
            ino: w.ino,
            iblock: w.iblock,
            ops: ops_names(w.ops),
        }
    }
}

/// An extent in JSON (always in bytes).
#[derive(Serialize, Debug, Clone, Copy, PartialEq, Eq)]
pub struct JsonExtent {
    pub logical: u64,
    pub physical: u64,
    pub length: u64,
    pub offline: bool,
    pub unwritten: bool,
    pub last: bool,
}

impl From<&FiemapExtent> for JsonExtent {
    fn from(e: &FiemapExtent) -> JsonExtent {
        JsonExtent {
            logical: e.logical,
            physical: e.physical,
            length: e.length,
            offline: e.offline,
            unwritten: e.unwritten,
            last: e.last,
        }
    }
}

/// The error document of a failed command in JSON mode.
#[derive(Serialize, Debug, Clone, PartialEq, Eq)]
pub struct JsonError {
    /// The errno, when the failure has one.
    pub errno: Option<i32>,
    /// Its symbolic name (`ESTALE`).
    pub name: Option<String>,
    /// What went wrong, as the last line on stderr says it.
    pub message: String,
}

#[cfg(test)]
mod tests {
    use super::*;

    fn stat() -> StatMore {
        StatMore {
            meta_seq: 5,
            data_seq: 6,
            data_version: 578437695752307201,
            online_blocks: 1,
            offline_blocks: 976563,
            crtime: Timespec {
                sec: 1725670311,
                nsec: 42,
            },
            size: 4000000000,
        }
    }

    #[test]
    fn stat_prints_padded_fields_or_one_bare_value() {
        assert_eq!(
            stat_text(&stat(), None).unwrap(),
            "meta_seq          5\n\
             data_seq          6\n\
             data_version      578437695752307201\n\
             online_blocks     1\n\
             offline_blocks    976563\n\
             crtime            1725670311.000000042\n"
        );
        assert_eq!(
            stat_text(&stat(), Some("offline_blocks")).unwrap(),
            "976563\n"
        );
        assert_eq!(
            stat_text(&stat(), Some("crtime")).unwrap(),
            "1725670311.000000042\n"
        );
        assert_eq!(stat_text(&stat(), Some("size")), None);
        assert_eq!(stat_text(&stat(), Some("fsid")), None);
    }

    #[test]
    fn statfs_prints_ids_in_hex() {
        let s = StatfsMore {
            fsid: 0xab,
            rid: 0x1234_5678_9abc_def0,
            committed_seq: 7,
            total_meta_blocks: 16384,
            total_data_blocks: 262144,
            reserved_meta_blocks: 3,
        };
        assert_eq!(
            statfs_text(&s, None).unwrap(),
            "fsid              00000000000000ab\n\
             rid               123456789abcdef0\n\
             committed_seq     7\n\
             total_meta_blocks 16384\n\
             total_data_blocks 262144\n"
        );
        assert_eq!(statfs_text(&s, Some("rid")).unwrap(), "123456789abcdef0\n");
        assert_eq!(statfs_text(&s, Some("meta_seq")), None);
        let j = serde_json::to_string(&StatfsJson::from(&s)).unwrap();
        assert_eq!(
            j,
            r#"{"fsid":"00000000000000ab","rid":"123456789abcdef0","committed_seq":7,"total_meta_blocks":16384,"total_data_blocks":262144,"reserved_meta_blocks":3}"#
        );
    }

    #[test]
    fn walk_rows_and_header_are_the_original_columns() {
        assert_eq!(
            walk_header(),
            "#                    major                minor      ino                 \n"
        );
        let e = IndexEntry {
            major: 12,
            minor: 0,
            ino: 1025,
        };
        assert_eq!(
            walk_row(24, &e),
            "24                   12                   0          1025                \n"
        );
        assert_eq!(walk_header().len(), walk_row(0, &e).len());
    }

    #[test]
    fn waiting_lists_ops_with_commas() {
        let w = |ops| DataWaiting {
            ino: 1029,
            iblock: 7,
            ops,
        };
        assert_eq!(waiting_line(&w(1)), "ino 1029 iblock 7 ops read\n");
        assert_eq!(
            waiting_line(&w(7)),
            "ino 1029 iblock 7 ops read,write,change_size\n"
        );
        assert_eq!(
            waiting_line(&w(6)),
            "ino 1029 iblock 7 ops write,change_size\n"
        );
        assert_eq!(
            waiting_line(&w(5)),
            "ino 1029 iblock 7 ops read,change_size\n"
        );
        assert_eq!(waiting_line(&w(0)), "ino 1029 iblock 7 ops \n");
        assert_eq!(
            serde_json::to_string(&JsonWaiting::from(&w(3))).unwrap(),
            r#"{"ino":1029,"iblock":7,"ops":["read","write"]}"#
        );
        assert_eq!(parse_op("change_size"), Some(4));
        assert_eq!(parse_op("Read"), None);
        assert_eq!(wait_err_line(2), "data_wait_err found 2 waiters.\n");
    }

    #[test]
    fn fiemap_lines_in_blocks_or_bytes() {
        let e = FiemapExtent {
            logical: 0,
            physical: 0,
            length: 10007 * 4096,
            offline: true,
            unwritten: false,
            last: true,
        };
        assert_eq!(
            fiemap_line(0, &e, FiemapOffsets::Both, 4096),
            "0: offset: 0 0 length: 10007 flags: O.L\n"
        );
        let u = FiemapExtent {
            logical: 8192,
            physical: 1 << 20,
            length: 4096,
            offline: false,
            unwritten: true,
            last: false,
        };
        assert_eq!(
            fiemap_line(3, &u, FiemapOffsets::Both, 1),
            "3: offset: 8192 1048576 length: 4096 flags: .U.\n"
        );
        assert_eq!(
            fiemap_line(3, &u, FiemapOffsets::Physical, 4096),
            "3: offset: 256 length: 1 flags: .U.\n"
        );
        assert_eq!(
            fiemap_line(3, &u, FiemapOffsets::Logical, 4096),
            "3: offset: 2 length: 1 flags: .U.\n"
        );
        assert_eq!(fiemap_tail(1), "extents: 1\n");
    }

    #[test]
    fn totals_index_names_and_inodes() {
        let t = XattrTotal {
            name: [1, 2, 3],
            total: 300,
            count: 2,
        };
        assert_eq!(total_line(&t), "1.2.3 = 300, 2\n");
        let big = XattrTotal {
            total: u64::MAX,
            ..t
        };
        assert_eq!(total_line(&big), "1.2.3 = -1, 2\n");
        let e = IndxEntry {
            major: 255,
            minor: 18446744073709551615,
            ino: 1030,
        };
        assert_eq!(index_line(&e), "255.18446744073709551615 = 1030\n");
        assert_eq!(hidden_line(b"scoutfs.hide.a"), "scoutfs.hide.a\n");
        assert_eq!(
            hidden_line(b"scoutfs.hide.\x01\xc3\xa9"),
            "scoutfs.hide.???\n"
        );
        assert_eq!(ino_line(1025), "1025\n");
        assert_eq!(
            serde_json::to_string(&JsonTotal::from(&t)).unwrap(),
            r#"{"name":[1,2,3],"total":300,"count":2}"#
        );
    }

    #[test]
    fn stat_json_has_every_field_and_the_times_as_numbers() {
        let j = serde_json::to_string(&StatJson::new(1025, &stat())).unwrap();
        assert_eq!(
            j,
            r#"{"ino":1025,"meta_seq":5,"data_seq":6,"data_version":578437695752307201,"online_blocks":1,"offline_blocks":976563,"crtime":{"sec":1725670311,"nsec":42},"size":4000000000}"#
        );
        assert_eq!(timespec(Timespec { sec: 1, nsec: 5 }), "1.000000005");
    }
}
