//! Client authentication, enrollment, and the brake on guessing.
//!
//! A client proves itself with its key, checked against the argon2 hash in
//! the registry ([`crate::secrets`]). A key that has passed argon2 once is
//! remembered in memory by its blake3 hash, compared in constant time, so a
//! busy client does not pay argon2 per request. Everything else costs one
//! argon2 in a slot, the same whatever the name: an unknown, removed or
//! not yet enrolled name is checked against a dummy hash, and a wrong key
//! for a name whose right key is remembered is checked against the stored
//! hash, so the time of a refusal says nothing about which names exist.
//!
//! Every failed attempt from an address (IPv4) or a /64 (IPv6) doubles how
//! long that address is refused before it may try again, 100 ms up to 10 s;
//! the brake is checked before any work. At most [`MAX_TRACKED`] addresses
//! are remembered; past that the one whose last failure is oldest is
//! forgotten.

use std::collections::{HashMap, VecDeque};
use std::net::IpAddr;
use std::sync::Mutex;
use std::time::{Duration, Instant, SystemTime};

use anyhow::Result;

use crate::data::{self, ClientRecord, Clients, DataDir};
use crate::secrets::{Slot, new_secret, same};

/// What tells a changed registry file: it is replaced by rename, so its
/// inode changes with every save.
fn stamp(dir: &DataDir) -> Option<(SystemTime, u64)> {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(dir.clients()).ok()?;
    Some((m.modified().ok()?, m.ino()))
}

/// `NAME:KEY` split in two; `None` without a colon.
pub fn split_credential(credential: &str) -> Option<(&str, &str)> {
    credential.split_once(':')
}

/// The registry as the server sees it: reloaded when `clients.json`
/// changes (an admin added or removed a client while the server runs).
pub struct Registry {
    dir: DataDir,
    inner: Mutex<Loaded>,
    /// A hash no secret matches, with the stored hashes' parameters:
    /// checking against it costs what checking a real one costs.
    dummy: String,
}

/// A key that passed argon2, and the hash it passed against.
struct Verified {
    digest: [u8; 32],
    key_hash: String,
}

struct Loaded {
    mtime: Option<(SystemTime, u64)>,
    clients: Clients,
    /// name → the key that passed argon2 against the current registry.
    verified: HashMap<String, Verified>,
}

/// What an enrollment attempt came to.
#[derive(Debug, PartialEq, Eq)]
pub enum Enrollment {
    /// Enrolled: the new client key.
    Key(String),
    /// Unknown name or wrong token (which of the two is not said).
    Refused,
    /// The right token, used before (at this time).
    Used(String),
    /// The right token, expired (at this time).
    Expired(String),
}

impl Registry {
    /// Load the registry of `dir`; `slot` makes the dummy hash.
    pub fn open(dir: &DataDir, slot: &mut Slot) -> Result<Registry> {
        let clients = data::load_clients(dir)?;
        let mtime = stamp(dir);
        Ok(Registry {
            dir: dir.clone(),
            inner: Mutex::new(Loaded {
                mtime,
                clients,
                verified: HashMap::new(),
            }),
            dummy: slot.hash(&new_secret())?,
        })
    }

    /// The registry, reloaded if the file changed. Remembered keys stay
    /// remembered unless their client's key hash changed (removed, or
    /// enrolled again): one client's enrollment does not cost every other
    /// client an argon2.
    fn lock(&self) -> std::sync::MutexGuard<'_, Loaded> {
        let mut g = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        let now = stamp(&self.dir);
        if now != g.mtime {
            match data::load_clients(&self.dir) {
                Ok(c) => {
                    g.verified.retain(|name, v| {
                        c.get(name).is_some_and(|r| {
                            r.removed.is_none() && r.key_hash.as_deref() == Some(&v.key_hash)
                        })
                    });
                    g.clients = c;
                    g.mtime = now;
                }
                Err(e) => tracing::error!("client registry not reloaded: {e:#}"),
            }
        }
        g
    }

    /// True when `key` is the key of `name` that passed argon2 before: no
    /// argon2 needed. False says nothing (a wrong key, or one not checked
    /// yet).
    pub fn cached(&self, name: &str, key: &str) -> bool {
        let digest = *blake3::hash(key.as_bytes()).as_bytes();
        let g = self.lock();
        g.verified
            .get(name)
            .is_some_and(|v| same(&v.digest, &digest))
    }

    /// Check `key` for `name` with one argon2 in `slot`, whatever the name
    /// (call from a blocking thread). A key that passes is remembered.
    pub fn authenticate(&self, slot: &mut Slot, name: &str, key: &str) -> bool {
        let hash = {
            let g = self.lock();
            g.clients
                .get(name)
                .filter(|r| r.removed.is_none())
                .and_then(|r| r.key_hash.clone())
        };
        let Some(hash) = hash else {
            slot.verify(key, &self.dummy);
            return false;
        };
        if !slot.verify(key, &hash) {
            return false;
        }
        let mut g = self.lock();
        // Still the same key hash after the slow check?
        if g.clients.get(name).and_then(|r| r.key_hash.as_deref()) != Some(hash.as_str()) {
            return false;
        }
        g.verified.insert(
            name.to_string(),
            Verified {
                digest: *blake3::hash(key.as_bytes()).as_bytes(),
                key_hash: hash,
            },
        );
        true
    }

    /// Trade a one-time enrollment token for a new client key. The name
    /// and the token are checked first (one argon2, against a dummy hash
    /// for an unknown name); only a right, unused, unexpired token costs a
    /// second argon2 (the new key's hash) and a write of the registry.
    pub fn enroll(&self, slot: &mut Slot, name: &str, token: &str) -> Result<Enrollment> {
        let pending: Option<ClientRecord> = {
            let g = self.lock();
            g.clients
                .get(name)
                .filter(|r| r.removed.is_none() && r.token_hash.is_some())
                .cloned()
        };
        let Some(r) = pending else {
            slot.verify(token, &self.dummy);
            return Ok(Enrollment::Refused);
        };
        let token_hash = r.token_hash.clone().expect("filtered");
        if !slot.verify(token, &token_hash) {
            return Ok(Enrollment::Refused);
        }
        if let Some(at) = r.token_used {
            return Ok(Enrollment::Used(at));
        }
        if let Some(at) = r.token_expires.as_deref()
            && data::is_past(at)
        {
            return Ok(Enrollment::Expired(at.to_string()));
        }
        let key = new_secret();
        let key_hash = slot.hash(&key)?;
        let done = data::update_clients(&self.dir, |c| {
            // The same pending token as checked above, still unused (two
            // enrollments with one token: the first wins).
            let Some(r) = c.clients.iter_mut().find(|r| {
                r.name == name
                    && r.removed.is_none()
                    && r.token_used.is_none()
                    && r.token_hash.as_deref() == Some(token_hash.as_str())
            }) else {
                return Ok(false);
            };
            let now = rewind_core::Timestamp::now().to_string();
            r.token_used = Some(now.clone());
            r.key_hash = Some(key_hash);
            r.enrolled = Some(now);
            Ok(true)
        })?;
        Ok(if done {
            Enrollment::Key(key)
        } else {
            Enrollment::Refused
        })
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

/// Who the brake and the connection limit count as one: an IPv4 address,
/// or the /64 of an IPv6 address (one machine usually holds a whole /64
/// and can pick any address in it). An IPv4 address seen through an IPv6
/// socket (`::ffff:a.b.c.d`) is that IPv4 address.
pub fn address_key(ip: IpAddr) -> IpAddr {
    match ip.to_canonical() {
        IpAddr::V6(v6) => {
            let bits = u128::from(v6) & !((1u128 << 64) - 1);
            IpAddr::V6(bits.into())
        }
        v4 => v4,
    }
}

/// Addresses remembered by the brake: at 100 bytes or so each, a few MiB.
/// An attacker with more addresses than this gets each forgotten sooner,
/// but each address still pays a refusal and an argon2 slot per attempt.
pub const MAX_TRACKED: usize = 65_536;

/// Failures are forgotten after this long without a new one.
const FORGET_AFTER: Duration = Duration::from_secs(15 * 60);
/// The first refusal after a failure.
const FIRST_DELAY: Duration = Duration::from_millis(100);
/// The longest.
const MAX_DELAY: Duration = Duration::from_secs(10);

/// Failed attempts per address key ([`address_key`]).
pub struct Throttle {
    inner: Mutex<Failures>,
    capacity: usize,
}

struct Failures {
    /// key → (failures in a row, last failure, its stamp in `order`).
    map: HashMap<IpAddr, (u32, Instant, u64)>,
    /// Keys by last failure, oldest first; an entry whose stamp is not the
    /// key's current one is stale and skipped.
    order: VecDeque<(IpAddr, u64)>,
    next: u64,
}

impl Default for Throttle {
    fn default() -> Throttle {
        Throttle::with_capacity(MAX_TRACKED)
    }
}

impl Throttle {
    /// A brake remembering at most `capacity` addresses.
    pub fn with_capacity(capacity: usize) -> Throttle {
        Throttle {
            inner: Mutex::new(Failures {
                map: HashMap::new(),
                order: VecDeque::new(),
                next: 0,
            }),
            capacity: capacity.max(1),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Failures> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The refusal time after `n` failures in a row.
    fn delay(n: u32) -> Duration {
        (FIRST_DELAY * (1u32 << n.saturating_sub(1).min(10))).min(MAX_DELAY)
    }

    /// How much longer `ip` is refused (`None`: it may try now).
    pub fn refused_for(&self, ip: IpAddr) -> Option<Duration> {
        let key = address_key(ip);
        let mut f = self.lock();
        let (n, at, _) = *f.map.get(&key)?;
        if at.elapsed() >= FORGET_AFTER {
            f.map.remove(&key);
            return None;
        }
        Self::delay(n)
            .checked_sub(at.elapsed())
            .filter(|d| !d.is_zero())
    }

    /// Record a failure from `ip`: O(1), amortised.
    pub fn failed(&self, ip: IpAddr) {
        let key = address_key(ip);
        let mut f = self.lock();
        let stamp = f.next;
        f.next += 1;
        let e = f.map.entry(key).or_insert((0, Instant::now(), stamp));
        *e = (e.0.saturating_add(1), Instant::now(), stamp);
        f.order.push_back((key, stamp));
        while f.map.len() > self.capacity {
            let Some((k, s)) = f.order.pop_front() else {
                break;
            };
            if f.map.get(&k).is_some_and(|e| e.2 == s) {
                f.map.remove(&k);
            }
        }
        // Stale entries (keys that failed again, or were forgiven) are
        // dropped in one pass once they outnumber the live ones: each pass
        // follows at least `capacity` pushes.
        if f.order.len() > 2 * self.capacity {
            let Failures { map, order, .. } = &mut *f;
            order.retain(|(k, s)| map.get(k).is_some_and(|e| e.2 == *s));
        }
    }

    /// Record a success from `ip`: its failures are forgiven.
    pub fn succeeded(&self, ip: IpAddr) {
        self.lock().map.remove(&address_key(ip));
    }

    /// Addresses remembered now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.lock().map.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::secrets::Hashers;

    /// A data directory with client `laptop` added (its token expiring
    /// after `expiry`) and a registry over it.
    struct Fixture {
        _tmp: tempfile::TempDir,
        d: DataDir,
        pool: std::sync::Arc<Hashers>,
        slot: Slot,
        reg: Registry,
        token: String,
    }

    fn fixture(expiry: Duration) -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let d = DataDir::new(tmp.path());
        data::init(&d, &["localhost".into()], None).unwrap();
        let (token, _) = data::add_client(&d, "laptop", false, expiry).unwrap();
        let pool = Hashers::new(1);
        let mut slot = pool.try_take().unwrap();
        let reg = Registry::open(&d, &mut slot).unwrap();
        Fixture {
            _tmp: tmp,
            d,
            pool,
            slot,
            reg,
            token,
        }
    }

    #[test]
    fn throttle_doubles_and_forgets_on_success() {
        let t = Throttle::default();
        let ip: IpAddr = "192.0.2.1".parse().unwrap();
        assert_eq!(t.refused_for(ip), None);
        t.failed(ip);
        let d1 = t.refused_for(ip).unwrap();
        assert!(d1 <= FIRST_DELAY && d1 > FIRST_DELAY / 2, "{d1:?}");
        t.failed(ip);
        assert!(t.refused_for(ip).unwrap() > FIRST_DELAY);
        for _ in 0..20 {
            t.failed(ip);
        }
        assert!(t.refused_for(ip).unwrap() > MAX_DELAY - Duration::from_secs(1));
        assert_eq!(Throttle::delay(30), MAX_DELAY);
        t.succeeded(ip);
        assert_eq!(t.refused_for(ip), None);
        // Another address is not braked.
        t.failed(ip);
        assert_eq!(t.refused_for("192.0.2.2".parse().unwrap()), None);
    }

    #[test]
    fn ipv6_is_braked_by_its_64_and_mapped_ipv4_as_ipv4() {
        let t = Throttle::default();
        t.failed("2001:db8:1:2:aaaa::1".parse().unwrap());
        assert!(
            t.refused_for("2001:db8:1:2:ffff::9".parse().unwrap())
                .is_some()
        );
        assert!(t.refused_for("2001:db8:1:3::1".parse().unwrap()).is_none());
        t.failed("::ffff:192.0.2.7".parse().unwrap());
        assert!(t.refused_for("192.0.2.7".parse().unwrap()).is_some());
    }

    #[test]
    fn the_brake_forgets_the_oldest_when_full() {
        let t = Throttle::with_capacity(100);
        let ip = |i: u32| IpAddr::from(std::net::Ipv4Addr::from(0x0a00_0000 + i));
        for i in 0..100 {
            t.failed(ip(i));
        }
        // Address 0 fails again: now address 1 is the oldest.
        t.failed(ip(0));
        t.failed(ip(100));
        assert_eq!(t.len(), 100);
        assert!(t.refused_for(ip(0)).is_some());
        assert!(t.refused_for(ip(1)).is_none(), "the oldest was forgotten");
        assert!(t.refused_for(ip(100)).is_some());
        // Many repeat failures keep the bookkeeping bounded.
        for i in 0..10_000 {
            t.failed(ip(i % 150));
        }
        assert_eq!(t.len(), 100);
        assert!(t.lock().order.len() <= 2 * 100 + 1);
    }

    #[test]
    fn enrollment_is_one_time_and_keys_authenticate() {
        let Fixture {
            _tmp,
            d,
            mut slot,
            reg,
            token,
            ..
        } = fixture(data::DEFAULT_EXPIRY);
        assert_eq!(
            reg.enroll(&mut slot, "laptop", "wrong").unwrap(),
            Enrollment::Refused
        );
        assert_eq!(
            reg.enroll(&mut slot, "nobody", &token).unwrap(),
            Enrollment::Refused
        );
        let Enrollment::Key(key) = reg.enroll(&mut slot, "laptop", &token).unwrap() else {
            panic!("not enrolled")
        };
        assert!(matches!(
            reg.enroll(&mut slot, "laptop", &token).unwrap(),
            Enrollment::Used(_)
        ));
        assert!(!reg.cached("laptop", &key));
        assert!(reg.authenticate(&mut slot, "laptop", &key));
        assert!(reg.cached("laptop", &key));
        assert!(!reg.cached("laptop", "00"));
        assert!(!reg.authenticate(&mut slot, "laptop", "00"));
        assert!(!reg.authenticate(&mut slot, "nobody", "00"));
        assert_eq!(split_credential("no colon"), None);
        // Removal is seen without a restart (the registry file changed).
        std::thread::sleep(Duration::from_millis(20));
        data::remove_client(&d, "laptop").unwrap();
        assert!(!reg.cached("laptop", &key));
        assert!(!reg.authenticate(&mut slot, "laptop", &key));
    }

    #[test]
    fn unknown_names_cost_one_argon2_like_known_ones() {
        let Fixture {
            _tmp,
            d,
            pool,
            mut slot,
            reg,
            token,
        } = fixture(data::DEFAULT_EXPIRY);
        let Enrollment::Key(key) = reg.enroll(&mut slot, "laptop", &token).unwrap() else {
            panic!("not enrolled")
        };
        assert!(reg.authenticate(&mut slot, "laptop", &key));
        let mut runs = |f: &mut dyn FnMut(&mut Slot)| {
            let before = pool.runs();
            f(&mut slot);
            pool.runs() - before
        };
        // A wrong key for a name whose right key is remembered, a name
        // that does not exist, a name without a colon's worth of key: one
        // argon2 each.
        assert_eq!(
            runs(&mut |s| assert!(!reg.authenticate(s, "laptop", "x"))),
            1
        );
        assert_eq!(
            runs(&mut |s| assert!(!reg.authenticate(s, "ghost", "x"))),
            1
        );
        assert_eq!(runs(&mut |s| assert!(!reg.authenticate(s, "", ""))), 1);
        // Enrollment: a wrong token, an unknown name: one each, and the
        // registry is not written.
        let before = stamp(&d);
        assert_eq!(
            runs(&mut |s| assert_eq!(reg.enroll(s, "laptop", "x").unwrap(), Enrollment::Refused)),
            1
        );
        assert_eq!(
            runs(&mut |s| assert_eq!(reg.enroll(s, "ghost", "x").unwrap(), Enrollment::Refused)),
            1
        );
        assert_eq!(stamp(&d), before, "a failed enrollment writes nothing");
        // The remembered key survives another client's enrollment.
        std::thread::sleep(Duration::from_millis(20));
        let (t2, _) = data::add_client(&d, "desk", false, data::DEFAULT_EXPIRY).unwrap();
        assert!(matches!(
            reg.enroll(&mut slot, "desk", &t2).unwrap(),
            Enrollment::Key(_)
        ));
        assert!(reg.cached("laptop", &key));
    }

    #[test]
    fn an_expired_token_is_refused_and_says_so() {
        let Fixture {
            _tmp,
            d,
            mut slot,
            reg,
            token,
            ..
        } = fixture(Duration::from_millis(1));
        std::thread::sleep(Duration::from_millis(20));
        assert!(matches!(
            reg.enroll(&mut slot, "laptop", &token).unwrap(),
            Enrollment::Expired(_)
        ));
        // A new token for the same name works.
        std::thread::sleep(Duration::from_millis(20));
        let (token, _) = data::add_client(&d, "laptop", false, data::DEFAULT_EXPIRY).unwrap();
        assert!(matches!(
            reg.enroll(&mut slot, "laptop", &token).unwrap(),
            Enrollment::Key(_)
        ));
    }
}
