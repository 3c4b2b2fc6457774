use super::*;
use crate::HookOutcome;
use crate::seqs::SEQ_RESERVE;
use rewind_core::{ChunkRef, Entry, FileKind, FileMeta};
use std::collections::HashMap;
use std::fs;
use std::sync::atomic::AtomicBool;

fn meta(size: u64) -> FileMeta {
    FileMeta {
        size,
        dev: 1,
        ino: 2,
        ..FileMeta::new(FileKind::File, 0o644)
    }
}

fn version(path: &str, chunks: &[&EncodedChunk]) -> Version {
    Version {
        client: String::new(),
        seq: 0,
        observed_at: Timestamp::now(),
        path: path.as_bytes().to_vec(),
        entry: Entry::Present {
            meta: meta(chunks.iter().map(|c| c.raw_len as u64).sum()),
            chunks: chunks
                .iter()
                .map(|c| ChunkRef {
                    id: c.id,
                    len: c.raw_len,
                })
                .collect(),
            xattrs: Vec::new(),
        },
    }
}

fn capture(j: &Journal, path: &str, data: &[u8]) -> (u64, EncodedChunk) {
    let c = EncodedChunk::encode(data);
    let g = j.begin_capture();
    g.spool(c.clone()).unwrap();
    (g.append(version(path, &[&c])), c)
}

#[test]
fn versions_become_durable_and_survive_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "host").unwrap();
    let (s1, c1) = capture(&j, "/r/a", b"one");
    let (s2, _) = capture(&j, "/r/b", b"two");
    assert_eq!((s1, s2), (1, 2));
    assert_eq!(j.wait_durable_beyond(1, Duration::from_secs(10)), 2);
    assert_eq!(j.last_known(b"/r/a").unwrap().unwrap().seq, 1);
    j.close().unwrap();
    drop(j);

    let j = Journal::open(dir.path(), "other").unwrap();
    assert_eq!(j.client(), "host");
    assert_eq!(j.durable_seq(), 2);
    let vs = j.versions_after(0, 100).unwrap();
    assert_eq!(vs.len(), 2);
    assert_eq!(vs[0].client, "host");
    assert_eq!(j.read_spooled(&c1.id).unwrap().unwrap(), c1);
    let (s3, _) = capture(&j, "/r/c", b"three");
    assert_eq!(s3, 3);
    assert_eq!(j.known_under(b"/r").unwrap().len(), 3);
    assert_eq!(j.known_under(b"/r/a").unwrap().len(), 1);
}

#[test]
fn deletions_clear_state_and_overlay_is_visible_before_flush() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "h").unwrap();
    capture(&j, "/r/x", b"x");
    assert!(j.last_known(b"/r/x").unwrap().is_some());
    let g = j.begin_capture();
    let mut v = version("/r/x", &[]);
    v.entry = Entry::Deleted;
    let seq = g.append(v);
    assert!(j.last_known(b"/r/x").unwrap().is_none());
    j.flush().unwrap();
    assert!(j.durable_seq() >= seq);
    assert!(j.last_known(b"/r/x").unwrap().is_none());
    assert!(j.known_under(b"/r").unwrap().is_empty());
}

#[test]
fn states_visited_one_at_a_time_are_those_known_under_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "h").unwrap();
    for p in ["/r/a", "/r/b", "/r/c", "/rx", "/s/d"] {
        capture(&j, p, p.as_bytes());
    }
    j.flush().unwrap();
    // Queued over sled: a deletion, a new path between two stored ones, a
    // change, and one past the last stored.
    let g = j.begin_capture();
    let mut gone = version("/r/b", &[]);
    gone.entry = Entry::Deleted;
    g.append(gone);
    capture(&j, "/r/bb", b"new");
    capture(&j, "/r/a", b"changed");
    capture(&j, "/r/z", b"last");
    let visit = |base: &[u8]| {
        let mut seen = Vec::new();
        j.for_each_known_under(base, |p, st| seen.push((p.to_vec(), st.seq)))
            .unwrap();
        seen
    };
    let listed = |base: &[u8]| -> Vec<(Vec<u8>, u64)> {
        j.known_under(base)
            .unwrap()
            .into_iter()
            .map(|(p, st)| (p, st.seq))
            .collect()
    };
    let under_r = visit(b"/r");
    let paths: Vec<&[u8]> = under_r.iter().map(|(p, _)| p.as_slice()).collect();
    assert_eq!(paths, [&b"/r/a"[..], b"/r/bb", b"/r/c", b"/r/z"]);
    assert_eq!(under_r, listed(b"/r"));
    j.flush().unwrap();
    assert_eq!(visit(b"/r"), under_r);
    assert_eq!(visit(b"/s"), listed(b"/s"));
    assert!(visit(b"/t").is_empty());
}

#[test]
fn cursor_advance_drops_versions_and_reclaims_spool() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "h").unwrap();
    let (_, c1) = capture(&j, "/r/a", &vec![7u8; 100_000]);
    let (s2, _) = capture(&j, "/r/b", b"bbb");
    j.flush().unwrap();
    assert!(j.stats().unwrap().spool_bytes > 0);
    j.advance_cursor(s2).unwrap();
    assert!(j.versions_after(0, 10).unwrap().is_empty());
    assert_eq!(j.cursor().unwrap(), s2);
    assert!(j.read_spooled(&c1.id).unwrap().is_none());
    let segs = fs::read_dir(dir.path().join("spool"))
        .unwrap()
        .filter(|e| e.as_ref().unwrap().metadata().unwrap().len() > 0)
        .count();
    assert_eq!(segs, 0, "drained spool keeps no data");
    let st = j.stats().unwrap();
    assert_eq!(st.versions_waiting, 0);
    assert!(st.last_upload.is_some());
}

#[test]
fn inflight_capture_pins_its_segment() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "h").unwrap();
    let (s1, _) = capture(&j, "/r/a", b"a");
    // A long capture starts and spools a chunk, but has not appended yet.
    let g = j.begin_capture();
    let big = EncodedChunk::encode(b"pinned chunk");
    g.spool(big.clone()).unwrap();
    j.flush().unwrap();
    j.advance_cursor(s1).unwrap();
    let seq = g.append(version("/r/big", &[&big]));
    j.flush().unwrap();
    assert_eq!(j.read_spooled(&big.id).unwrap().unwrap(), big);
    j.advance_cursor(seq).unwrap();
    assert!(j.read_spooled(&big.id).unwrap().is_none());
}

#[test]
fn abandoned_capture_leaves_nothing_referenced() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "h").unwrap();
    {
        let g = j.begin_capture();
        g.spool(EncodedChunk::encode(b"orphan")).unwrap();
    }
    j.flush().unwrap();
    assert_eq!(j.durable_seq(), 0);
    assert!(j.versions_after(0, 10).unwrap().is_empty());
}

#[test]
fn skip_to_moves_sequence_numbers_past_the_repository() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "h").unwrap();
    j.skip_to(41).unwrap();
    let (seq, _) = capture(&j, "/r/a", b"a");
    assert_eq!(seq, 42);
    assert_eq!(j.cursor().unwrap(), 41);
    j.flush().unwrap();
    assert_eq!(j.versions_after(j.cursor().unwrap(), 10).unwrap().len(), 1);
    j.skip_to(10).unwrap();
    assert_eq!(capture(&j, "/r/b", b"b").0, 43);
    j.close().unwrap();
    drop(j);
    let j = Journal::open(dir.path(), "h").unwrap();
    assert_eq!(capture(&j, "/r/c", b"c").0, 44);
}

/// A group-commit hook in memory that can stop accepting, or refuse.
#[derive(Default)]
struct MemSink {
    refuse: AtomicBool,
    fail: AtomicBool,
    chunks: Mutex<HashMap<ChunkId, EncodedChunk>>,
    committed: Mutex<Vec<u64>>,
}

impl CommitHook for MemSink {
    fn accepting(&self) -> bool {
        !self.refuse.load(Ordering::Relaxed)
    }
    fn has_chunk(&self, id: &ChunkId) -> bool {
        self.chunks.lock().unwrap().contains_key(id)
    }
    fn group_commit(
        &self,
        chunks: &[EncodedChunk],
        versions: &[Version],
        log_drained: bool,
    ) -> HookOutcome {
        assert!(self.accepting(), "given chunks while not accepting");
        if self.fail.load(Ordering::Relaxed) {
            return HookOutcome::Refused;
        }
        let mut m = self.chunks.lock().unwrap();
        for c in chunks {
            m.insert(c.id, c.clone());
        }
        if !log_drained {
            return HookOutcome::Stored;
        }
        self.committed
            .lock()
            .unwrap()
            .extend(versions.iter().map(|v| v.seq));
        HookOutcome::Committed
    }
}

#[test]
fn a_sink_that_stops_accepting_is_left_alone_and_the_spool_takes_over() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "host").unwrap();
    let sink = Arc::new(MemSink::default());
    j.set_commit_hook(sink.clone());
    let (s1, c1) = capture(&j, "/r/a", b"straight to the sink");
    assert_eq!(j.wait_durable_beyond(s1 - 1, Duration::from_secs(10)), s1);
    assert!(sink.has_chunk(&c1.id));
    assert_eq!(*sink.committed.lock().unwrap(), vec![s1]);
    assert!(j.read_spooled(&c1.id).unwrap().is_none());
    assert_eq!(j.cursor().unwrap(), s1);

    sink.refuse.store(true, Ordering::Relaxed);
    let (s2, c2) = capture(&j, "/r/b", b"into the spool");
    assert_eq!(j.wait_durable_beyond(s1, Duration::from_secs(10)), s2);
    assert!(!sink.has_chunk(&c2.id));
    assert_eq!(j.read_spooled(&c2.id).unwrap().unwrap(), c2);
    assert_eq!(*sink.committed.lock().unwrap(), vec![s1]);
    let waiting: Vec<u64> = j
        .versions_after(j.cursor().unwrap(), 10)
        .unwrap()
        .iter()
        .map(|v| v.seq)
        .collect();
    assert_eq!(waiting, vec![s2], "left for the uploader");
}

#[test]
fn a_refused_group_commit_keeps_the_chunks_in_the_spool_and_the_versions_in_the_log() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "host").unwrap();
    let sink = Arc::new(MemSink::default());
    sink.fail.store(true, Ordering::Relaxed);
    j.set_commit_hook(sink.clone());
    let (s1, c1) = capture(&j, "/r/a", b"queued for the hook, then refused");
    assert_eq!(j.wait_durable_beyond(s1 - 1, Duration::from_secs(10)), s1);
    assert!(!sink.has_chunk(&c1.id));
    assert_eq!(j.read_spooled(&c1.id).unwrap().unwrap(), c1);
    assert_eq!(j.cursor().unwrap(), 0);
    assert_eq!(
        j.versions_after(0, 10).unwrap().len(),
        1,
        "left for the uploader"
    );
    // Taken again: the hook stores chunks, the logged version stays.
    sink.fail.store(false, Ordering::Relaxed);
    let (s2, c2) = capture(&j, "/r/b", b"stored by the hook");
    assert_eq!(j.wait_durable_beyond(s1, Duration::from_secs(10)), s2);
    assert!(sink.has_chunk(&c2.id));
    assert!(
        sink.committed.lock().unwrap().is_empty(),
        "the log was not drained"
    );
    assert_eq!(j.versions_after(0, 10).unwrap().len(), 2);
}

/// A copy of the journal in `from` as a crash would leave it now (every
/// write so far was flushed, nothing after it happens).
fn crash_image(from: &std::path::Path, to: &std::path::Path) {
    fs::create_dir_all(to).unwrap();
    for e in fs::read_dir(from).unwrap() {
        let e = e.unwrap();
        if e.file_type().unwrap().is_dir() {
            crash_image(&e.path(), &to.join(e.file_name()));
        } else {
            fs::copy(e.path(), to.join(e.file_name())).unwrap();
        }
    }
}

/// A journal whose first version went through the log and whose second
/// the sink committed straight; `(s1, s2)`.
fn one_logged_one_committed(j: &Journal) -> (u64, u64, Arc<MemSink>) {
    j.skip_reserved().unwrap();
    let (s1, _) = capture(j, "/r/a", b"no sink");
    assert_eq!(s1, 1, "nothing reserved without a sink");
    j.flush().unwrap();
    // Uploaded, so the next version may be committed by the sink.
    j.advance_cursor(s1).unwrap();
    let sink = Arc::new(MemSink::default());
    j.set_commit_hook(sink.clone());
    let (s2, _) = capture(j, "/r/b", b"committed by the sink");
    assert_eq!(j.wait_durable_beyond(s1, Duration::from_secs(10)), s2);
    assert_eq!(*sink.committed.lock().unwrap(), vec![s2]);
    (s1, s2, sink)
}

#[test]
fn numbers_committed_straight_to_the_sink_are_never_reused_after_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "host").unwrap();
    let (_, s2, _) = one_logged_one_committed(&j);
    crash_image(dir.path(), crashed.path());
    j.close().unwrap();
    // A crash may have let the sink commit numbers the journal never
    // recorded, and their request may reach the repository after the
    // restart: new numbers jump past everything reserved.
    let j = Journal::open(crashed.path(), "host").unwrap();
    j.skip_reserved().unwrap();
    assert_eq!(
        j.stats().unwrap().versions_waiting,
        0,
        "a gap waits for nothing"
    );
    let (s3, _) = capture(&j, "/r/c", b"after the restart");
    assert_eq!(s3, s2 + SEQ_RESERVE + 1);
    j.flush().unwrap();
    assert_eq!(j.stats().unwrap().versions_waiting, 1);
    j.skip_reserved().unwrap();
    let (s4, _) = capture(&j, "/r/d", b"next");
    assert_eq!(s4, s3 + 1, "skipped once, not at every call");
}

#[test]
fn a_journal_opened_after_a_crash_and_closed_without_capturing_gives_nothing_back() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "host").unwrap();
    let (_, s2, _) = one_logged_one_committed(&j);
    crash_image(dir.path(), crashed.path());
    j.close().unwrap();
    // `status` reads the crashed agent's journal: the numbers reserved
    // are the crashed process's, and stay reserved.
    Journal::open(crashed.path(), "host")
        .unwrap()
        .close()
        .unwrap();
    let s3 = {
        let j = Journal::open(crashed.path(), "host").unwrap();
        j.skip_reserved().unwrap();
        let (s3, _) = capture(&j, "/r/c", b"after the restart");
        assert_eq!(s3, s2 + SEQ_RESERVE + 1);
        j.close().unwrap();
        s3
    };
    // Skipped, then given back: the next start goes on without a gap.
    let j = Journal::open(crashed.path(), "host").unwrap();
    j.skip_reserved().unwrap();
    let (s4, _) = capture(&j, "/r/d", b"after a clean stop");
    assert_eq!(s4, s3 + 1);
}

#[test]
fn a_clean_close_gives_the_reserved_numbers_back() {
    let dir = tempfile::tempdir().unwrap();
    let s2 = {
        let j = Journal::open(dir.path(), "host").unwrap();
        let (_, s2, _) = one_logged_one_committed(&j);
        j.close().unwrap();
        s2
    };
    let j = Journal::open(dir.path(), "host").unwrap();
    j.skip_reserved().unwrap();
    let (s3, _) = capture(&j, "/r/c", b"after a clean stop");
    assert_eq!(s3, s2 + 1, "no gap");
}

#[test]
fn numbers_skipped_behind_waiting_versions_are_not_counted_as_waiting() {
    let dir = tempfile::tempdir().unwrap();
    let crashed = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "host").unwrap();
    let (_, s2, sink) = one_logged_one_committed(&j);
    // The sink fails: the next versions wait in the log.
    sink.fail.store(true, Ordering::Relaxed);
    let (s3, _) = capture(&j, "/r/c", b"waits");
    let (s4, _) = capture(&j, "/r/d", b"waits too");
    assert_eq!(j.wait_durable_beyond(s3, Duration::from_secs(10)), s4);
    crash_image(dir.path(), crashed.path());
    j.close().unwrap();

    let j = Journal::open(crashed.path(), "host").unwrap();
    j.skip_reserved().unwrap();
    assert_eq!(
        j.cursor().unwrap(),
        s2,
        "the cursor never passes a waiting version"
    );
    let (s5, _) = capture(&j, "/r/e", b"after the restart");
    assert_eq!(s5, s2 + SEQ_RESERVE + 1);
    j.flush().unwrap();
    assert_eq!(
        j.stats().unwrap().versions_waiting,
        3,
        "{s3}, {s4} and {s5}"
    );
    let seqs: Vec<u64> = j
        .versions_after(s2, 10)
        .unwrap()
        .iter()
        .map(|v| v.seq)
        .collect();
    assert_eq!(seqs, vec![s3, s4, s5]);
    // Uploaded: the gap is behind the cursor.
    j.advance_cursor(s5).unwrap();
    assert_eq!(j.stats().unwrap().versions_waiting, 0);
}

#[test]
fn wake_waiters_ends_a_wait_before_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(dir.path(), "host").unwrap();
    let j2 = j.clone();
    let waiter = std::thread::spawn(move || {
        let t = std::time::Instant::now();
        let d = j2.wait_durable_beyond(j2.durable_seq(), Duration::from_secs(120));
        (d, t.elapsed())
    });
    std::thread::sleep(Duration::from_millis(200));
    j.wake_waiters();
    let (d, waited) = waiter.join().unwrap();
    assert_eq!(d, j.durable_seq());
    assert!(waited < Duration::from_secs(60), "{waited:?}");
}
