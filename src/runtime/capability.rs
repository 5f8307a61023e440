//! Linux capabilities by name, as docker's `--cap-add`/`--cap-drop` spell them: parsed once, where the user
//! gives them, with unknown names refused; kept in the container's spec as canonical names.

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Capability names by number (without the `CAP_` prefix), as `--cap-add` and `--cap-drop` spell them.
const NAMES: &[&str] = &[
    "CHOWN",
    "DAC_OVERRIDE",
    "DAC_READ_SEARCH",
    "FOWNER",
    "FSETID",
    "KILL",
    "SETGID",
    "SETUID",
    "SETPCAP",
    "LINUX_IMMUTABLE",
    "NET_BIND_SERVICE",
    "NET_BROADCAST",
    "NET_ADMIN",
    "NET_RAW",
    "IPC_LOCK",
    "IPC_OWNER",
    "SYS_MODULE",
    "SYS_RAWIO",
    "SYS_CHROOT",
    "SYS_PTRACE",
    "SYS_PACCT",
    "SYS_ADMIN",
    "SYS_BOOT",
    "SYS_NICE",
    "SYS_RESOURCE",
    "SYS_TIME",
    "SYS_TTY_CONFIG",
    "MKNOD",
    "LEASE",
    "AUDIT_WRITE",
    "AUDIT_CONTROL",
    "SETFCAP",
    "MAC_OVERRIDE",
    "MAC_ADMIN",
    "SYSLOG",
    "WAKE_ALARM",
    "BLOCK_SUSPEND",
    "AUDIT_READ",
    "PERFMON",
    "BPF",
    "CHECKPOINT_RESTORE",
];

/// A capability named by a user: one capability, or `ALL`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapName {
    /// Every capability the kernel knows.
    All,
    /// One capability by number.
    One(u32),
}

/// A capability name that is none.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown capability: {0:?}")]
pub struct UnknownCapability(pub String);

/// Parse a docker capability name (`NET_ADMIN`, `CAP_NET_ADMIN`, `net_admin`, `ALL`) so the CLI rejects a
/// typo instead of silently granting nothing.
pub fn parse_name(s: &str) -> Result<CapName, UnknownCapability> {
    let up = s.trim().to_ascii_uppercase();
    let bare = up.strip_prefix("CAP_").unwrap_or(&up);
    if bare == "ALL" {
        return Ok(CapName::All);
    }
    NAMES
        .iter()
        .position(|n| *n == bare)
        .map(|i| CapName::One(i as u32))
        .ok_or_else(|| UnknownCapability(s.to_string()))
}

/// The canonical `CAP_…` name of a capability number, as stored in the container's spec.
pub fn name_of(cap: u32) -> String {
    NAMES.get(cap as usize).map(|n| format!("CAP_{n}")).unwrap_or_else(|| format!("CAP_{cap}"))
}

impl std::fmt::Display for CapName {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            CapName::All => f.write_str("ALL"),
            CapName::One(c) => f.write_str(&name_of(*c)),
        }
    }
}

impl std::str::FromStr for CapName {
    type Err = UnknownCapability;
    fn from_str(s: &str) -> Result<CapName, UnknownCapability> {
        parse_name(s)
    }
}

/// Stored as the canonical name (`CAP_NET_ADMIN`, `ALL`), as `docker inspect` shows it.
impl Serialize for CapName {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

/// A name that no longer parses (a hand-edited state.json) is an error, never a silently dropped grant.
impl<'de> Deserialize<'de> for CapName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<CapName, D::Error> {
        let s = String::deserialize(d)?;
        parse_name(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names() {
        assert_eq!(parse_name("net_admin").unwrap(), CapName::One(12));
        assert_eq!(parse_name("CAP_SYS_ADMIN").unwrap(), CapName::One(21));
        assert_eq!(parse_name("all").unwrap(), CapName::All);
        assert!(parse_name("CAP_FLY").is_err());
        assert_eq!(name_of(21), "CAP_SYS_ADMIN");
    }

    #[test]
    fn stored_as_canonical_names_and_unknown_ones_refused() {
        let v: Vec<CapName> = serde_json::from_str(r#"["CAP_NET_ADMIN","ALL","chown"]"#).unwrap();
        assert_eq!(serde_json::to_string(&v).unwrap(), r#"["CAP_NET_ADMIN","ALL","CAP_CHOWN"]"#);
        assert!(serde_json::from_str::<Vec<CapName>>(r#"["CAP_FLY"]"#).is_err());
    }
}
