//! Opening, torn tails, damage and reuse of segments.

use super::*;

fn rev(r: i64) -> Revision {
    Revision::new(r).expect("a revision")
}

#[tokio::test]
async fn a_torn_tail_is_cut_and_damage_before_it_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    {
        let b = LogBackend::open(&store, LogOptions::default()).expect("open");
        for v in [b"one".as_slice(), b"two", b"three"] {
            b.put(b"k", v.to_vec(), Expect::Any).await.expect("put");
        }
    }
    let segment = store.join(format::segment_name(1));
    let data = std::fs::read(&segment).expect("read");
    let end = data.iter().rposition(|b| *b != 0).expect("records") + 1;
    // A record whose sync never finished: a frame that claims more than was written.
    let torn = [0x40, 0, 0, 0, 1, 2, 3, 4, 1, 0, 0];
    std::os::unix::fs::FileExt::write_all_at(
        &std::fs::OpenOptions::new()
            .write(true)
            .open(&segment)
            .expect("open"),
        &torn,
        end as u64,
    )
    .expect("tear");
    {
        let b = LogBackend::open(&store, LogOptions::default()).expect("reopen");
        let (kv, at) = b.get(b"k", None).await.expect("get");
        assert_eq!((kv.expect("k").value, at), (b"three".to_vec(), rev(4)));
        let (kv, _) = b.get(b"k", Some(rev(2))).await.expect("get at 2");
        assert_eq!(kv.expect("k at 2").value, b"one");
        // Appending after the cut tail works and survives another reopen.
        b.put(b"k", b"four".to_vec(), Expect::Any)
            .await
            .expect("put");
    }
    let b = LogBackend::open(&store, LogOptions::default()).expect("reopen");
    let (kv, at) = b.get(b"k", None).await.expect("get");
    assert_eq!((kv.expect("k").value, at), (b"four".to_vec(), rev(5)));
    drop(b);
    // A flipped byte in the first record, with records after it: corruption, not a tail.
    let mut data = std::fs::read(&segment).expect("read");
    data[HEADER_LEN as usize + 12] ^= 0x55;
    std::fs::write(&segment, &data).expect("damage");
    match LogBackend::open(&store, LogOptions::default()) {
        Err(BackendError::Corrupt(why)) => {
            assert!(why.contains("unreadable record at offset 24"), "{why}")
        }
        other => panic!("expected corruption, got {other:?}"),
    }
}

#[tokio::test]
async fn a_newest_segment_deleted_or_cut_short_is_refused() {
    let dir = tempfile::tempdir().expect("temp dir");
    let store = dir.path().join("store");
    let opts = LogOptions {
        segment_bytes: 4096,
        ..LogOptions::default()
    };
    {
        let b = LogBackend::open(&store, opts).expect("open");
        for i in 0..40u32 {
            let key = format!("k{}", i % 5);
            b.put(key.as_bytes(), vec![b'x'; 300], Expect::Any)
                .await
                .expect("put");
        }
    }
    let segments = list_segments(&store).expect("list");
    assert!(segments.len() >= 3, "{segments:?}");
    let (newest, newest_path) = segments.last().cloned().expect("newest");
    assert_eq!(writer::newest_marked(&store).expect("mark"), Some(newest));
    let data = std::fs::read(&newest_path).expect("read");
    let scanned = scan(
        &data,
        check_header(&data, newest, &newest_path).expect("header"),
    );
    let (last_at, _) = scanned.records.last().expect("a record");
    let (last_at, end) = (*last_at, scanned.end);
    // Each damage on a copy of the store: refused, naming what happened, and the copy is
    // left as it was (nothing cut, nothing started again).
    type Damage<'a> = Box<dyn Fn(&Path) + 'a>;
    let cases: [(&str, Damage<'_>, &str); 5] = [
        (
            "newest segment deleted",
            Box::new(|copy| {
                std::fs::remove_file(copy.join(format::segment_name(newest))).expect("rm")
            }),
            "is missing",
        ),
        (
            "cut right after its last record",
            Box::new(move |copy| cut(copy, newest, end)),
            "cut short",
        ),
        (
            "cut inside its last record",
            Box::new(move |copy| cut(copy, newest, last_at + 20)),
            "cut short",
        ),
        (
            "cut to nothing",
            Box::new(move |copy| cut(copy, newest, 0)),
            "header is gone",
        ),
        (
            "every segment deleted",
            Box::new(|copy| {
                for (seq, _) in list_segments(copy).expect("list") {
                    std::fs::remove_file(copy.join(format::segment_name(seq))).expect("rm");
                }
            }),
            "is missing",
        ),
    ];
    fn cut(copy: &Path, seq: u32, len: usize) {
        let file = std::fs::OpenOptions::new()
            .write(true)
            .open(copy.join(format::segment_name(seq)))
            .expect("open");
        file.set_len(len as u64).expect("truncate");
    }
    for (what, damage, expected) in &cases {
        let copy = dir.path().join(what.replace(' ', "-"));
        copy_dir(&store, &copy);
        damage(&copy);
        let before = dir_contents(&copy);
        match LogBackend::open(&copy, opts) {
            Err(BackendError::Corrupt(why)) => {
                assert!(why.contains(expected), "{what}: {why}")
            }
            other => panic!("{what}: expected corruption, got {other:?}"),
        }
        assert_eq!(dir_contents(&copy), before, "{what}: the store was changed");
    }
    // A store from before the mark existed: a deleted newest segment cannot be told from
    // a store that never had one, but a cut one still can.
    let copy = dir.path().join("no-mark");
    copy_dir(&store, &copy);
    std::fs::remove_file(copy.join(writer::NEWEST_NAME)).expect("rm mark");
    cut(&copy, newest, end);
    let err = LogBackend::open(&copy, opts).expect_err("cut");
    assert!(err.to_string().contains("cut short"), "{err}");
    // Opening a store without the mark writes it.
    let marked = dir.path().join("marked-on-open");
    copy_dir(&store, &marked);
    std::fs::remove_file(marked.join(writer::NEWEST_NAME)).expect("rm mark");
    drop(LogBackend::open(&marked, opts).expect("open without a mark"));
    assert_eq!(writer::newest_marked(&marked).expect("mark"), Some(newest));
    // A mark that is not a number is named.
    std::fs::write(copy.join(writer::NEWEST_NAME), "seven\n").expect("write");
    let err = LogBackend::open(&copy, opts).expect_err("bad mark");
    assert!(err.to_string().contains("is not a segment number"), "{err}");
    // The untouched store opens, with every write.
    let b = LogBackend::open(&store, opts).expect("reopen");
    assert_eq!(b.current_revision().await.expect("revision"), rev(41));
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).expect("mkdir");
    for entry in std::fs::read_dir(from).expect("list") {
        let entry = entry.expect("entry");
        if entry.file_name() != LOCK_FILE {
            std::fs::copy(entry.path(), to.join(entry.file_name())).expect("copy");
        }
    }
}

fn dir_contents(dir: &Path) -> Vec<(std::ffi::OsString, Vec<u8>)> {
    let mut out: Vec<_> = std::fs::read_dir(dir)
        .expect("list")
        .map(|e| {
            let e = e.expect("entry");
            (e.file_name(), std::fs::read(e.path()).expect("read"))
        })
        .filter(|(name, _)| name != LOCK_FILE)
        .collect();
    out.sort();
    out
}

#[tokio::test]
async fn a_segment_a_crash_left_unstarted_is_started_again() {
    let dir = tempfile::tempdir().expect("temp dir");
    {
        let b = LogBackend::open(dir.path(), LogOptions::default()).expect("open");
        b.put(b"k", b"v".to_vec(), Expect::Any).await.expect("put");
    }
    // Created and not yet filled, half filled with zeros, filled without its header.
    for contents in [Vec::new(), vec![0u8; 10], vec![0u8; 4096]] {
        let seq = list_segments(dir.path())
            .expect("list")
            .last()
            .expect("one")
            .0
            + 1;
        std::fs::write(dir.path().join(format::segment_name(seq)), &contents).expect("write");
        let b = LogBackend::open(dir.path(), LogOptions::default()).expect("reopen");
        let (kv, _) = b.get(b"k", None).await.expect("get");
        assert_eq!(kv.expect("k").value, b"v");
        let outcome = b
            .put(b"other", b"w".to_vec(), Expect::Any)
            .await
            .expect("put");
        assert!(
            matches!(outcome, WriteOutcome::Applied { .. }),
            "{outcome:?}"
        );
    }
    // Not the last segment any more: no longer a crash's leftover, but damage.
    let first = dir.path().join(format::segment_name(1));
    let mut data = std::fs::read(&first).expect("read");
    data[..HEADER_LEN as usize].fill(0);
    std::fs::write(&first, &data).expect("damage");
    let err = LogBackend::open(dir.path(), LogOptions::default()).expect_err("damaged header");
    assert!(
        err.to_string().contains("does not start with the header"),
        "{err}"
    );
}

#[tokio::test]
async fn a_second_open_of_the_directory_is_refused_as_locked() {
    let dir = tempfile::tempdir().expect("temp dir");
    let b = LogBackend::open(dir.path(), LogOptions::default()).expect("open");
    let again = LogBackend::open(dir.path(), LogOptions::default()).expect_err("locked");
    assert!(again.is_locked(), "{again}");
    drop(b);
    LogBackend::open(dir.path(), LogOptions::default()).expect("open after close");
}

#[tokio::test]
async fn each_engine_refuses_the_other_engines_directory_and_changes_nothing() {
    use crate::backend::sled::{SledBackend, SledOptions};
    let dir = tempfile::tempdir().expect("temp dir");
    let (sled_dir, log_dir) = (dir.path().join("sled"), dir.path().join("log"));
    {
        let s = SledBackend::open(&sled_dir, SledOptions::default()).expect("open sled");
        s.put(b"k", b"v".to_vec(), Expect::Any).await.expect("put");
        let l = LogBackend::open(&log_dir, LogOptions::default()).expect("open log");
        l.put(b"k", b"v".to_vec(), Expect::Any).await.expect("put");
    }
    let listing = |d: &Path| {
        let mut names: Vec<_> = std::fs::read_dir(d)
            .expect("list")
            .map(|e| e.expect("entry").file_name())
            .collect();
        names.sort();
        names
    };
    let (sled_files, log_files) = (listing(&sled_dir), listing(&log_dir));
    match LogBackend::open(&sled_dir, LogOptions::default()) {
        Err(e @ BackendError::OtherEngine { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "{} holds a sled store; open it with that engine (this is the log-structured engine)",
                sled_dir.display()
            )
        ),
        other => panic!("the log engine opened a sled directory: {:?}", other.err()),
    }
    match SledBackend::open(&log_dir, SledOptions::default()) {
        Err(e @ BackendError::OtherEngine { .. }) => assert_eq!(
            e.to_string(),
            format!(
                "{} holds a log-structured store; open it with that engine (this is the sled engine)",
                log_dir.display()
            )
        ),
        other => panic!("sled opened a log-structured directory: {:?}", other.err()),
    }
    assert_eq!(listing(&sled_dir), sled_files);
    assert_eq!(listing(&log_dir), log_files);
    let l = LogBackend::open(&log_dir, LogOptions::default()).expect("reopen log");
    let (kv, _) = l.get(b"k", None).await.expect("get");
    assert_eq!(kv.expect("k").value, b"v");
}
