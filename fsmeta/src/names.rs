//! User and group names, both ways, through one process-wide cache.
//!
//! Lookups go through `getpwuid_r`/`getgrgid_r` and friends (the `nix`
//! crate), which may ask NSS (LDAP, systemd-userdb) and so may be slow;
//! a backup reads the same few ids millions of times. Answers, including
//! "no such id", are kept for the life of the process: a user added while
//! the agent runs gets a name after the next restart.

use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{LazyLock, Mutex};

use nix::unistd::{Gid, Group, Uid, User};

/// Past this many entries a cache is emptied and refilled on demand. Real
/// systems have a few dozen ids on files; the bound only matters for a tree
/// full of random ids (an extracted foreign archive), where it caps memory.
const MAX_ENTRIES: usize = 4096;

struct Cache<K, V> {
    map: Mutex<HashMap<K, V>>,
}

impl<K: Eq + Hash, V: Clone> Cache<K, V> {
    fn new() -> Self {
        Cache {
            map: Mutex::new(HashMap::new()),
        }
    }

    fn get_or(&self, key: K, lookup: impl FnOnce(&K) -> V) -> V {
        // A panic while holding the lock cannot leave the map inconsistent
        // (one insert), so a poisoned lock is used as is.
        if let Some(v) = self.map.lock().unwrap_or_else(|e| e.into_inner()).get(&key) {
            return v.clone();
        }
        // Look up without holding the lock: NSS may block.
        let v = lookup(&key);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(key, v.clone());
        v
    }
}

static USER_BY_ID: LazyLock<Cache<u32, Option<String>>> = LazyLock::new(Cache::new);
static GROUP_BY_ID: LazyLock<Cache<u32, Option<String>>> = LazyLock::new(Cache::new);
static ID_BY_USER: LazyLock<Cache<String, Option<u32>>> = LazyLock::new(Cache::new);
static ID_BY_GROUP: LazyLock<Cache<String, Option<u32>>> = LazyLock::new(Cache::new);

/// The name of user `uid`, if it has one here.
pub(crate) fn user_name(uid: u32) -> Option<String> {
    USER_BY_ID.get_or(uid, |&uid| {
        User::from_uid(Uid::from_raw(uid))
            .ok()
            .flatten()
            .map(|u| u.name)
    })
}

/// The name of group `gid`, if it has one here.
pub(crate) fn group_name(gid: u32) -> Option<String> {
    GROUP_BY_ID.get_or(gid, |&gid| {
        Group::from_gid(Gid::from_raw(gid))
            .ok()
            .flatten()
            .map(|g| g.name)
    })
}

/// The id of user `name` on this system.
pub(crate) fn uid_of(name: &str) -> Option<u32> {
    ID_BY_USER.get_or(name.to_owned(), |name| {
        User::from_name(name).ok().flatten().map(|u| u.uid.as_raw())
    })
}

/// The id of group `name` on this system.
pub(crate) fn gid_of(name: &str) -> Option<u32> {
    ID_BY_GROUP.get_or(name.to_owned(), |name| {
        Group::from_name(name)
            .ok()
            .flatten()
            .map(|g| g.gid.as_raw())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn root_both_ways() {
        assert_eq!(user_name(0).as_deref(), Some("root"));
        assert_eq!(uid_of("root"), Some(0));
        assert_eq!(gid_of(&group_name(0).unwrap()), Some(0));
        // Cached answer is the same answer.
        assert_eq!(user_name(0).as_deref(), Some("root"));
    }

    #[test]
    fn unknown_ids_and_names_are_none() {
        assert_eq!(user_name(3_999_999_999), None);
        assert_eq!(uid_of("rewind-no-such-user"), None);
        assert_eq!(gid_of("rewind-no-such-group"), None);
    }
}
