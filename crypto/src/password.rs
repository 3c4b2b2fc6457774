//! Where a password comes from, as restic users expect: `REWIND_PASSWORD`,
//! else the first line of the file named by `REWIND_PASSWORD_FILE`, else a
//! prompt at the terminal (without echo), else an error that names the
//! two variables. An empty variable counts as unset; an empty password,
//! from any source, is refused.
//!
//! The environment and the terminal are parameters ([`Env`], [`Prompt`]),
//! so tests never touch the process's environment.

use std::ffi::OsString;
use std::fmt;
use std::fs::File;
use std::io::{self, IsTerminal, Read};
use std::path::PathBuf;

use zeroize::Zeroizing;

use crate::CryptoError;

/// The variable holding the password itself.
pub const PASSWORD_VAR: &str = "REWIND_PASSWORD";
/// The variable naming a file whose first line is the password.
pub const PASSWORD_FILE_VAR: &str = "REWIND_PASSWORD_FILE";

/// Reading a password file stops here: a password is a line, and a
/// variable pointing at a large file by mistake should not be read whole.
const MAX_PASSWORD_FILE_BYTES: u64 = 64 * 1024;

/// A password's bytes. Wiped on drop; `Debug` shows no bytes.
pub struct Password(Zeroizing<Vec<u8>>);

impl Password {
    /// A password of these bytes.
    pub fn new(bytes: Vec<u8>) -> Password {
        Password(Zeroizing::new(bytes))
    }

    /// Its bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Password {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Password(..)")
    }
}

/// The environment variables a password may come from.
pub trait Env {
    /// The variable's value, if set.
    fn var_os(&self, name: &str) -> Option<OsString>;
}

/// The process's own environment.
#[derive(Clone, Copy, Debug, Default)]
pub struct ProcessEnv;

impl Env for ProcessEnv {
    fn var_os(&self, name: &str) -> Option<OsString> {
        std::env::var_os(name)
    }
}

/// A place to ask for a password.
pub trait Prompt {
    /// Whether anyone can be asked.
    fn is_terminal(&self) -> bool;
    /// Show `prompt`, read a line without echo.
    fn ask(&self, prompt: &str) -> io::Result<Password>;
}

/// The controlling terminal, when standard input is one (so a command in
/// a pipe or a service fails with the error naming the variables rather
/// than waiting for a tty no one watches).
#[derive(Clone, Copy, Debug, Default)]
pub struct Terminal;

impl Prompt for Terminal {
    fn is_terminal(&self) -> bool {
        io::stdin().is_terminal()
    }

    fn ask(&self, prompt: &str) -> io::Result<Password> {
        let line = Zeroizing::new(rpassword::prompt_password(prompt)?);
        Ok(Password::new(line.as_bytes().to_vec()))
    }
}

/// The password of an existing repository (see the module doc for the
/// order of sources).
pub fn read_password(env: &dyn Env, prompt: &dyn Prompt) -> Result<Password, CryptoError> {
    match from_env(env)? {
        Some(p) => Ok(p),
        None => ask(prompt, "enter password for repository: "),
    }
}

/// A new password (for `init --encrypt` and `key add`): from the same
/// sources, but typed twice at a terminal, and refused unless both match.
pub fn read_new_password(env: &dyn Env, prompt: &dyn Prompt) -> Result<Password, CryptoError> {
    if let Some(p) = from_env(env)? {
        return Ok(p);
    }
    let first = ask(prompt, "enter new password: ")?;
    let again = ask(prompt, "enter the new password again: ")?;
    if first.bytes() != again.bytes() {
        return Err(CryptoError::PasswordsDiffer);
    }
    Ok(first)
}

fn ask(prompt: &dyn Prompt, text: &str) -> Result<Password, CryptoError> {
    if !prompt.is_terminal() {
        return Err(CryptoError::NoPassword);
    }
    let p = prompt.ask(text).map_err(CryptoError::Prompt)?;
    non_empty(p, "the terminal")
}

fn from_env(env: &dyn Env) -> Result<Option<Password>, CryptoError> {
    if let Some(v) = env.var_os(PASSWORD_VAR).filter(|v| !v.is_empty()) {
        return non_empty(Password::new(os_bytes(v)), PASSWORD_VAR).map(Some);
    }
    if let Some(v) = env.var_os(PASSWORD_FILE_VAR).filter(|v| !v.is_empty()) {
        return from_file(PathBuf::from(v)).map(Some);
    }
    Ok(None)
}

/// The first line of `path`, without its line ending (`\n` or `\r\n`).
fn from_file(path: PathBuf) -> Result<Password, CryptoError> {
    let mut text = Zeroizing::new(Vec::new());
    if let Err(source) =
        File::open(&path).and_then(|f| f.take(MAX_PASSWORD_FILE_BYTES).read_to_end(&mut text))
    {
        return Err(CryptoError::PasswordFile { path, source });
    }
    let line = text.split(|&b| b == b'\n').next().unwrap_or_default();
    let line = line.strip_suffix(b"\r").unwrap_or(line);
    non_empty(Password::new(line.to_vec()), PASSWORD_FILE_VAR)
}

fn non_empty(p: Password, from: &'static str) -> Result<Password, CryptoError> {
    if p.bytes().is_empty() {
        return Err(CryptoError::EmptyPassword { from });
    }
    Ok(p)
}

/// A variable's bytes as they are (a password need not be UTF-8 on Unix).
fn os_bytes(v: OsString) -> Vec<u8> {
    #[cfg(unix)]
    {
        use std::os::unix::ffi::OsStringExt;
        v.into_vec()
    }
    #[cfg(not(unix))]
    {
        v.to_string_lossy().into_owned().into_bytes()
    }
}

#[cfg(test)]
mod tests {
    use std::cell::RefCell;
    use std::collections::HashMap;

    use super::*;

    #[derive(Default)]
    struct FakeEnv(HashMap<&'static str, OsString>);

    impl FakeEnv {
        fn with(mut self, k: &'static str, v: impl Into<OsString>) -> FakeEnv {
            self.0.insert(k, v.into());
            self
        }
    }

    impl Env for FakeEnv {
        fn var_os(&self, name: &str) -> Option<OsString> {
            self.0.get(name).cloned()
        }
    }

    /// A terminal that answers from a list, or none at all.
    struct FakeTty {
        tty: bool,
        answers: RefCell<Vec<&'static str>>,
        asked: RefCell<Vec<String>>,
    }

    fn tty(answers: &[&'static str]) -> FakeTty {
        FakeTty {
            tty: true,
            answers: RefCell::new(answers.iter().rev().copied().collect()),
            asked: RefCell::default(),
        }
    }

    fn no_tty() -> FakeTty {
        FakeTty {
            tty: false,
            ..tty(&[])
        }
    }

    impl Prompt for FakeTty {
        fn is_terminal(&self) -> bool {
            self.tty
        }
        fn ask(&self, prompt: &str) -> io::Result<Password> {
            self.asked.borrow_mut().push(prompt.to_string());
            let a = self.answers.borrow_mut().pop();
            a.map(|a| Password::new(a.as_bytes().to_vec()))
                .ok_or_else(|| io::Error::from(io::ErrorKind::UnexpectedEof))
        }
    }

    #[test]
    fn the_variable_comes_first() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "from file\n").unwrap();
        let env = FakeEnv::default()
            .with(PASSWORD_VAR, "from var")
            .with(PASSWORD_FILE_VAR, &file);
        let t = tty(&["typed"]);
        assert_eq!(read_password(&env, &t).unwrap().bytes(), b"from var");
        assert!(t.asked.borrow().is_empty());
    }

    #[test]
    fn the_file_gives_its_first_line_without_the_line_ending() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        for (text, want) in [
            ("secret\n", &b"secret"[..]),
            ("secret", b"secret"),
            ("secret\r\nsecond line\n", b"secret"),
            (" spaced pw \n", b" spaced pw "),
        ] {
            std::fs::write(&file, text).unwrap();
            let env = FakeEnv::default()
                .with(PASSWORD_VAR, "")
                .with(PASSWORD_FILE_VAR, &file);
            assert_eq!(read_password(&env, &no_tty()).unwrap().bytes(), want);
        }
    }

    #[test]
    fn a_missing_or_empty_password_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        let env = FakeEnv::default().with(PASSWORD_FILE_VAR, &file);
        let err = read_password(&env, &tty(&["typed"])).unwrap_err();
        assert!(matches!(err, CryptoError::PasswordFile { .. }));
        assert!(err.to_string().contains("REWIND_PASSWORD_FILE"));
        std::fs::write(&file, "\nsecond\n").unwrap();
        assert!(matches!(
            read_password(&env, &tty(&["typed"])),
            Err(CryptoError::EmptyPassword { .. })
        ));
    }

    #[test]
    fn the_terminal_is_asked_when_no_variable_is_set() {
        let t = tty(&["typed"]);
        assert_eq!(
            read_password(&FakeEnv::default(), &t).unwrap().bytes(),
            b"typed"
        );
        assert_eq!(t.asked.borrow().len(), 1);
        assert!(matches!(
            read_password(&FakeEnv::default(), &tty(&[""])),
            Err(CryptoError::EmptyPassword {
                from: "the terminal"
            })
        ));
        assert!(matches!(
            read_password(&FakeEnv::default(), &tty(&[])),
            Err(CryptoError::Prompt(_))
        ));
    }

    #[test]
    fn without_a_terminal_the_error_names_both_variables() {
        let err = read_password(&FakeEnv::default(), &no_tty()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "no password: set REWIND_PASSWORD or REWIND_PASSWORD_FILE"
        );
    }

    #[test]
    fn a_new_password_is_typed_twice_and_must_match() {
        let t = tty(&["new one", "new one"]);
        assert_eq!(
            read_new_password(&FakeEnv::default(), &t).unwrap().bytes(),
            b"new one"
        );
        assert_eq!(t.asked.borrow().len(), 2);
        assert!(matches!(
            read_new_password(&FakeEnv::default(), &tty(&["new one", "new on"])),
            Err(CryptoError::PasswordsDiffer)
        ));
        let env = FakeEnv::default().with(PASSWORD_VAR, "scripted");
        assert_eq!(
            read_new_password(&env, &no_tty()).unwrap().bytes(),
            b"scripted"
        );
    }

    #[cfg(unix)]
    #[test]
    fn a_variable_need_not_be_utf8() {
        use std::os::unix::ffi::OsStringExt;
        let env = FakeEnv::default().with(PASSWORD_VAR, OsString::from_vec(vec![0xff, b'x']));
        assert_eq!(
            read_password(&env, &no_tty()).unwrap().bytes(),
            &[0xff, b'x']
        );
    }

    #[test]
    fn debug_shows_no_password() {
        assert_eq!(
            format!("{:?}", Password::new(b"hunter2".to_vec())),
            "Password(..)"
        );
    }
}
