//! Secrets: making them, storing them hashed, checking them.
//!
//! Enrollment tokens, client keys and the admin secret are 256-bit random
//! values shown once; only their argon2id hashes are stored. Checking a
//! secret against its hash, and comparing two digests, take the same time
//! whatever the bytes; a damaged hash never matches.
//!
//! argon2 is the one thing a stranger can make the server do that costs
//! real memory and CPU (19 MiB and ~20 ms each), so the server runs it only
//! in a [`Slot`] of its [`Hashers`]: a fixed number of slots, each with its
//! argon2 memory allocated once and reused. A request that finds no free
//! slot is refused at once (the caller answers 503); nothing queues for one.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use anyhow::{Result, anyhow};
use argon2::password_hash::{Output, ParamsString, PasswordHash, SaltString};
use argon2::{Algorithm, Argon2, Block, Params, Version};

/// A fresh secret: 32 random bytes as hex.
pub fn new_secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

/// The largest argon2 memory a stored hash may ask for (64 MiB; ours ask
/// for argon2's default, 19 MiB). A hash that asks for more is treated as
/// damaged rather than allowed to grow a slot's buffer without bound.
const MAX_BLOCKS: usize = 64 * 1024;

/// A fixed set of argon2 workspaces.
pub struct Hashers {
    /// The free slots' memory (`None`: not allocated yet).
    free: Mutex<Vec<Option<Box<[Block]>>>>,
    /// argon2 computations run, for /metrics and the tests.
    runs: AtomicU64,
}

/// One argon2 workspace, taken from [`Hashers`] and given back on drop.
pub struct Slot {
    pool: Arc<Hashers>,
    mem: Option<Box<[Block]>>,
}

impl Hashers {
    /// `n` slots (at least one); their memory is allocated at first use.
    pub fn new(n: usize) -> Arc<Hashers> {
        Arc::new(Hashers {
            free: Mutex::new((0..n.max(1)).map(|_| None).collect()),
            runs: AtomicU64::new(0),
        })
    }

    /// A free slot, or `None` at once when all are in use.
    pub fn try_take(self: &Arc<Self>) -> Option<Slot> {
        let mem = self.free.lock().unwrap_or_else(|e| e.into_inner()).pop()?;
        Some(Slot {
            pool: self.clone(),
            mem,
        })
    }

    /// argon2 computations run so far.
    pub fn runs(&self) -> u64 {
        self.runs.load(Ordering::Relaxed)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mem = self.mem.take();
        self.pool
            .free
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(mem);
    }
}

impl Slot {
    /// The slot's memory, at least `blocks` long.
    fn memory(&mut self, blocks: usize) -> &mut [Block] {
        if self.mem.as_ref().is_none_or(|m| m.len() < blocks) {
            self.mem = Some(vec![Block::default(); blocks].into_boxed_slice());
        }
        &mut self.mem.as_mut().expect("just set")[..blocks]
    }

    fn run(
        &mut self,
        argon: &Argon2<'_>,
        params: &Params,
        secret: &[u8],
        salt: &[u8],
        out: &mut [u8],
    ) -> Result<()> {
        self.pool.runs.fetch_add(1, Ordering::Relaxed);
        let mem = self.memory(params.block_count());
        argon
            .hash_password_into_with_memory(secret, salt, out, mem)
            .map_err(|e| anyhow!("argon2: {e}"))
    }

    /// The argon2id hash of a secret (argon2's default parameters), as a
    /// PHC string.
    pub fn hash(&mut self, secret: &str) -> Result<String> {
        let params = Params::default();
        let argon = Argon2::new(Algorithm::Argon2id, Version::V0x13, params.clone());
        let salt_bytes = rand::random::<[u8; 16]>();
        let mut out = [0u8; Params::DEFAULT_OUTPUT_LEN];
        self.run(&argon, &params, secret.as_bytes(), &salt_bytes, &mut out)?;
        let salt = SaltString::encode_b64(&salt_bytes).map_err(|e| anyhow!("argon2 salt: {e}"))?;
        let phc = PasswordHash {
            algorithm: Algorithm::Argon2id.ident(),
            version: Some(Version::V0x13.into()),
            params: ParamsString::try_from(&params).map_err(|e| anyhow!("argon2: {e}"))?,
            salt: Some(salt.as_salt()),
            hash: Some(Output::new(&out).map_err(|e| anyhow!("argon2: {e}"))?),
        };
        Ok(phc.to_string())
    }

    /// True when `secret` matches the stored hash. The work is the same
    /// whatever the secret; a damaged hash never matches (and costs
    /// nothing, which tells nothing: the hashes are the server's own).
    pub fn verify(&mut self, secret: &str, hash: &str) -> bool {
        let Some((argon, params, salt, expected)) = parse(hash) else {
            tracing::error!("a stored argon2 hash is damaged; it matches nothing");
            return false;
        };
        let mut out = vec![0u8; expected.len()];
        let argon = Argon2::new(argon.0, argon.1, params.clone());
        if self
            .run(&argon, &params, secret.as_bytes(), &salt, &mut out)
            .is_err()
        {
            return false;
        }
        out.iter()
            .zip(&expected)
            .fold(0u8, |acc, (x, y)| acc | (x ^ y))
            == 0
    }
}

/// What a PHC string holds: algorithm and version, parameters, salt and
/// expected output; `None` when damaged or asking for too much memory.
#[allow(clippy::type_complexity)]
fn parse(hash: &str) -> Option<((Algorithm, Version), Params, Vec<u8>, Vec<u8>)> {
    let h = PasswordHash::new(hash).ok()?;
    let alg = Algorithm::try_from(h.algorithm).ok()?;
    let version = Version::try_from(h.version.unwrap_or(0x13)).ok()?;
    let params = Params::try_from(&h).ok()?;
    if params.block_count() > MAX_BLOCKS {
        return None;
    }
    let mut salt_buf = [0u8; 64];
    let salt = h.salt?.decode_b64(&mut salt_buf).ok()?.to_vec();
    let expected = h.hash?.as_bytes().to_vec();
    Some(((alg, version), params, salt, expected))
}

/// The argon2id hash of a secret, outside the server (`init`, `client
/// add`): a workspace of its own, freed afterwards.
pub fn hash_secret(secret: &str) -> Result<String> {
    Hashers::new(1)
        .try_take()
        .expect("a new pool has a slot")
        .hash(secret)
}

/// [`Slot::verify`] outside the server.
#[cfg(test)]
pub fn verify_secret(secret: &str, hash: &str) -> bool {
    Hashers::new(1)
        .try_take()
        .expect("a new pool has a slot")
        .verify(secret, hash)
}

/// Constant-time equality of two digests.
pub(crate) fn same(a: &[u8; 32], b: &[u8; 32]) -> bool {
    a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

#[cfg(test)]
mod tests {
    use super::*;
    use argon2::password_hash::{PasswordHasher, PasswordVerifier};

    #[test]
    fn hashes_verify_only_their_secret() {
        let s = new_secret();
        assert_eq!(s.len(), 64);
        let h = hash_secret(&s).unwrap();
        assert!(h.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{h}");
        assert!(verify_secret(&s, &h));
        assert!(!verify_secret(&new_secret(), &h));
        assert!(!verify_secret(&s, "not a hash"));
    }

    #[test]
    fn hashes_are_argon2s_own_format_both_ways() {
        // Registries written before the slots (by argon2's own hasher)
        // keep working, and argon2 reads what the slots write.
        let s = new_secret();
        let salt = SaltString::encode_b64(&[7u8; 16]).unwrap();
        let theirs = Argon2::default()
            .hash_password(s.as_bytes(), &salt)
            .unwrap()
            .to_string();
        assert!(verify_secret(&s, &theirs));
        let ours = hash_secret(&s).unwrap();
        let parsed = PasswordHash::new(&ours).unwrap();
        assert!(
            Argon2::default()
                .verify_password(s.as_bytes(), &parsed)
                .is_ok()
        );
    }

    #[test]
    fn slots_are_few_reused_and_never_waited_for() {
        let pool = Hashers::new(2);
        let mut a = pool.try_take().unwrap();
        let b = pool.try_take().unwrap();
        assert!(
            pool.try_take().is_none(),
            "a third taker is refused at once"
        );
        let h = a.hash("x").unwrap();
        let at = a.mem.as_ref().unwrap().as_ptr();
        drop(b);
        drop(a);
        // The memory went back to the pool and is reused, not allocated
        // again: whichever slot comes back holding it keeps its address.
        let mut seen = Vec::new();
        let mut c = pool.try_take().unwrap();
        let mut d = pool.try_take().unwrap();
        assert!(c.verify("x", &h) && !d.verify("y", &h));
        seen.push(c.mem.as_ref().unwrap().as_ptr());
        seen.push(d.mem.as_ref().unwrap().as_ptr());
        assert!(seen.contains(&at));
        assert_eq!(pool.runs(), 3);
        // A hash asking for absurd memory is damaged, not obeyed.
        let greedy = h.replace("m=19456", "m=4000000");
        assert!(!c.verify("x", &greedy));
    }
}
