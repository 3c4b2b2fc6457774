//! Is protection working? The agent looks every few seconds at what would
//! make it stop or degrade, keeps the answer for `status`, and tells the
//! person at the desk when something goes wrong and when it is right again:
//! a backup that fails silently for a month is the worst thing it can do.
//!
//! What is checked:
//! - the journal cannot be written (its last commit failed);
//! - uploads have failed for longer than `upload_stalled_after` (the
//!   repository or the server refuses them, or cannot be reached): the
//!   oldest version waiting in the journal is older than that and the last
//!   upload attempt failed;
//! - a protected folder vanished;
//! - the kernel's limit on watches was reached (until the agent restarts).
//!
//! Guarantees:
//! - A problem is told when it first appears, and again only as a reminder
//!   after `remind_every` while it lasts; never more than once an hour per
//!   problem, however it flaps ([`RATE`]).
//! - A problem that was told is followed by one "works again" message when
//!   it clears.
//! - `status` lists every problem that is active now, told or not.
//! - Telling fails softly: a desktop without a notification service gets
//!   one line in the log, and the checks go on.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use rewind_core::Timestamp;
use serde::Serialize;

/// At most one message per problem in this time.
pub const RATE: Duration = Duration::from_secs(3600);

/// How often the agent looks: a problem is noticed within this (plus the
/// time the problem itself takes to show, such as `upload_stalled_after`).
/// Five seconds costs one stat per root and two journal reads, far under
/// the agent's idle budget.
pub const CHECK_EVERY: Duration = Duration::from_secs(5);

/// What tells the person at the desk.
pub trait Notifier: Send + Sync {
    /// Show one message.
    fn notify(&self, summary: &str, body: &str) -> Result<(), String>;
}

/// A desktop notification: D-Bus `org.freedesktop.Notifications` on Linux,
/// the notification centre on macOS.
pub struct Desktop;

impl Notifier for Desktop {
    fn notify(&self, summary: &str, body: &str) -> Result<(), String> {
        notify_rust::Notification::new()
            .appname("rewind")
            .summary(summary)
            .body(body)
            .show()
            .map(|_| ())
            .map_err(|e| e.to_string())
    }
}

/// A command of the config (`[notify] command`), run with the summary and
/// the body as its two last arguments.
pub struct Command(pub Vec<String>);

impl Notifier for Command {
    fn notify(&self, summary: &str, body: &str) -> Result<(), String> {
        let (program, args) = self
            .0
            .split_first()
            .ok_or_else(|| "[notify] command is empty".to_string())?;
        let st = std::process::Command::new(program)
            .args(args)
            .args([summary, body])
            .stdin(std::process::Stdio::null())
            .status()
            .map_err(|e| format!("{program}: {e}"))?;
        if st.success() {
            Ok(())
        } else {
            Err(format!("{program} exited with {st}"))
        }
    }
}

/// How the agent watches its own health (`[notify]` in the config).
#[derive(Clone, Debug)]
pub struct HealthSettings {
    /// Tell the desktop (unless `command` is set).
    pub desktop: bool,
    /// Run this instead of a desktop notification.
    pub command: Option<Vec<String>>,
    /// Uploads failing this long is a problem.
    pub upload_stalled_after: Duration,
    /// Remind of a problem that lasts this long.
    pub remind_every: Duration,
}

impl Default for HealthSettings {
    fn default() -> Self {
        HealthSettings {
            desktop: true,
            command: None,
            // A laptop away from its server for an hour is normal; a day
            // without a backup is not, and an hour leaves time to act.
            upload_stalled_after: Duration::from_secs(3600),
            remind_every: Duration::from_secs(24 * 3600),
        }
    }
}

impl HealthSettings {
    /// The notifier these settings ask for.
    pub fn notifier(&self) -> Option<Box<dyn Notifier>> {
        match (&self.command, self.desktop) {
            (Some(c), _) => Some(Box::new(Command(c.clone()))),
            (None, true) => Some(Box::new(Desktop)),
            (None, false) => None,
        }
    }
}

/// One thing wrong now: a stable key (one per problem) and what to say.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    /// Names the problem across checks (`journal`, `upload`, `root:PATH`,
    /// `watch-limit`).
    pub key: String,
    /// One line for people.
    pub message: String,
}

/// An active problem, as `status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct ActiveProblem {
    /// Which problem.
    pub key: String,
    /// What is wrong.
    pub message: String,
    /// Since when (RFC 3339).
    pub since: String,
}

struct Active {
    message: String,
    since: Timestamp,
    /// When the user was told about it (`None`: not yet, rate-limited).
    told: Option<Instant>,
}

/// The agent's view of its own health (see the module doc).
pub struct Health {
    notifier: Option<Box<dyn Notifier>>,
    remind_every: Duration,
    active: Mutex<BTreeMap<String, Active>>,
    /// When each problem was last told, kept after it clears (the rate).
    last_told: Mutex<BTreeMap<String, Instant>>,
    /// The inotify limit message, once reached.
    watch_limit: Mutex<Option<String>>,
    /// A notifier failure was logged.
    failure_logged: Mutex<bool>,
}

impl Health {
    /// A health monitor that tells through `notifier` (none: `status` only).
    pub fn new(notifier: Option<Box<dyn Notifier>>, remind_every: Duration) -> Health {
        Health {
            notifier,
            remind_every,
            active: Mutex::new(BTreeMap::new()),
            last_told: Mutex::new(BTreeMap::new()),
            watch_limit: Mutex::new(None),
            failure_logged: Mutex::new(false),
        }
    }

    /// The watcher hit the kernel's limit: a problem until the agent
    /// restarts.
    pub fn watch_limit_reached(&self, message: &str) {
        *self.watch_limit.lock().unwrap_or_else(|p| p.into_inner()) = Some(message.to_string());
    }

    /// What is wrong now, from what the agent knows.
    pub fn findings(&self, facts: &Facts<'_>) -> Vec<Finding> {
        let mut out = Vec::new();
        if let Some(e) = facts.journal_error {
            out.push(Finding {
                key: "journal".into(),
                message: format!("rewind cannot write its journal: {e}; changes are not protected"),
            });
        }
        if let (Some(e), Some(age)) = (facts.upload_error, facts.oldest_waiting_age)
            && age >= facts.upload_stalled_after
        {
            out.push(Finding {
                key: "upload".into(),
                message: format!(
                    "backups to {} have failed for {}: {e}; changes wait in the journal",
                    facts.repository,
                    human(age)
                ),
            });
        }
        for root in facts.roots {
            if std::fs::symlink_metadata(root).is_err() {
                out.push(Finding {
                    key: format!("root:{}", root.display()),
                    message: format!(
                        "protected folder {} has vanished; it is protected again once it is back",
                        root.display()
                    ),
                });
            }
        }
        if let Some(m) = &*self.watch_limit.lock().unwrap_or_else(|p| p.into_inner()) {
            out.push(Finding {
                key: "watch-limit".into(),
                message: m.clone(),
            });
        }
        out
    }

    /// Take what is wrong now: tell about new problems and reminders, and
    /// about problems that cleared.
    pub fn update(&self, now: Instant, wall: Timestamp, found: Vec<Finding>) {
        let mut tell: Vec<(String, String, String)> = Vec::new();
        {
            let mut active = self.active.lock().unwrap_or_else(|p| p.into_inner());
            let mut last_told = self.last_told.lock().unwrap_or_else(|p| p.into_inner());
            let keys: Vec<String> = found.iter().map(|f| f.key.clone()).collect();
            // Cleared: say so when the user was told about it.
            let cleared: Vec<String> = active
                .keys()
                .filter(|k| !keys.contains(k))
                .cloned()
                .collect();
            for k in cleared {
                let a = active.remove(&k).expect("listed above");
                tracing::info!("works again: {}", a.message);
                if a.told.is_some() {
                    tell.push((
                        k,
                        "rewind: protection works again".into(),
                        format!("Resolved: {}", a.message),
                    ));
                }
            }
            for f in found {
                let entry = active.entry(f.key.clone()).or_insert_with(|| {
                    tracing::warn!("{}", f.message);
                    Active {
                        message: f.message.clone(),
                        since: wall,
                        told: None,
                    }
                });
                entry.message = f.message.clone();
                let due = match entry.told {
                    None => true,
                    Some(t) => now.duration_since(t) >= self.remind_every,
                };
                let allowed = last_told
                    .get(&f.key)
                    .is_none_or(|t| now.duration_since(*t) >= RATE);
                if due && allowed {
                    entry.told = Some(now);
                    last_told.insert(f.key.clone(), now);
                    tell.push((
                        f.key,
                        "rewind: protection needs attention".into(),
                        f.message,
                    ));
                }
            }
        }
        if let Some(n) = &self.notifier {
            for (_key, summary, body) in tell {
                if let Err(e) = n.notify(&summary, &body) {
                    let mut logged = self
                        .failure_logged
                        .lock()
                        .unwrap_or_else(|p| p.into_inner());
                    if !*logged {
                        *logged = true;
                        tracing::info!(
                            "cannot show a desktop notification ({e}); problems are in the log and in `rewind status`"
                        );
                    }
                }
            }
        }
    }

    /// Every active problem, oldest first.
    pub fn problems(&self) -> Vec<ActiveProblem> {
        let active = self.active.lock().unwrap_or_else(|p| p.into_inner());
        let mut v: Vec<ActiveProblem> = active
            .iter()
            .map(|(k, a)| ActiveProblem {
                key: k.clone(),
                message: a.message.clone(),
                since: a.since.to_string(),
            })
            .collect();
        v.sort_by(|a, b| a.since.cmp(&b.since));
        v
    }
}

/// What a check looks at.
pub struct Facts<'a> {
    /// The journal's last commit error.
    pub journal_error: Option<&'a str>,
    /// The uploader's last error.
    pub upload_error: Option<&'a str>,
    /// How long the oldest version not yet uploaded has waited.
    pub oldest_waiting_age: Option<Duration>,
    /// See [`HealthSettings::upload_stalled_after`].
    pub upload_stalled_after: Duration,
    /// The repository's directory or URL, for messages.
    pub repository: &'a str,
    /// The protected folders.
    pub roots: &'a [PathBuf],
}

fn human(d: Duration) -> String {
    let s = d.as_secs();
    match s {
        0..120 => format!("{s} s"),
        120..7200 => format!("{} min", s / 60),
        7200..172_800 => format!("{} h", s / 3600),
        _ => format!("{} days", s / 86400),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Records what it is asked to show.
    #[derive(Default)]
    struct Recorder(std::sync::Arc<Mutex<Vec<(String, String)>>>);

    impl Notifier for Recorder {
        fn notify(&self, summary: &str, body: &str) -> Result<(), String> {
            self.0.lock().unwrap().push((summary.into(), body.into()));
            Ok(())
        }
    }

    fn finding(key: &str) -> Finding {
        Finding {
            key: key.into(),
            message: format!("{key} is wrong"),
        }
    }

    #[test]
    fn one_message_per_problem_per_hour_a_reminder_and_a_recovery() {
        let told = std::sync::Arc::new(Mutex::new(Vec::new()));
        let h = Health::new(
            Some(Box::new(Recorder(told.clone()))),
            Duration::from_secs(24 * 3600),
        );
        let t0 = Instant::now();
        let at = |s: u64| t0 + Duration::from_secs(s);
        let wall = Timestamp::now();
        // Appears: told once, however often it is seen.
        for s in [0, 5, 10, 600] {
            h.update(at(s), wall, vec![finding("journal")]);
        }
        assert_eq!(told.lock().unwrap().len(), 1);
        assert_eq!(h.problems().len(), 1);
        // Clears: one recovery message.
        h.update(at(700), wall, vec![]);
        assert_eq!(told.lock().unwrap().len(), 2);
        assert!(told.lock().unwrap()[1].1.starts_with("Resolved"));
        assert!(h.problems().is_empty());
        // Flaps within the hour: not told again, so no recovery either.
        h.update(at(800), wall, vec![finding("journal")]);
        h.update(at(900), wall, vec![]);
        assert_eq!(told.lock().unwrap().len(), 2);
        // An hour after it was told, it may be told again; a second problem
        // is told on its own.
        h.update(at(3700), wall, vec![finding("journal"), finding("upload")]);
        assert_eq!(told.lock().unwrap().len(), 4);
        // Lasting a day: one reminder.
        for s in (3700..3700 + 24 * 3600).step_by(3600) {
            h.update(at(s), wall, vec![finding("journal"), finding("upload")]);
        }
        assert_eq!(told.lock().unwrap().len(), 4);
        h.update(
            at(3700 + 24 * 3600),
            wall,
            vec![finding("journal"), finding("upload")],
        );
        assert_eq!(told.lock().unwrap().len(), 6, "{:?}", told.lock().unwrap());
    }

    #[test]
    fn findings_name_each_problem() {
        let h = Health::new(None, Duration::from_secs(86400));
        let gone = PathBuf::from("/nonexistent/rewind/root");
        let roots = [gone.clone(), PathBuf::from("/")];
        let facts = Facts {
            journal_error: Some("disk full"),
            upload_error: Some("connection refused"),
            oldest_waiting_age: Some(Duration::from_secs(7200)),
            upload_stalled_after: Duration::from_secs(3600),
            repository: "https://backup:8443",
            roots: &roots,
        };
        h.watch_limit_reached("inotify watch limit reached");
        let keys: Vec<String> = h.findings(&facts).into_iter().map(|f| f.key).collect();
        assert_eq!(
            keys,
            [
                "journal",
                "upload",
                &format!("root:{}", gone.display()),
                "watch-limit"
            ]
        );
        // Uploads failing for less than the threshold are not a problem yet.
        let young = Facts {
            oldest_waiting_age: Some(Duration::from_secs(60)),
            journal_error: None,
            ..facts
        };
        let h = Health::new(None, Duration::from_secs(86400));
        let keys: Vec<String> = h.findings(&young).into_iter().map(|f| f.key).collect();
        assert_eq!(keys, [format!("root:{}", gone.display())]);
    }

    #[test]
    fn a_notifier_that_fails_does_not_stop_the_checks() {
        let h = Health::new(
            Some(Box::new(Command(vec!["/nonexistent/notifier".into()]))),
            Duration::from_secs(86400),
        );
        h.update(Instant::now(), Timestamp::now(), vec![finding("journal")]);
        assert_eq!(h.problems().len(), 1);
    }
}
