//! Markdown output: tables, number formatting, the machine description,
//! and refreshing the generated sections of `docs/benchmarks.md`.

use std::fmt::Write as _;
use std::fs;
use std::path::Path;

use anyhow::{Context, Result};

use crate::run::Cmd;

/// A Markdown table.
#[derive(Clone, Debug, Default)]
pub struct Table {
    header: Vec<String>,
    rows: Vec<Vec<String>>,
}

impl Table {
    /// A table with these column titles.
    pub fn new<S: ToString>(header: &[S]) -> Table {
        Table {
            header: header.iter().map(ToString::to_string).collect(),
            rows: Vec::new(),
        }
    }

    /// Append a row.
    pub fn row<S: ToString>(&mut self, cells: &[S]) {
        self.rows
            .push(cells.iter().map(ToString::to_string).collect());
    }

    /// Render; the first column is left-aligned, the others right-aligned.
    pub fn render(&self) -> String {
        let mut s = String::new();
        let _ = writeln!(s, "| {} |", self.header.join(" | "));
        let aligns: Vec<&str> = (0..self.header.len())
            .map(|i| if i == 0 { "---" } else { "---:" })
            .collect();
        let _ = writeln!(s, "| {} |", aligns.join(" | "));
        for r in &self.rows {
            let _ = writeln!(s, "| {} |", r.join(" | "));
        }
        s
    }
}

/// Bytes for people: `1.23 GiB`, `456.7 MiB`, `12.3 KiB`, `17 B`.
pub fn bytes(n: u64) -> String {
    let f = n as f64;
    if f >= 1024.0 * 1024.0 * 1024.0 {
        format!("{:.2} GiB", f / (1024.0 * 1024.0 * 1024.0))
    } else if f >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", f / (1024.0 * 1024.0))
    } else if f >= 1024.0 {
        format!("{:.1} KiB", f / 1024.0)
    } else {
        format!("{n} B")
    }
}

/// Seconds for people.
pub fn secs(s: f64) -> String {
    if s >= 10.0 {
        format!("{s:.1} s")
    } else {
        format!("{s:.2} s")
    }
}

/// Milliseconds for people.
pub fn ms(s: f64) -> String {
    format!("{:.0} ms", s * 1000.0)
}

/// "met" / "NOT met".
pub fn verdict(ok: bool) -> &'static str {
    if ok { "**met**" } else { "**NOT met**" }
}

/// One generated section of the results document.
#[derive(Clone, Debug)]
pub struct Section {
    /// Marker name (`ingest`, `latency`, …).
    pub name: &'static str,
    /// Markdown body.
    pub body: String,
}

/// The current local date and time, to the minute, with the offset.
pub fn now_string() -> String {
    jiff::Zoned::now()
        .strftime("%Y-%m-%d %H:%M %:z")
        .to_string()
}

/// A description of the machine and tools, as a Markdown list.
pub fn machine(work: &Path, rewind: &Path) -> String {
    let first_line = |cmd: Cmd| -> String {
        cmd.run_quiet()
            .ok()
            .and_then(|s| s.lines().next().map(|l| l.trim().to_string()))
            .unwrap_or_else(|| "?".into())
    };
    let cpu = fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .and_then(|l| l.split(':').nth(1))
                .map(|m| m.trim().to_string())
        })
        .unwrap_or_else(|| "?".into());
    let mem = fs::read_to_string("/proc/meminfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("MemTotal:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|k| k.parse::<u64>().ok())
        })
        .map(|k| bytes(k * 1024))
        .unwrap_or_else(|| "?".into());
    let kernel = fs::read_to_string("/proc/sys/kernel/osrelease")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "?".into());
    let df = Cmd::new("df")
        .args(["-h", "--output=source,fstype,size,avail"])
        .arg(work)
        .run_quiet()
        .ok()
        .and_then(|s| {
            s.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "?".into());
    let nproc = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let root = crate::workspace_root();
    let rev =
        first_line(
            Cmd::new("git")
                .arg("-C")
                .arg(&root)
                .args(["rev-parse", "--short", "HEAD"]),
        );
    let dirty = Cmd::new("git")
        .arg("-C")
        .arg(&root)
        .args([
            "status",
            "--porcelain",
            "--untracked-files=no",
            "--",
            ".",
            ":!bench",
            ":!docs",
        ])
        .run_quiet()
        .map(|s| !s.trim().is_empty())
        .unwrap_or(false);
    let mut s = String::new();
    let _ = writeln!(s, "- CPU: {cpu}, `nproc` = {nproc}");
    let _ = writeln!(s, "- RAM: {mem}; kernel {kernel}");
    let _ = writeln!(
        s,
        "- Work directory {} on `{df}` (device, fs, size, free)",
        work.display()
    );
    let _ = writeln!(
        s,
        "- rewind: `{}` at commit {rev}{}, release profile",
        first_line(Cmd::new(rewind).arg("--version")),
        if dirty {
            " (with uncommitted changes)"
        } else {
            ""
        }
    );
    let _ = writeln!(
        s,
        "- restic: `{}`",
        first_line(Cmd::new("restic").arg("version"))
    );
    let _ = writeln!(
        s,
        "- borg: `{}`",
        first_line(Cmd::new("borg").arg("--version"))
    );
    let _ = writeln!(
        s,
        "- b3sum: `{}`; tar: `{}`",
        first_line(Cmd::new("b3sum").arg("--version")),
        first_line(Cmd::new("tar").arg("--version"))
    );
    let _ = writeln!(
        s,
        "- rustc: `{}`",
        first_line(Cmd::new("rustc").arg("--version"))
    );
    s
}

fn markers(name: &str) -> (String, String) {
    (
        format!("<!-- BEGIN GENERATED {name} -->"),
        format!("<!-- END GENERATED {name} -->"),
    )
}

/// Replace the text between the markers of each section in `doc` (created
/// if missing; sections without markers are appended at the end).
pub fn update_doc(doc: &Path, sections: &[Section]) -> Result<()> {
    let mut text = fs::read_to_string(doc).unwrap_or_else(|_| "# Benchmarks\n".into());
    for sec in sections {
        let (b, e) = markers(sec.name);
        let block = format!("{b}\n{}\n{e}", sec.body.trim_end());
        match (text.find(&b), text.find(&e)) {
            (Some(i), Some(j)) if j > i => text.replace_range(i..j + e.len(), &block),
            _ => {
                if !text.ends_with('\n') {
                    text.push('\n');
                }
                text.push('\n');
                text.push_str(&block);
                text.push('\n');
            }
        }
    }
    fs::write(doc, text).with_context(|| doc.display().to_string())
}

/// "min / median / max" of `v` in seconds, one decimal each.
pub fn spread_secs(v: &[f64]) -> String {
    format!(
        "{:.1} / {:.1} / {:.1} s",
        v.iter().copied().fold(f64::INFINITY, f64::min),
        median(v),
        v.iter().copied().fold(0.0, f64::max)
    )
}

/// The median of `v` (the mean of the middle two for an even count; NaN
/// when empty).
pub fn median(v: &[f64]) -> f64 {
    let mut v = v.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    if n == 0 {
        f64::NAN
    } else if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sections_are_replaced_in_place() {
        let d = std::env::temp_dir().join(format!("rewind-bench-doc-{}", std::process::id()));
        let _ = fs::remove_file(&d);
        let s = |body: &str| Section {
            name: "x",
            body: body.into(),
        };
        update_doc(&d, &[s("one")]).unwrap();
        fs::write(&d, fs::read_to_string(&d).unwrap() + "tail\n").unwrap();
        update_doc(&d, &[s("two")]).unwrap();
        let t = fs::read_to_string(&d).unwrap();
        assert!(
            t.contains("two") && !t.contains("one") && t.ends_with("tail\n"),
            "{t}"
        );
        fs::remove_file(&d).unwrap();
    }

    #[test]
    fn tables_render() {
        let mut t = Table::new(&["a", "b"]);
        t.row(&["x", "1"]);
        assert_eq!(t.render(), "| a | b |\n| --- | ---: |\n| x | 1 |\n");
    }
}
