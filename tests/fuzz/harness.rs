//! The fuzz harness on stable Rust: proptest draws byte strings (and shrinks a failing one),
//! `arbitrary` turns them into an input of one of three shapes, and a watchdog catches a case
//! that hangs.
//!
//! - **raw**: the bytes as they are;
//! - **structured**: tokens from the target's dictionary (its grammar's words: field names,
//!   operators, units) glued by raw bytes, so that deep validation is reached;
//! - **mutated seed**: a valid input of the target with bytes flipped, set, deleted,
//!   duplicated, truncated, extended or replaced by dictionary tokens.
//!
//! `KEYWARD_FUZZ_CASES=N` runs every target for `N` cases (default: each target's own count,
//! chosen so that the whole binary takes a minute or two in debug on 2 cores);
//! `KEYWARD_FUZZ_SEED=N` fixes proptest's seed, `KEYWARD_FUZZ_SEED=random` draws one (default: a
//! fixed seed per target, so that CI runs are repeatable). A failure names the target and shows
//! the smallest input found, which then goes into the target's regression table.

use std::collections::HashMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::sync::{Mutex, Once};
use std::time::{Duration, Instant};

use arbitrary::{Arbitrary, Unstructured};
use proptest::collection::vec;
use proptest::prelude::any;
use proptest::test_runner::{Config, RngSeed, TestCaseError, TestRunner};

/// A case that runs longer than this is a hang: the watchdog aborts the binary, printing the
/// target and input. Generous, because CI machines are loaded and builds are debug.
const HANG_LIMIT: Duration = Duration::from_secs(60);
/// Longest byte string proptest draws for one case.
const MAX_DRAW: usize = 2048;

/// Cases for a target whose default is `default` (see the module docs).
pub fn cases(default: u32) -> u32 {
    std::env::var("KEYWARD_FUZZ_CASES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// What one target feeds its parser: valid seeds to mutate and the grammar's words.
#[derive(Default, Clone)]
pub struct Corpus {
    /// Valid inputs (each parses).
    pub seeds: Vec<Vec<u8>>,
    /// Words of the input's grammar.
    pub dict: Vec<Vec<u8>>,
}

impl Corpus {
    /// A corpus of `seeds` and `words`.
    pub fn new(seeds: Vec<Vec<u8>>, words: &[&str]) -> Corpus {
        Corpus {
            seeds,
            dict: words.iter().map(|w| w.as_bytes().to_vec()).collect(),
        }
    }

    /// A corpus of text seeds and `words`.
    pub fn text(seeds: &[&str], words: &[&str]) -> Corpus {
        Corpus::new(seeds.iter().map(|s| s.as_bytes().to_vec()).collect(), words)
    }
}

/// The words of YAML (and JSON) syntax.
#[rustfmt::skip]
pub const YAML_WORDS: &[&str] = &[
    "\n", "\n  ", "\n    ", "- ", ": ", "{", "}", "[", "]", ", ", "\"", "'", "#", "---\n", "null",
    "true", "false", "0", "-1", "&a ", "*a", "!!str ", "!!binary ", "|\n  ", ">\n  ", "''", "\"\"",
];

/// The words of JSON syntax, and numbers that break decoders.
#[rustfmt::skip]
pub const JSON_WORDS: &[&str] = &[
    "{", "}", "[", "]", ":", ",", "\"", "null", "true", "0", "-1", "-0", "1e999",
    "18446744073709551615",
];

/// One edit of a seed.
#[derive(Arbitrary, Debug)]
enum Mutation {
    Flip { at: u16, bit: u8 },
    Set { at: u16, byte: u8 },
    Delete { at: u16, len: u8 },
    Insert { at: u16, bytes: Vec<u8> },
    Token { at: u16, which: u8 },
    ReplaceWithToken { at: u16, len: u8, which: u8 },
    Duplicate { from: u16, len: u8, to: u16 },
    Truncate { at: u16 },
    Extend { bytes: Vec<u8> },
    Interesting { at: u16, which: u8 },
}

/// Bytes that break parsers: boundaries, NUL, UTF-8 edge cases, YAML and JSON specials.
const INTERESTING: &[&[u8]] = &[
    b"\0",
    b"\xff",
    b"\xc3",
    b"\xe2\x80\xae",
    b"\xf0\x9f\x98\x80",
    b"\r\n",
    b"\t",
    b"-1",
    b"0",
    b"18446744073709551615",
    b"9223372036854775807",
    b"-9223372036854775808",
    b"1e309",
    b"\"",
    b"'",
    b"\\",
    b"{",
    b"}",
    b"[",
    b"]",
    b":",
    b",",
    b"&a",
    b"*a",
    b"!!binary",
    b"---\n",
    b"null",
    b"~",
    b"%",
    b"/",
    b"..",
];

fn pos(at: u16, len: usize) -> usize {
    if len == 0 {
        0
    } else {
        at as usize % (len + 1)
    }
}

fn token(dict: &[Vec<u8>], which: u8) -> &[u8] {
    if dict.is_empty() {
        INTERESTING[which as usize % INTERESTING.len()]
    } else {
        &dict[which as usize % dict.len()]
    }
}

fn apply(m: &Mutation, dict: &[Vec<u8>], out: &mut Vec<u8>) {
    let len = out.len();
    match *m {
        Mutation::Flip { at, bit } if len > 0 => out[at as usize % len] ^= 1 << (bit % 8),
        Mutation::Set { at, byte } if len > 0 => out[at as usize % len] = byte,
        Mutation::Delete { at, len: n } => {
            let at = pos(at, len);
            let end = (at + n as usize + 1).min(len);
            out.drain(at..end);
        }
        Mutation::Insert { at, ref bytes } => {
            let at = pos(at, len);
            out.splice(at..at, bytes.iter().copied());
        }
        Mutation::Token { at, which } => {
            let at = pos(at, len);
            out.splice(at..at, token(dict, which).iter().copied());
        }
        Mutation::ReplaceWithToken { at, len: n, which } => {
            let at = pos(at, len);
            let end = (at + n as usize).min(len);
            out.splice(at..end, token(dict, which).iter().copied());
        }
        Mutation::Duplicate { from, len: n, to } => {
            let from = pos(from, len);
            let end = (from + n as usize).min(len);
            let piece = out[from..end].to_vec();
            let to = pos(to, len);
            out.splice(to..to, piece);
        }
        Mutation::Truncate { at } => out.truncate(pos(at, len)),
        Mutation::Extend { ref bytes } => out.extend_from_slice(bytes),
        Mutation::Interesting { at, which } => {
            let at = pos(at, len);
            let t = INTERESTING[which as usize % INTERESTING.len()];
            out.splice(at..at, t.iter().copied());
        }
        _ => {}
    }
}

/// The input that `draw` (proptest's bytes) stands for in `corpus`: raw, structured or a
/// mutated seed (see the module docs).
pub fn input(corpus: &Corpus, draw: &[u8]) -> Vec<u8> {
    let mut u = Unstructured::new(draw);
    let shape: u8 = u.arbitrary().unwrap_or(0);
    match shape % 5 {
        0 => u.take_rest().to_vec(),
        1 => {
            // (`arbitrary` yields zeros once the bytes run out: stop there.)
            let mut out = Vec::new();
            let mut bytes = u.take_rest().iter().copied();
            while let Some(b) = bytes.next() {
                if b < 200 {
                    out.extend_from_slice(token(&corpus.dict, b));
                } else {
                    out.push(match b % 4 {
                        0 => b' ',
                        1 => b'\n',
                        _ => bytes.next().unwrap_or(b'x'),
                    });
                }
            }
            out
        }
        _ if corpus.seeds.is_empty() => u.take_rest().to_vec(),
        _ => {
            let seed = u.choose(&corpus.seeds).cloned().unwrap_or_default();
            let mut out = seed;
            let edits: Vec<Mutation> = u.arbitrary().unwrap_or_default();
            for m in edits.iter().take(16) {
                apply(m, &corpus.dict, &mut out);
            }
            out
        }
    }
}

/// What the watchdog watches: per thread, the target, the case's start and its input.
type Running = HashMap<std::thread::ThreadId, (&'static str, Instant, Vec<u8>)>;
static RUNNING: Mutex<Option<Running>> = Mutex::new(None);

thread_local! {
    /// Inside a case: a panic is caught and reported with its input, so the hook stays quiet
    /// (shrinking panics hundreds of times).
    static IN_CASE: std::cell::Cell<bool> = const { std::cell::Cell::new(false) };
}

fn watchdog() {
    static START: Once = Once::new();
    START.call_once(|| {
        let hook = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            if !IN_CASE.with(|c| c.get()) {
                hook(info);
            }
        }));
        std::thread::spawn(|| loop {
            std::thread::sleep(Duration::from_secs(1));
            let guard = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
            for (name, start, input) in guard.iter().flat_map(|m| m.values()) {
                if start.elapsed() > HANG_LIMIT {
                    eprintln!(
                        "fuzz target {name}: a case has run for {:?} (a hang); input {:?}",
                        start.elapsed(),
                        String::from_utf8_lossy(input)
                    );
                    std::process::abort();
                }
            }
        });
    });
}

fn set_running(entry: Option<(&'static str, Vec<u8>)>) {
    let mut guard = RUNNING.lock().unwrap_or_else(|e| e.into_inner());
    let map = guard.get_or_insert_with(HashMap::new);
    let id = std::thread::current().id();
    match entry {
        Some((name, input)) => {
            map.insert(id, (name, Instant::now(), input));
        }
        None => {
            map.remove(&id);
        }
    }
}

fn seed_for(name: &str) -> RngSeed {
    match std::env::var("KEYWARD_FUZZ_SEED").ok().as_deref() {
        Some("random") => RngSeed::Random,
        Some(n) => RngSeed::Fixed(n.parse().expect("KEYWARD_FUZZ_SEED is a number or random")),
        None => RngSeed::Fixed(name.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
            (h ^ b as u64).wrapping_mul(0x100_0000_01b3)
        })),
    }
}

fn panic_message(p: &(dyn std::any::Any + Send)) -> String {
    p.downcast_ref::<String>()
        .cloned()
        .or_else(|| p.downcast_ref::<&str>().map(|s| (*s).to_owned()))
        .unwrap_or_else(|| "a panic".into())
}

/// Runs one case of `check` on `input` under the watchdog; a panic becomes an error naming the
/// input. Regression tables call it directly.
pub fn one_case(name: &'static str, input: &[u8], check: &dyn Fn(&[u8])) -> Result<(), String> {
    set_running(Some((name, input.to_vec())));
    IN_CASE.with(|c| c.set(true));
    let res = catch_unwind(AssertUnwindSafe(|| check(input)));
    IN_CASE.with(|c| c.set(false));
    set_running(None);
    res.map_err(|p| {
        format!(
            "fuzz target {name} panicked on input {:?}: {}",
            String::from_utf8_lossy(input),
            panic_message(&*p)
        )
    })
}

/// Fuzzes `check` (which must not panic: it asserts the target's properties) with
/// [`cases`]`(default_cases)` inputs drawn from `corpus`, after running every seed once.
pub fn fuzz(name: &'static str, default_cases: u32, corpus: &Corpus, check: impl Fn(&[u8])) {
    watchdog();
    let started = Instant::now();
    for seed in &corpus.seeds {
        if let Err(e) = one_case(name, seed, &check) {
            panic!("a valid seed fails: {e}");
        }
    }
    let config = Config {
        cases: cases(default_cases),
        failure_persistence: None,
        max_shrink_iters: 2048,
        rng_seed: seed_for(name),
        ..Config::default()
    };
    let mut runner = TestRunner::new(config);
    let res = runner.run(&vec(any::<u8>(), 0..MAX_DRAW), |draw| {
        let input = input(corpus, &draw);
        one_case(name, &input, &check).map_err(TestCaseError::fail)
    });
    if let Err(e) = res {
        panic!("{e}");
    }
    eprintln!(
        "fuzz target {name}: {} cases in {:.1?}",
        cases(default_cases),
        started.elapsed()
    );
}

/// Runs `check` on each regression input (inputs that once crashed or hung a parser).
pub fn regressions(name: &'static str, inputs: &[&[u8]], check: impl Fn(&[u8])) {
    watchdog();
    for input in inputs {
        if let Err(e) = one_case(name, input, &check) {
            panic!("regression: {e}");
        }
    }
}

/// Whether a decoder's error `message` quotes no value: serde quotes the value of a field of the
/// wrong type (`invalid type: string "…"`), which in a file of keys or Secret values may be a
/// secret; keyward redacts it. (Validation messages name non-secret values on purpose: an
/// endpoint, a kind.)
pub fn quotes_no_value(message: &str) -> bool {
    message
        .match_indices("string \"")
        .all(|(i, m)| message[i + m.len()..].starts_with("<redacted>\""))
}

/// A multi-threaded runtime for targets that drive async code (two workers, as on CI).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("a tokio runtime")
}
