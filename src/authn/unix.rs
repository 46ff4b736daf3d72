//! Unix socket callers: the peer credentials the kernel reports for the connection (uid and gid
//! of the connecting process, `SO_PEERCRED`; the front end reads them from tonic's
//! `UdsConnectInfo`) mapped to an [`Identity`].
//!
//! Without a users file, the server's own (effective) uid and root are `system:admin` in
//! `system:masters`, and any other uid is `system:unix:<uid>` with no groups, so `keyward dev`
//! works with no setup for whoever started it and nobody else gets anything by default.
//!
//! `--unix-users FILE` (YAML, reloaded on change, not writable by group or others):
//!
//! ```yaml
//! users:                    # by uid: the user name and its groups
//!   - uid: 1000
//!     name: alice
//!     groups: [dev]
//! groups:                   # by the caller's gid: groups added to whoever connects with it
//!   - gid: 1001
//!     groups: [ops]
//! ```
//!
//! A listed uid gets its name and groups; an unlisted one keeps the defaults above (the server's
//! uid and root can read the server's keys anyway, so they stay `system:admin` unless listed).
//! The groups of the caller's gid are added after the user's own, without duplicates. Every
//! Unix identity has the numeric uid as its `uid`. Unknown fields, duplicate uids or gids, empty
//! names and groups are refused with a message naming the field.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

use serde::Deserialize;

use super::reload::{FileAccess, FileStatus, Reload, ReloadOutcome, WatchedFile};
use super::{names, AuthnError, Identity};

/// Prefix of the user name of a uid nothing maps: `system:unix:<uid>`.
pub const UNIX_USER_PREFIX: &str = "system:unix:";

/// What the kernel says about the process at the other end of a Unix socket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerCredentials {
    /// Effective user id at `connect` time.
    pub uid: u32,
    /// Effective group id at `connect` time.
    pub gid: u32,
}

impl From<&tokio::net::unix::UCred> for PeerCredentials {
    /// The credentials tonic's `UdsConnectInfo::peer_cred` carries.
    fn from(c: &tokio::net::unix::UCred) -> Self {
        Self {
            uid: c.uid(),
            gid: c.gid(),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a mapping with `users` and `groups`")]
struct UsersFile {
    #[serde(default)]
    users: Vec<UserEntry>,
    #[serde(default)]
    groups: Vec<GroupEntry>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UserEntry {
    uid: u32,
    name: String,
    #[serde(default)]
    groups: Vec<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct GroupEntry {
    gid: u32,
    groups: Vec<String>,
}

/// A parsed `--unix-users` file.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct UnixUsers {
    users: BTreeMap<u32, (String, Vec<String>)>,
    gids: BTreeMap<u32, Vec<String>>,
}

impl super::reload::Entries for UnixUsers {
    fn lists_nothing(&self) -> bool {
        self.users.is_empty() && self.gids.is_empty()
    }
}

fn check_groups(field: &str, groups: &[String], errs: &mut Vec<String>) {
    for (j, g) in groups.iter().enumerate() {
        if g.is_empty() {
            errs.push(format!("{field}[{j}]: Required value: a group name"));
        } else if g == names::SYSTEM_UNAUTHENTICATED || g == names::SYSTEM_AUTHENTICATED {
            errs.push(format!(
                "{field}[{j}]: Invalid value: {g:?}: added by the server, not by a users file"
            ));
        }
    }
}

impl UnixUsers {
    /// Parses and validates a users file; every broken rule is reported, naming its field.
    pub fn parse(bytes: &[u8]) -> Result<Self, String> {
        let text = std::str::from_utf8(bytes).map_err(|_| "the file is not UTF-8".to_string())?;
        let file: UsersFile = if text.trim().is_empty() {
            UsersFile {
                users: Vec::new(),
                groups: Vec::new(),
            }
        } else {
            serde_yaml_ng::from_str(text).map_err(|e| e.to_string())?
        };
        let mut out = UnixUsers::default();
        let mut errs = Vec::new();
        for (i, u) in file.users.into_iter().enumerate() {
            if u.name.is_empty() {
                errs.push(format!("users[{i}].name: Required value"));
            } else if u.name == names::SYSTEM_ANONYMOUS {
                errs.push(format!(
                    "users[{i}].name: Invalid value: {:?}: reserved for requests without credentials",
                    u.name
                ));
            }
            check_groups(&format!("users[{i}].groups"), &u.groups, &mut errs);
            if out.users.contains_key(&u.uid) {
                errs.push(format!("users[{i}].uid: Duplicate value: {}", u.uid));
            }
            out.users.insert(u.uid, (u.name, u.groups));
        }
        for (i, g) in file.groups.into_iter().enumerate() {
            if g.groups.is_empty() {
                errs.push(format!("groups[{i}].groups: Required value"));
            }
            check_groups(&format!("groups[{i}].groups"), &g.groups, &mut errs);
            if out.gids.contains_key(&g.gid) {
                errs.push(format!("groups[{i}].gid: Duplicate value: {}", g.gid));
            }
            out.gids.insert(g.gid, g.groups);
        }
        if errs.is_empty() {
            Ok(out)
        } else {
            Err(errs.join("; "))
        }
    }
}

/// Maps Unix peer credentials to identities.
#[derive(Debug, Clone)]
pub struct UnixAuthenticator {
    server_uid: u32,
    users: Option<Arc<WatchedFile<UnixUsers>>>,
}

impl UnixAuthenticator {
    /// Without a users file: `server_uid` (normally [`UnixAuthenticator::server_uid`]) and root
    /// are `system:admin`, other uids `system:unix:<uid>`.
    pub fn new(server_uid: u32) -> Self {
        Self {
            server_uid,
            users: None,
        }
    }

    /// With the users file at `path`, read now (the error names the file and field).
    pub fn with_users_file(server_uid: u32, path: impl Into<PathBuf>) -> Result<Self, AuthnError> {
        let file = WatchedFile::load(
            path,
            FileAccess::NotWritableByOthers,
            "unix users file",
            UnixUsers::parse,
        )?;
        Ok(Self {
            server_uid,
            users: Some(Arc::new(file)),
        })
    }

    /// This process's effective uid: the uid that is `system:admin` by default.
    pub fn server_uid() -> u32 {
        rustix::process::geteuid().as_raw()
    }

    /// The identity of the peer, with `system:authenticated`. Every uid maps to one.
    pub fn authenticate(&self, peer: PeerCredentials) -> Identity {
        let users = self.users.as_ref().map(|f| f.current());
        let users = users.as_deref();
        let (name, mut groups) = match users.and_then(|u| u.users.get(&peer.uid)) {
            Some((name, groups)) => (name.clone(), groups.clone()),
            None if peer.uid == self.server_uid || peer.uid == 0 => (
                names::SYSTEM_ADMIN.to_owned(),
                vec![names::SYSTEM_MASTERS.to_owned()],
            ),
            None => (format!("{UNIX_USER_PREFIX}{}", peer.uid), Vec::new()),
        };
        if let Some(extra) = users.and_then(|u| u.gids.get(&peer.gid)) {
            for g in extra {
                if !groups.contains(g) {
                    groups.push(g.clone());
                }
            }
        }
        Identity::new(name, peer.uid.to_string(), groups).with_authenticated_group()
    }

    /// The users file, for a [`super::reload::Reloader`]; `None` without one.
    pub fn reloadable(&self) -> Option<Arc<dyn Reload>> {
        self.users.clone().map(|f| f as Arc<dyn Reload>)
    }

    /// Re-reads the users file now; `None` without one.
    pub fn check_now(&self) -> Option<ReloadOutcome> {
        self.users.as_ref().map(|f| f.check_now())
    }

    /// The users file's reload status; `None` without one.
    pub fn status(&self) -> Option<FileStatus> {
        self.users.as_ref().map(|f| f.status())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::fs;
    use std::os::unix::fs::PermissionsExt;

    const AUTH: &str = names::SYSTEM_AUTHENTICATED;

    fn peer(uid: u32, gid: u32) -> PeerCredentials {
        PeerCredentials { uid, gid }
    }

    #[tokio::test]
    async fn peer_credentials_of_a_real_socket() {
        let (a, _b) = tokio::net::UnixStream::pair().unwrap();
        let p = PeerCredentials::from(&a.peer_cred().unwrap());
        assert_eq!(p.uid, UnixAuthenticator::server_uid());
        assert_eq!(p.gid, rustix::process::getegid().as_raw());
        let id = UnixAuthenticator::new(UnixAuthenticator::server_uid()).authenticate(p);
        assert_eq!(id.name, names::SYSTEM_ADMIN);
    }

    #[test]
    fn defaults_without_a_file() {
        let a = UnixAuthenticator::new(1234);
        for uid in [1234, 0] {
            let id = a.authenticate(peer(uid, 99));
            assert_eq!(id.name, "system:admin");
            assert_eq!(id.groups, ["system:masters", AUTH]);
            assert_eq!(id.uid, uid.to_string());
        }
        let id = a.authenticate(peer(1000, 1000));
        assert_eq!(id.name, "system:unix:1000");
        assert_eq!(id.groups, [AUTH]);
        assert!(a.reloadable().is_none() && a.status().is_none());
        assert_eq!(
            UnixAuthenticator::server_uid(),
            rustix::process::geteuid().as_raw()
        );
    }

    #[test]
    fn a_users_file_maps_uids_and_gids_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let p = dir.path().join("users.yaml");
        let write = |text: &str, mode: u32| {
            fs::write(&p, text).unwrap();
            fs::set_permissions(&p, fs::Permissions::from_mode(mode)).unwrap();
        };
        write(
            "users:\n  - {uid: 1000, name: alice, groups: [dev]}\n  - {uid: 0, name: root-user}\ngroups:\n  - {gid: 1001, groups: [ops, dev]}\n",
            0o644,
        );
        let a = UnixAuthenticator::with_users_file(1234, &p).unwrap();
        let id = a.authenticate(peer(1000, 1001));
        assert_eq!((id.name.as_str(), id.uid.as_str()), ("alice", "1000"));
        assert_eq!(id.groups, ["dev", "ops", AUTH], "gid groups added once");
        assert_eq!(
            a.authenticate(peer(0, 0)).name,
            "root-user",
            "listed: mapped"
        );
        assert_eq!(a.authenticate(peer(1234, 0)).name, "system:admin");
        let other = a.authenticate(peer(2000, 1001));
        assert_eq!(other.name, "system:unix:2000");
        assert_eq!(other.groups, ["ops", "dev", AUTH]);

        write("users:\n  - {uid: 1000, name: alice2}\n", 0o600);
        assert_eq!(a.check_now(), Some(ReloadOutcome::Applied));
        assert_eq!(a.authenticate(peer(1000, 1001)).name, "alice2");
        write("users:\n  - {uid: 1000, nmae: x}\n", 0o600);
        assert!(matches!(a.check_now(), Some(ReloadOutcome::Failed { .. })));
        assert_eq!(a.authenticate(peer(1000, 1)).name, "alice2", "old map kept");
        assert!(a.status().unwrap().last_error.unwrap().contains("nmae"));

        // Writable by others: refused.
        write("users: []\n", 0o666);
        assert!(UnixAuthenticator::with_users_file(1, &p).is_err());
    }

    #[test]
    fn strict_parsing_names_the_field() {
        let err = |t: &str| UnixUsers::parse(t.as_bytes()).unwrap_err();
        assert!(
            err("users:\n  - {uid: 1, name: a, group: [x]}\n").contains("unknown field `group`")
        );
        assert!(err("user: []\n").contains("unknown field `user`"));
        assert_eq!(
            err("nope\n"),
            "invalid type: string \"nope\", expected a mapping with `users` and `groups`"
        );
        assert!(err("users:\n  - {uid: -1, name: a}\n").contains("users[0].uid"));
        assert_eq!(
            err("users:\n  - {uid: 1, name: ''}\n  - {uid: 1, name: b, groups: ['']}\n"),
            "users[0].name: Required value; users[1].groups[0]: Required value: a group name; users[1].uid: Duplicate value: 1"
        );
        assert_eq!(
            err("groups:\n  - {gid: 5, groups: []}\n  - {gid: 5, groups: [system:authenticated]}\n"),
            "groups[0].groups: Required value; groups[1].groups[0]: Invalid value: \"system:authenticated\": added by the server, not by a users file; groups[1].gid: Duplicate value: 5"
        );
        assert!(err("users:\n  - {uid: 2, name: system:anonymous}\n").contains("reserved"));
        assert_eq!(UnixUsers::parse(b"").unwrap(), UnixUsers::default());
        assert_eq!(
            UnixUsers::parse(b"users: []\n").unwrap(),
            UnixUsers::default()
        );
    }
}
