use super::*;
use rewind_core::{ChunkRef, EncodedChunk, Entry};
use rewind_repo::LocalRepo;

struct Fixture {
    _tmp: tempfile::TempDir,
    repo: LocalRepo,
    base: PathBuf,
    seq: u64,
}

impl Fixture {
    fn new() -> Fixture {
        let tmp = tempfile::tempdir().unwrap();
        let base = tmp.path().canonicalize().unwrap();
        let repo = LocalRepo::init(&base.join("repo"), rewind_core::DEFAULT_CHUNKER).unwrap();
        fs_create(&base.join("src"));
        Fixture {
            _tmp: tmp,
            repo,
            base,
            seq: 0,
        }
    }

    fn meta(&self, kind: FileKind, mode: u32, size: u64) -> FileMeta {
        let mut m = rewind_fsmeta::read_meta(&self.base).unwrap();
        m.kind = kind;
        m.mode = mode;
        m.size = size;
        m.mtime = rewind_fsmeta::FileTime {
            sec: 1_700_000_000,
            nsec: 5,
        };
        m
    }

    fn put(&mut self, rel: &str, at: i64, entry: Entry) {
        self.seq += 1;
        let mut path = rewind_core::path::to_bytes(&self.base.join("src")).to_vec();
        if !rel.is_empty() {
            path.push(b'/');
            path.extend_from_slice(rel.as_bytes());
        }
        self.repo
            .commit_versions(vec![Version {
                client: "c".into(),
                seq: self.seq,
                observed_at: Timestamp(at),
                path,
                entry,
            }])
            .unwrap();
    }

    fn dir(&mut self, rel: &str, at: i64) {
        let meta = self.meta(FileKind::Dir, 0o750, 0);
        self.put(
            rel,
            at,
            Entry::Present {
                meta,
                chunks: vec![],
                xattrs: vec![],
            },
        );
    }

    fn file(&mut self, rel: &str, at: i64, data: &[u8]) {
        let c = EncodedChunk::encode(data);
        let chunks = if data.is_empty() {
            vec![]
        } else {
            vec![ChunkRef {
                id: c.id,
                len: c.raw_len,
            }]
        };
        self.repo.put_chunks(vec![c]).unwrap();
        let meta = self.meta(FileKind::File, 0o640, data.len() as u64);
        self.put(
            rel,
            at,
            Entry::Present {
                meta,
                chunks,
                xattrs: vec![],
            },
        );
    }

    fn src(&self) -> Vec<u8> {
        rewind_core::path::to_bytes(&self.base.join("src")).to_vec()
    }
}

fn fs_create(p: &Path) {
    std::fs::create_dir_all(p).unwrap();
}

#[test]
fn restores_a_tree_to_a_new_place_with_metadata() {
    let mut f = Fixture::new();
    f.dir("", 10);
    f.dir("d", 10);
    f.file("d/a.txt", 20, b"alpha");
    f.file("b.txt", 30, b"beta");
    let dest = f.base.join("out");
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        ..Default::default()
    };
    let r = restore(&f.repo, "c", &f.src(), Timestamp(25), &opts).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(std::fs::read(dest.join("d/a.txt")).unwrap(), b"alpha");
    assert!(!dest.join("b.txt").exists(), "b.txt did not exist at 25");
    let m = rewind_fsmeta::read_meta(&dest.join("d/a.txt")).unwrap();
    assert_eq!(m.mode, 0o640);
    assert_eq!(m.mtime.sec, 1_700_000_000);
    let d = rewind_fsmeta::read_meta(&dest.join("d")).unwrap();
    assert_eq!(
        (d.mode, d.mtime.sec),
        (0o750, 1_700_000_000),
        "dir meta after children"
    );
}

#[test]
fn in_place_reuses_matching_content_and_delete_removes_newer_files() {
    let mut f = Fixture::new();
    f.dir("", 10);
    f.file("same.txt", 10, b"unchanged content");
    f.file("edit.txt", 10, b"original");
    let src = f.base.join("src");
    std::fs::write(src.join("same.txt"), b"unchanged content").unwrap();
    std::fs::write(src.join("edit.txt"), b"edited later").unwrap();
    std::fs::write(src.join("new.txt"), b"created later").unwrap();
    std::fs::write(src.join("ignored.tmp"), b"never captured").unwrap();
    let keep = |p: &Path| p.extension().is_some_and(|e| e == "tmp");
    let opts = RestoreOptions {
        delete: true,
        keep: Some(&keep),
        ..Default::default()
    };
    let r = restore(&f.repo, "c", &f.src(), Timestamp(20), &opts).unwrap();
    assert!(r.problems.is_empty(), "{:?}", r.problems);
    assert_eq!(r.unchanged, 1);
    assert_eq!(std::fs::read(src.join("edit.txt")).unwrap(), b"original");
    assert!(!src.join("new.txt").exists());
    assert!(
        src.join("ignored.tmp").exists(),
        "kept paths survive --delete"
    );
    assert_eq!(r.deleted, 1);
}

#[test]
fn unsafe_stored_paths_are_refused_and_reported() {
    let mut f = Fixture::new();
    f.dir("", 10);
    f.file("ok.txt", 10, b"ok");
    f.dir("..", 10);
    f.file("../evil.txt", 10, b"evil");
    let dest = f.base.join("out");
    let opts = RestoreOptions {
        to: Some(dest.clone()),
        ..Default::default()
    };
    let r = restore(&f.repo, "c", &f.src(), Timestamp(20), &opts).unwrap();
    assert_eq!(std::fs::read(dest.join("ok.txt")).unwrap(), b"ok");
    assert!(!f.base.join("evil.txt").exists());
    assert!(
        r.problems.iter().any(|p| p.message.contains("'..'")),
        "{:?}",
        r.problems
    );
}

#[test]
fn missing_path_and_occupied_destination_are_errors() {
    let mut f = Fixture::new();
    f.dir("", 10);
    f.file("a", 10, b"a");
    let none = restore(
        &f.repo,
        "c",
        &f.src(),
        Timestamp(5),
        &RestoreOptions::default(),
    );
    assert!(matches!(none, Err(RestoreError::NotFound { .. })));
    let dest = f.base.join("busy");
    std::fs::create_dir_all(dest.join("x")).unwrap();
    let opts = RestoreOptions {
        to: Some(dest),
        ..Default::default()
    };
    let busy = restore(&f.repo, "c", &f.src(), Timestamp(20), &opts);
    assert!(matches!(busy, Err(RestoreError::DestExists { .. })));
}
