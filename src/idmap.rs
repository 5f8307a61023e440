//! User and group id maps of a user namespace, shared by the FUSE overlay (which shows a container's files
//! under the host ids the container's users have) and the runtime (which writes the same maps to
//! `/proc/PID/uid_map`), so both sides of `--userns` agree on one description.
//!
//! The text form is fuse-overlayfs's `uidmapping=`/`gidmapping=` and podman's `--uidmap`:
//! `INSIDE:OUTSIDE:COUNT`, several ranges joined by `:` (fuse-overlayfs) or `,` (repeated flags).

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The id an unmapped id shows as: the kernel's default `overflowuid`/`overflowgid` (nobody).
pub const OVERFLOW_ID: u32 = 65534;

/// The most ranges the kernel accepts in one `uid_map` (since Linux 4.15).
const MAX_RANGES: usize = 340;

/// A map that cannot be used.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdMapError {
    /// Not `INSIDE:OUTSIDE:COUNT` triples of decimal numbers.
    #[error("invalid id map {0:?}: expected INSIDE:OUTSIDE:COUNT[:INSIDE:OUTSIDE:COUNT...]")]
    Syntax(String),
    /// Two ranges overlap inside or outside, a range is empty, or one wraps past 2^32.
    #[error("invalid id map {0:?}: {1}")]
    Range(String, &'static str),
}

/// One contiguous range: ids `inside..inside+count` in the container are `outside..outside+count` on the
/// host.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct IdRange {
    /// First id as the container (and the files of its image) see it.
    pub inside: u32,
    /// First id as the host sees it.
    pub outside: u32,
    /// Number of ids.
    pub count: u32,
}

/// A user (or group) id map; empty means identity (no user namespace).
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(try_from = "Vec<IdRange>", into = "Vec<IdRange>")]
pub struct IdMap {
    ranges: Vec<IdRange>,
}

impl IdMap {
    /// The identity map: ids are not translated.
    pub fn identity() -> IdMap {
        IdMap::default()
    }

    /// A map from validated ranges (no overlap inside or outside, none empty or wrapping).
    pub fn from_ranges(ranges: Vec<IdRange>) -> Result<IdMap, IdMapError> {
        let text =
            ranges.iter().map(|r| format!("{}:{}:{}", r.inside, r.outside, r.count)).collect::<Vec<_>>();
        let text = text.join(":");
        if ranges.len() > MAX_RANGES {
            return Err(IdMapError::Range(text, "too many ranges (the kernel takes at most 340)"));
        }
        for (i, r) in ranges.iter().enumerate() {
            if r.count == 0 {
                return Err(IdMapError::Range(text, "a range has count 0"));
            }
            if r.inside.checked_add(r.count - 1).is_none() || r.outside.checked_add(r.count - 1).is_none() {
                return Err(IdMapError::Range(text, "a range goes past 4294967295"));
            }
            for o in &ranges[..i] {
                let overlap = |a: u32, b: u32| a < b.saturating_add(o.count) && b < a.saturating_add(r.count);
                if overlap(r.inside, o.inside) {
                    return Err(IdMapError::Range(text, "two ranges overlap inside the container"));
                }
                if overlap(r.outside, o.outside) {
                    return Err(IdMapError::Range(text, "two ranges overlap on the host"));
                }
            }
        }
        Ok(IdMap { ranges })
    }

    /// Parse `INSIDE:OUTSIDE:COUNT` triples separated by `:` or `,` (fuse-overlayfs and podman forms).
    pub fn parse(s: &str) -> Result<IdMap, IdMapError> {
        let fields: Vec<&str> = s.split([':', ',']).map(str::trim).collect();
        if !fields.len().is_multiple_of(3) || fields.iter().any(|f| f.is_empty()) {
            return Err(IdMapError::Syntax(s.to_string()));
        }
        let mut ranges = Vec::new();
        for t in fields.chunks(3) {
            let n = |f: &str| f.parse::<u32>().map_err(|_| IdMapError::Syntax(s.to_string()));
            ranges.push(IdRange { inside: n(t[0])?, outside: n(t[1])?, count: n(t[2])? });
        }
        IdMap::from_ranges(ranges)
    }

    /// True when ids are not translated.
    pub fn is_identity(&self) -> bool {
        self.ranges.is_empty()
    }

    /// The ranges, in the order given.
    pub fn ranges(&self) -> &[IdRange] {
        &self.ranges
    }

    /// The host id of container id `inside`; unmapped ids become [`OVERFLOW_ID`] as the kernel shows them.
    pub fn to_host(&self, inside: u32) -> u32 {
        if self.is_identity() {
            return inside;
        }
        self.ranges
            .iter()
            .find(|r| inside >= r.inside && inside - r.inside < r.count)
            .map_or(OVERFLOW_ID, |r| r.outside + (inside - r.inside))
    }

    /// The container id of host id `outside`; `None` when the container cannot name it.
    pub fn to_inside(&self, outside: u32) -> Option<u32> {
        if self.is_identity() {
            return Some(outside);
        }
        self.ranges
            .iter()
            .find(|r| outside >= r.outside && outside - r.outside < r.count)
            .map(|r| r.inside + (outside - r.outside))
    }

    /// The map in `/proc/PID/uid_map` syntax ("inside outside count" lines).
    pub fn proc_text(&self) -> String {
        self.ranges.iter().map(|r| format!("{} {} {}\n", r.inside, r.outside, r.count)).collect()
    }

    /// The map in fuse-overlayfs's `uidmapping=` syntax.
    pub fn mount_option_text(&self) -> String {
        self.ranges
            .iter()
            .map(|r| format!("{}:{}:{}", r.inside, r.outside, r.count))
            .collect::<Vec<_>>()
            .join(":")
    }
}

impl TryFrom<Vec<IdRange>> for IdMap {
    type Error = IdMapError;

    fn try_from(ranges: Vec<IdRange>) -> Result<IdMap, IdMapError> {
        IdMap::from_ranges(ranges)
    }
}

impl From<IdMap> for Vec<IdRange> {
    fn from(m: IdMap) -> Vec<IdRange> {
        m.ranges
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_both_separators_and_maps_both_ways() {
        let m = IdMap::parse("0:100000:65536").unwrap();
        assert_eq!(m.to_host(0), 100000);
        assert_eq!(m.to_host(1000), 101000);
        assert_eq!(m.to_host(65536), OVERFLOW_ID);
        assert_eq!(m.to_inside(100000), Some(0));
        assert_eq!(m.to_inside(0), None);
        let two = IdMap::parse("0:1000:1,1:100000:65535").unwrap();
        assert_eq!(two, IdMap::parse("0:1000:1:1:100000:65535").unwrap());
        assert_eq!(two.to_host(0), 1000);
        assert_eq!(two.to_host(5), 100004);
        assert_eq!(two.proc_text(), "0 1000 1\n1 100000 65535\n");
        assert_eq!(two.mount_option_text(), "0:1000:1:1:100000:65535");
    }

    #[test]
    fn identity_translates_nothing() {
        let m = IdMap::identity();
        assert_eq!(m.to_host(42), 42);
        assert_eq!(m.to_inside(42), Some(42));
    }

    #[test]
    fn refuses_bad_maps() {
        for bad in
            ["", "0:1", "a:b:c", "0:100000:0", "0:1:2:1:5:1", "0:10:1:5:10:1", "1:4294967295:2", "-1:0:1"]
        {
            assert!(IdMap::parse(bad).is_err(), "{bad:?} accepted");
        }
    }
}
