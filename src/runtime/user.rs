//! docker's `-u` resolved against the container's own /etc/passwd and /etc/group (never the host's).

use super::RuntimeError;
use std::path::Path;

/// The identity the container process runs as.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Identity {
    /// User id.
    pub uid: u32,
    /// Primary group id.
    pub gid: u32,
    /// Supplementary groups (from /etc/group membership of the user name).
    pub groups: Vec<u32>,
    /// Home directory from /etc/passwd (`/` when unknown), for `HOME`.
    pub home: String,
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
    home: String,
}

fn passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 6 {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
                home: f[5].to_string(),
            })
        })
        .collect()
}

/// (name, gid, members)
fn groups(text: &str) -> Vec<(String, u32, Vec<String>)> {
    text.lines()
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 {
                return None;
            }
            let members =
                f.get(3).map(|m| m.split(',').filter(|s| !s.is_empty()).map(str::to_string).collect());
            Some((f[0].to_string(), f[2].parse().ok()?, members.unwrap_or_default()))
        })
        .collect()
}

/// Resolve `spec` (`""`, `name`, `uid`, `name:group`, `uid:gid`, …) inside the rootfs at `root`.
/// A numeric uid need not exist in /etc/passwd (docker allows that); a name must.
pub fn resolve(root: &Path, spec: &str) -> Result<Identity, RuntimeError> {
    let read = |f: &str| std::fs::read_to_string(root.join(f)).unwrap_or_default();
    resolve_with(&read("etc/passwd"), &read("etc/group"), spec)
}

/// [`resolve`] against the text of a passwd and a group file (for callers that read them themselves,
/// like the builder, which must read a stage's files inside the stage's rootfs).
pub fn resolve_with(passwd_text: &str, group_text: &str, spec: &str) -> Result<Identity, RuntimeError> {
    let (user, group) = match spec.split_once(':') {
        Some((u, g)) => (u, Some(g)),
        None => (spec, None),
    };
    let user = if user.is_empty() { "0" } else { user };
    let pw = passwd(passwd_text);
    let entry = match user.parse::<u32>() {
        Ok(uid) => pw.iter().find(|e| e.uid == uid),
        Err(_) => Some(pw.iter().find(|e| e.name == user).ok_or_else(|| {
            RuntimeError::Invalid(format!("unable to find user {user}: no matching entries in passwd file"))
        })?),
    };
    let uid = match entry {
        Some(e) => e.uid,
        None => user.parse().map_err(|_| RuntimeError::Invalid(format!("bad user {user}")))?,
    };
    let grp = groups(group_text);
    let gid = match group {
        Some(g) if !g.is_empty() => match g.parse::<u32>() {
            Ok(n) => n,
            Err(_) => grp.iter().find(|(n, _, _)| n == g).map(|(_, id, _)| *id).ok_or_else(|| {
                RuntimeError::Invalid(format!("unable to find group {g}: no matching entries in group file"))
            })?,
        },
        _ => entry.map(|e| e.gid).unwrap_or(0),
    };
    let mut supplementary = Vec::new();
    if group.is_none() {
        if let Some(e) = entry {
            for (_, id, members) in &grp {
                if members.iter().any(|m| m == &e.name) && *id != gid && !supplementary.contains(id) {
                    supplementary.push(*id);
                }
            }
        }
    }
    let home = entry.map(|e| e.home.clone()).filter(|h| !h.is_empty()).unwrap_or_else(|| "/".to_string());
    Ok(Identity { uid, gid, groups: supplementary, home })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fixture() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("etc")).unwrap();
        std::fs::write(d.path().join("etc/passwd"), "root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534::/nonexistent:/bin/false\nalice:x:1000:1000::/home/alice:/bin/sh\n").unwrap();
        std::fs::write(
            d.path().join("etc/group"),
            "root:x:0:\nwheel:x:10:alice,bob\nalice:x:1000:\naudio:x:29:alice\n",
        )
        .unwrap();
        d
    }

    #[test]
    fn resolves_names_numbers_and_groups() {
        let d = fixture();
        let r = d.path();
        assert_eq!(
            resolve(r, "").unwrap(),
            Identity { uid: 0, gid: 0, groups: vec![], home: "/root".into() }
        );
        let a = resolve(r, "alice").unwrap();
        assert_eq!(
            (a.uid, a.gid, a.groups.clone(), a.home.as_str()),
            (1000, 1000, vec![10, 29], "/home/alice")
        );
        let b = resolve(r, "1000:wheel").unwrap();
        assert_eq!((b.uid, b.gid, b.groups.len()), (1000, 10, 0));
        let n = resolve(r, "4242:4343").unwrap();
        assert_eq!((n.uid, n.gid, n.home.as_str()), (4242, 4343, "/"));
        assert!(resolve(r, "mallory").is_err());
        assert!(resolve(r, "alice:nogroup").is_err());
    }
}
