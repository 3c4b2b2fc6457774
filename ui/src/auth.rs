//! Who may use the UI: one-time login tokens, sessions, and the checks
//! every request passes (see the crate doc for the flow).
//!
//! Secrets are 32 random bytes from the thread's CSPRNG (ChaCha, seeded by
//! the OS), shown as 64 hex digits. Only their blake3 hashes are kept, and
//! a presented secret is hashed and compared with `blake3::Hash`'s
//! constant-time equality, so neither the comparison's time nor a memory
//! dump of the agent gives a secret away.

use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a login token from `rewind ui` stays good: the browser opens
/// it within seconds (`xdg-open`), a person copying it from a terminal
/// within a minute or two.
pub(crate) const TOKEN_LIFETIME: Duration = Duration::from_secs(120);

/// A session unused this long is forgotten: a working day, so an open tab
/// keeps working and a forgotten one does not stay a key for ever.
pub(crate) const SESSION_IDLE: Duration = Duration::from_secs(12 * 3600);

/// At most this many sessions (and as many login tokens): each browser or
/// tab that logs in makes one; the oldest is dropped first.
const MAX_SESSIONS: usize = 32;

/// A download ticket is good once, for this long: the browser follows the
/// link it was made for at once.
pub(crate) const TICKET_LIFETIME: Duration = Duration::from_secs(60);

/// The name of the session cookie.
pub(crate) const COOKIE: &str = "rewind_session";

/// The header that carries the session's request key.
pub(crate) const KEY_HEADER: &str = "x-rewind-key";

/// A new secret: 32 random bytes as hex.
pub(crate) fn secret() -> String {
    hex::encode(rand::random::<[u8; 32]>())
}

fn hash(s: &str) -> blake3::Hash {
    blake3::hash(s.as_bytes())
}

struct Session {
    cookie: blake3::Hash,
    key: blake3::Hash,
    used: Instant,
}

/// A one-time secret with an expiry and what it is good for.
struct OneTime<T> {
    secret: blake3::Hash,
    until: Instant,
    what: T,
}

#[derive(Default)]
struct State {
    tokens: Vec<OneTime<()>>,
    sessions: Vec<Session>,
    tickets: Vec<OneTime<(Vec<u8>, u64)>>,
}

/// The secrets of one UI server.
#[derive(Default)]
pub(crate) struct Auth {
    state: Mutex<State>,
}

/// A new session's two secrets: the cookie (HttpOnly, never seen by
/// scripts) and the request key (kept by the page in its origin's storage,
/// sent in [`KEY_HEADER`]).
pub(crate) struct NewSession {
    pub cookie: String,
    pub key: String,
}

/// A new one-time secret for `what`, good for `lifetime`, in `list` (the
/// oldest dropped when it is full).
fn issue<T>(list: &mut Vec<OneTime<T>>, what: T, lifetime: Duration) -> String {
    let t = secret();
    let now = Instant::now();
    list.retain(|x| x.until > now);
    if list.len() >= MAX_SESSIONS {
        list.remove(0);
    }
    list.push(OneTime {
        secret: hash(&t),
        until: now + lifetime,
        what,
    });
    t
}

fn take<T>(list: &mut Vec<OneTime<T>>, presented: &str, now: Instant) -> Option<T> {
    list.retain(|t| t.until > now);
    let h = hash(presented);
    let i = list.iter().position(|t| t.secret == h)?;
    Some(list.swap_remove(i).what)
}

impl Auth {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// A new one-time login token (for `rewind ui`).
    pub(crate) fn issue_token(&self) -> String {
        issue(&mut self.state().tokens, (), TOKEN_LIFETIME)
    }

    /// Exchange a login token for a session; `None` when the token is
    /// unknown, used or expired.
    pub(crate) fn log_in(&self, token: &str) -> Option<NewSession> {
        let now = Instant::now();
        let mut st = self.state();
        take(&mut st.tokens, token, now)?;
        st.sessions
            .retain(|s| now.duration_since(s.used) < SESSION_IDLE);
        if st.sessions.len() >= MAX_SESSIONS {
            let oldest = (0..st.sessions.len()).min_by_key(|&i| st.sessions[i].used)?;
            st.sessions.swap_remove(oldest);
        }
        let s = NewSession {
            cookie: secret(),
            key: secret(),
        };
        st.sessions.push(Session {
            cookie: hash(&s.cookie),
            key: hash(&s.key),
            used: now,
        });
        Some(s)
    }

    /// Whether `cookie` is a live session's, and `key` (when required) its
    /// request key. Marks the session used.
    pub(crate) fn check(&self, cookie: &str, key: Option<&str>) -> bool {
        let now = Instant::now();
        let mut st = self.state();
        st.sessions
            .retain(|s| now.duration_since(s.used) < SESSION_IDLE);
        let c = hash(cookie);
        let Some(s) = st.sessions.iter_mut().find(|s| s.cookie == c) else {
            return false;
        };
        if let Some(k) = key
            && hash(k) != s.key
        {
            return false;
        }
        s.used = now;
        true
    }

    /// A one-time ticket to download version `seq` of `path` by a plain
    /// link (which cannot carry the request key).
    pub(crate) fn issue_ticket(&self, path: Vec<u8>, seq: u64) -> String {
        issue(&mut self.state().tickets, (path, seq), TICKET_LIFETIME)
    }

    /// The path and seq a ticket was issued for, once.
    pub(crate) fn redeem_ticket(&self, ticket: &str) -> Option<(Vec<u8>, u64)> {
        take(&mut self.state().tickets, ticket, Instant::now())
    }
}

/// The value of cookie `name` in a `Cookie` header.
pub(crate) fn cookie_value<'a>(header: &'a str, name: &str) -> Option<&'a str> {
    header.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then_some(v)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_login_token_works_once() {
        let a = Auth::default();
        let t = a.issue_token();
        assert_eq!(t.len(), 64);
        let s = a.log_in(&t).expect("first use");
        assert!(a.log_in(&t).is_none(), "second use");
        assert!(a.check(&s.cookie, Some(&s.key)));
        assert!(a.check(&s.cookie, None));
        assert!(
            !a.check(&s.cookie, Some(&s.cookie)),
            "the cookie is not the key"
        );
        assert!(!a.check(&s.key, Some(&s.key)), "the key is not the cookie");
        assert!(!a.check("", None));
    }

    #[test]
    fn a_ticket_works_once_for_what_it_names() {
        let a = Auth::default();
        let t = a.issue_ticket(b"/x".to_vec(), 7);
        assert_eq!(a.redeem_ticket(&t), Some((b"/x".to_vec(), 7)));
        assert_eq!(a.redeem_ticket(&t), None);
    }

    #[test]
    fn cookies_are_found_by_exact_name() {
        let h = "a=1; rewind_session_x=2; rewind_session=3";
        assert_eq!(cookie_value(h, COOKIE), Some("3"));
        assert_eq!(cookie_value("a=1", COOKIE), None);
    }
}
