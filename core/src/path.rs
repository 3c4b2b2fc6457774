//! Paths as raw bytes: how rewind stores, compares, checks and shows them.
//!
//! Stored paths are absolute, as the bytes the OS gave (any byte but NUL; `/`
//! separates). Output escapes what a terminal would mangle; `--json` output
//! keeps them lossless through [`JsonPath`].

use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

use base64::Engine;
use serde::{Serialize, Serializer};

/// The bytes of a path.
pub fn to_bytes(p: &Path) -> &[u8] {
    p.as_os_str().as_bytes()
}

/// A path from its bytes.
pub fn from_bytes(b: &[u8]) -> PathBuf {
    PathBuf::from(OsStr::from_bytes(b))
}

/// True when `path` is `base` or lies below it (component-wise).
pub fn is_under(path: &[u8], base: &[u8]) -> bool {
    if base == b"/" {
        return path.first() == Some(&b'/');
    }
    path == base || (path.starts_with(base) && path.get(base.len()) == Some(&b'/'))
}

/// A stored path that restore must refuse.
#[derive(Debug, thiserror::Error)]
#[error("unsafe stored path {}: {reason}", display(path))]
pub struct UnsafePath {
    /// The offending path.
    pub path: Vec<u8>,
    /// What is wrong with it.
    pub reason: &'static str,
}

/// The components of `path` below `base`, each checked: no `..`, no `.`, no
/// empty component, no NUL. `path` equal to `base` gives no components.
pub fn relative_components<'a>(path: &'a [u8], base: &[u8]) -> Result<Vec<&'a [u8]>, UnsafePath> {
    let bad = |reason| UnsafePath {
        path: path.to_vec(),
        reason,
    };
    if path.contains(&0) {
        return Err(bad("contains NUL"));
    }
    if !is_under(path, base) {
        return Err(bad("lies outside the restored path"));
    }
    let rest = if base == b"/" {
        &path[1..]
    } else {
        &path[base.len()..]
    };
    let rest = rest.strip_prefix(b"/").unwrap_or(rest);
    if rest.is_empty() {
        return Ok(Vec::new());
    }
    let mut out = Vec::new();
    for c in rest.split(|&b| b == b'/') {
        match c {
            b"" => return Err(bad("has an empty or absolute component")),
            b"." | b".." => return Err(bad("has a '.' or '..' component")),
            c => out.push(c),
        }
    }
    Ok(out)
}

/// `p` made absolute against the current directory, `.` and `..` removed
/// lexically.
fn lexical(p: &Path) -> std::io::Result<PathBuf> {
    let joined = if p.is_absolute() {
        p.to_path_buf()
    } else {
        std::env::current_dir()?.join(p)
    };
    let mut clean = PathBuf::from("/");
    for c in joined.components() {
        match c {
            std::path::Component::ParentDir => {
                clean.pop();
            }
            std::path::Component::Normal(n) => clean.push(n),
            _ => {}
        }
    }
    Ok(clean)
}

/// Make `p` absolute against the current directory and remove `.` and `..`
/// lexically (the path may no longer exist, so it cannot be canonicalized);
/// the longest existing ancestor is canonicalized so symlinked parents such as
/// `/tmp` on macOS resolve the same way the watcher saw them.
pub fn absolute(p: &Path) -> std::io::Result<PathBuf> {
    let clean = lexical(p)?;
    // Canonicalize the longest existing prefix.
    let mut existing = clean.clone();
    let mut tail = Vec::new();
    loop {
        if let Ok(c) = existing.canonicalize() {
            let mut out = c;
            for t in tail.iter().rev() {
                out.push(t);
            }
            return Ok(out);
        }
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                tail.push(name);
                existing = parent.to_path_buf();
            }
            _ => return Ok(clean),
        }
    }
}

/// [`absolute`], but a symlink as the last component is not followed: the
/// path of the link itself (its directory canonicalized, its name kept).
pub fn absolute_nofollow(p: &Path) -> std::io::Result<PathBuf> {
    let abs = absolute(p)?;
    let lexical = lexical(p)?;
    match (lexical.parent(), lexical.file_name()) {
        (Some(parent), Some(name))
            if std::fs::symlink_metadata(&lexical).is_ok_and(|m| m.file_type().is_symlink()) =>
        {
            Ok(absolute(parent)?.join(name))
        }
        _ => Ok(abs),
    }
}

/// A path for people: valid UTF-8 as is, other bytes as `\xNN`, control
/// characters (newline, tab, escape) escaped so one path stays on one line.
pub fn display(b: &[u8]) -> String {
    let mut out = String::with_capacity(b.len());
    for chunk in b.utf8_chunks() {
        for ch in chunk.valid().chars() {
            match ch {
                '\n' => out.push_str("\\n"),
                '\t' => out.push_str("\\t"),
                '\\' => out.push_str("\\\\"),
                c if c.is_control() => out.push_str(&format!("\\u{{{:x}}}", c as u32)),
                c => out.push(c),
            }
        }
        for byte in chunk.invalid() {
            out.push_str(&format!("\\x{byte:02x}"));
        }
    }
    out
}

/// Serializes a path losslessly: a JSON string when it is valid UTF-8, else
/// `{"base64": "..."}` of its bytes.
pub struct JsonPath<'a>(pub &'a [u8]);

impl Serialize for JsonPath<'_> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        match std::str::from_utf8(self.0) {
            Ok(text) => s.serialize_str(text),
            Err(_) => {
                use serde::ser::SerializeMap;
                let mut m = s.serialize_map(Some(1))?;
                m.serialize_entry(
                    "base64",
                    &base64::engine::general_purpose::STANDARD.encode(self.0),
                )?;
                m.end()
            }
        }
    }
}

/// A path kept as bytes serialized as [`JsonPath`] does, for
/// `#[serde(serialize_with = "rewind_core::path::serialize_json_path")]`.
pub fn serialize_json_path<S: Serializer>(b: &[u8], s: S) -> Result<S::Ok, S::Error> {
    JsonPath(b).serialize(s)
}

/// A filesystem path serialized as [`JsonPath`] does, for
/// `#[serde(serialize_with = "rewind_core::path::serialize_json_os_path")]`.
pub fn serialize_json_os_path<S: Serializer>(p: &Path, s: S) -> Result<S::Ok, S::Error> {
    JsonPath(to_bytes(p)).serialize(s)
}

/// [`serialize_json_os_path`] for an optional path (`null` when absent).
pub fn serialize_json_os_path_opt<S: Serializer>(
    p: &Option<PathBuf>,
    s: S,
) -> Result<S::Ok, S::Error> {
    p.as_deref().map(|p| JsonPath(to_bytes(p))).serialize(s)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_final_symlink_is_kept_by_absolute_nofollow_only() {
        let base = std::env::temp_dir()
            .canonicalize()
            .unwrap()
            .join(format!("rewind-path-test-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&base);
        std::fs::create_dir_all(base.join("real/sub")).unwrap();
        std::os::unix::fs::symlink(base.join("real"), base.join("link")).unwrap();
        let link = base.join("link");
        assert_eq!(absolute(&link).unwrap(), base.join("real"));
        assert_eq!(absolute_nofollow(&link).unwrap(), link);
        // Links above the last component are still resolved.
        assert_eq!(
            absolute_nofollow(&link.join("sub")).unwrap(),
            base.join("real/sub")
        );
        assert_eq!(absolute_nofollow(&base.join("real/../link")).unwrap(), link);
        std::fs::remove_dir_all(&base).unwrap();
    }

    #[test]
    fn under() {
        assert!(is_under(b"/a/b", b"/a"));
        assert!(is_under(b"/a", b"/a"));
        assert!(!is_under(b"/ab", b"/a"));
        assert!(is_under(b"/x", b"/"));
    }

    #[test]
    fn components_reject_escapes() {
        assert_eq!(
            relative_components(b"/r/a/b", b"/r").unwrap(),
            vec![&b"a"[..], &b"b"[..]]
        );
        assert!(relative_components(b"/r", b"/r").unwrap().is_empty());
        assert!(relative_components(b"/r/../etc", b"/r").is_err());
        assert!(relative_components(b"/r/a//b", b"/r").is_err());
        assert!(relative_components(b"/r/./b", b"/r").is_err());
        assert!(relative_components(b"/r/a\0b", b"/r").is_err());
        assert!(relative_components(b"/other", b"/r").is_err());
    }

    #[test]
    fn display_escapes() {
        assert_eq!(display(b"a\nb\xff"), "a\\nb\\xff");
        assert_eq!(display("é".as_bytes()), "é");
    }
}
