//! Client authentication and the brake on guessing.
//!
//! A client proves itself with its key, checked against the argon2 hash in
//! the registry ([`crate::secrets`]). A key that has passed argon2 once is
//! remembered in memory by its blake3 hash, compared in constant time, so a
//! busy client does not pay argon2 per request. Every failed attempt from
//! an address doubles the delay before that address gets its next answer
//! (up to 10 s).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use crate::data::{self, Clients, DataDir};
use crate::secrets::{hash_secret, new_secret, same, verify_secret};

/// What tells a changed registry file: it is replaced by rename, so its
/// inode changes with every save.
fn stamp(dir: &DataDir) -> Option<(SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.clients()).ok()?;
    Some((m.modified().ok()?, m.ino()))
}

/// The registry as the server sees it: reloaded when `clients.json`
/// changes (an admin added or removed a client while the server runs).
pub struct Registry {
    dir: DataDir,
    inner: Mutex<Loaded>,
}

struct Loaded {
    mtime: Option<(SystemTime, u64)>,
    clients: Clients,
    /// name → blake3 of the key that passed argon2 against the current
    /// registry.
    verified: HashMap<String, [u8; 32]>,
}

impl Registry {
    /// Load the registry of `dir`.
    pub fn open(dir: &DataDir) -> Result<Registry> {
        let clients = data::load_clients(dir)?;
        let mtime = stamp(dir);
        Ok(Registry {
            dir: dir.clone(),
            inner: Mutex::new(Loaded {
                mtime,
                clients,
                verified: HashMap::new(),
            }),
        })
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.dir);
        if now != g.mtime {
            match data::load_clients(&self.dir) {
                Ok(c) => {
                    g.clients = c;
                    g.mtime = now;
                    g.verified.clear();
                }
                Err(e) => tracing::error!("client registry not reloaded: {e:#}"),
            }
        }
        g
    }

    /// Check `NAME:KEY`; the client's name when it is valid. Runs argon2
    /// at most once per key and registry change (call from a blocking
    /// thread).
    pub fn authenticate(&self, credential: &str) -> Option<String> {
        let (name, key) = credential.split_once(':')?;
        let digest = *blake3::hash(key.as_bytes()).as_bytes();
        let hash = {
            let g = self.lock();
            if let Some(known) = g.verified.get(name) {
                return same(known, &digest).then(|| name.to_string());
            }
            let r = g.clients.get(name)?;
            if r.removed.is_some() {
                return None;
            }
            r.key_hash.clone()?
        };
        if !verify_secret(key, &hash) {
            return None;
        }
        let mut g = self.lock();
        // Still the same key hash after the slow check?
        if g.clients.get(name).and_then(|r| r.key_hash.as_deref()) != Some(hash.as_str()) {
            return None;
        }
        g.verified.insert(name.to_string(), digest);
        Some(name.to_string())
    }

    /// Trade a one-time enrollment token for a new client key (returned).
    pub fn enroll(&self, name: &str, token: &str) -> Result<Option<String>> {
        if data::check_name(name).is_err() {
            return Ok(None);
        }
        let key = new_secret();
        let key_hash = hash_secret(&key)?;
        let done = data::update_clients(&self.dir, |c| {
            let Some(r) = c
                .clients
                .iter_mut()
                .find(|r| r.name == name && r.removed.is_none())
            else {
                return Ok(false);
            };
            let Some(th) = r.token_hash.as_deref() else {
                return Ok(false);
            };
            if !verify_secret(token, th) {
                return Ok(false);
            }
            r.token_hash = None;
            r.key_hash = Some(key_hash);
            r.enrolled = Some(rewind_core::Timestamp::now().to_string());
            Ok(true)
        })?;
        // The next lookup reloads the registry.
        Ok(done.then_some(key))
    }

    /// Names of clients that may connect now.
    pub fn active(&self) -> Vec<String> {
        self.lock()
            .clients
            .clients
            .iter()
            .filter(|r| r.removed.is_none())
            .map(|r| r.name.clone())
            .collect()
    }
}

/// Failed attempts per address.
#[derive(Default)]
pub struct Throttle {
    failures: Mutex<HashMap<IpAddr, (u32, Instant)>>,
}

/// Failures are forgotten after this long without a new one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The longest delay.
const MAX_DELAY: Duration = Duration::from_secs(10);

impl Throttle {
    /// How long to hold the answer to `ip`'s next attempt.
    pub fn delay(&self, ip: IpAddr) -> Duration {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        match m.get(&ip) {
            Some((n, at)) if at.elapsed() < FORGET_AFTER => {
                Duration::from_millis(100u64 << (*n).min(10)).min(MAX_DELAY)
            }
            Some(_) => {
                m.remove(&ip);
                Duration::ZERO
            }
            None => Duration::ZERO,
        }
    }

    /// Record a failure from `ip`.
    pub fn failed(&self, ip: IpAddr) {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        if m.len() > 100_000 {
            m.retain(|_, (_, at)| at.elapsed() < FORGET_AFTER);
        }
        let e = m.entry(ip).or_insert((0, Instant::now()));
        e.0 = e.0.saturating_add(1);
        e.1 = Instant::now();
    }

    /// Record a success from `ip`.
    pub fn succeeded(&self, ip: IpAddr) {
        let mut m = self.failures.lock().unwrap_or_else(|e| e.into_inner());
        m.remove(&ip);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn throttle_doubles_and_forgets_on_success() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(t.delay(ip), Duration::ZERO);
        t.failed(ip);
        let d1 = t.delay(ip);
        t.failed(ip);
        assert_eq!(t.delay(ip), d1 * 2);
        for _ in 0..20 {
            t.failed(ip);
        }
        assert_eq!(t.delay(ip), MAX_DELAY);
        t.succeeded(ip);
        assert_eq!(t.delay(ip), Duration::ZERO);
    }

    #[test]
    fn enrollment_is_one_time_and_keys_authenticate() {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path());
        data::init(&d, &["localhost".into()]).unwrap();
        let token = data::add_client(&d, "laptop", false).unwrap();
        let reg = Registry::open(&d).unwrap();
        assert_eq!(reg.enroll("laptop", "wrong").unwrap(), None);
        let key = reg.enroll("laptop", &token).unwrap().unwrap();
        assert_eq!(reg.enroll("laptop", &token).unwrap(), None, "one time");
        assert_eq!(
            reg.authenticate(&format!("laptop:{key}")).as_deref(),
            Some("laptop")
        );
        // Cached path, then a wrong key on the cached path.
        assert!(reg.authenticate(&format!("laptop:{key}")).is_some());
        assert!(reg.authenticate("laptop:00").is_none());
        assert!(reg.authenticate("nobody:00").is_none());
        assert!(reg.authenticate("no colon").is_none());
        // Removal is seen without a restart (the registry file changed).
        std::thread::sleep(Duration::from_millis(20));
        data::remove_client(&d, "laptop").unwrap();
        assert!(reg.authenticate(&format!("laptop:{key}")).is_none());
    }
}
