//! Seeded fuzzing for the property tests: a small random generator, mutations of valid inputs, random
//! JSON, and a case runner with a fixed budget whose failures say how to replay them.
//!
//! Every decoder a client, a file, a peer or a plugin controls has a property test that runs
//! [`cases!`]`(budget, |rng| …)`. Case `i` of a run whose base seed is `S` draws everything from
//! `Rng::new(S + i)` (mixed with the test's name), so one failing case replays alone:
//!
//! ```text
//! FERRYMQ_FUZZ_SEED=<S + i> FERRYMQ_FUZZ_CASES=1 cargo test --profile ci -p <crate> -- --exact <test>
//! ```
//!
//! which is the line a failing case prints. The budget is fixed so that CI runs the same cases on
//! every build (a few seconds per test); [`SEED_VAR`] and [`CASES_VAR`] move and widen the search.
//! Longer, coverage-guided runs are the `cargo fuzz` targets in `fuzz/`.

use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::time::Instant;

/// Base seed of a run (default 0).
pub const SEED_VAR: &str = "FERRYMQ_FUZZ_SEED";
/// Cases each test runs, instead of its own budget.
pub const CASES_VAR: &str = "FERRYMQ_FUZZ_CASES";

/// SplitMix64: tiny, fast, and every seed gives a different stream.
#[derive(Clone, Debug)]
pub struct Rng {
    state: u64,
}

impl Rng {
    pub fn new(seed: u64) -> Self {
        Self { state: seed }
    }

    pub fn next_u64(&mut self) -> u64 {
        self.state = self.state.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.state;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// A number in `0..n` (0 when `n` is 0).
    pub fn below(&mut self, n: u64) -> u64 {
        if n == 0 { 0 } else { self.next_u64() % n }
    }

    /// An index into something of `len` items (0 when it is empty).
    pub fn index(&mut self, len: usize) -> usize {
        self.below(len as u64) as usize
    }

    /// True once in `n` times on average.
    pub fn one_in(&mut self, n: u64) -> bool {
        self.below(n) == 0
    }

    pub fn bool(&mut self) -> bool {
        self.next_u64() & 1 == 1
    }

    /// One of `items`, which must not be empty.
    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.index(items.len())]
    }

    /// A length in `0..=max`, small far more often than large: most bugs need few bytes, some need
    /// many.
    pub fn size(&mut self, max: usize) -> usize {
        let cap = match self.below(8) {
            0 => max,
            1..=2 => max.min(64),
            3..=5 => max.min(8),
            _ => max.min(2),
        };
        self.index(cap + 1)
    }

    pub fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next_u64() as u8).collect()
    }

    /// Mostly the values that break arithmetic and bounds checks, sometimes any value.
    pub fn edge_u64(&mut self) -> u64 {
        const EDGES: [u64; 14] = [
            0,
            1,
            2,
            7,
            8,
            255,
            256,
            u16::MAX as u64,
            u32::MAX as u64,
            1 << 32,
            i64::MAX as u64,
            1 << 63,
            u64::MAX - 1,
            u64::MAX,
        ];
        match self.below(3) {
            0 => self.next_u64(),
            1 => self.next_u64() >> self.below(64),
            _ => *self.pick(&EDGES),
        }
    }

    /// [`Rng::edge_u64`] for signed fields: also the negative extremes.
    pub fn edge_i64(&mut self) -> i64 {
        const EDGES: [i64; 12] =
            [0, 1, -1, 999, 1000, -1000, -1001, i32::MIN as i64, i32::MAX as i64, i64::MIN, i64::MIN + 1, i64::MAX];
        match self.below(3) {
            0 => self.next_u64() as i64,
            1 => (self.next_u64() as i64) >> self.below(64),
            _ => *self.pick(&EDGES),
        }
    }

    /// One character, often one that is special somewhere: separators, controls, quotes, blanks
    /// that are not ASCII, characters of 2 to 4 UTF-8 bytes.
    pub fn char(&mut self) -> char {
        const SPECIAL: [char; 28] = [
            'a', 'Z', '0', '9', '_', '-', '.', ' ', '\t', '\n', '\0', '\u{1}', '\u{2}', '|', '%', '\'', '"', '\\', '(',
            ')', 'é', '€', '😀', '\u{7f}', '\u{85}', '\u{a0}', '\u{2028}', '\u{feff}',
        ];
        match self.below(4) {
            0 => char::from(b'a' + self.below(26) as u8),
            1 => char::from_u32(self.below(0x11_0000) as u32).unwrap_or('\u{fffd}'),
            _ => *self.pick(&SPECIAL),
        }
    }

    /// Text of at most `max_chars` characters from [`Rng::char`].
    pub fn text(&mut self, max_chars: usize) -> String {
        let n = self.size(max_chars);
        (0..n).map(|_| self.char()).collect()
    }

    /// A plain ASCII word of 1 to `max_len` letters, digits and underscores.
    pub fn word(&mut self, max_len: usize) -> String {
        const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_";
        let n = 1 + self.size(max_len.saturating_sub(1));
        (0..n).map(|_| char::from(*self.pick(ALPHABET))).collect()
    }
}

/// Runs a property over [`run`]'s cases, naming the calling crate in the replay line.
#[macro_export]
macro_rules! cases {
    ($budget:expr, $case:expr) => {
        $crate::run(env!("CARGO_PKG_NAME"), $budget, $case)
    };
}

/// Runs `case` `budget` times (or [`CASES_VAR`] times), case `i` with the seed [`SEED_VAR`]` + i`;
/// when a case panics, prints the line that replays it alone and fails with its panic.
pub fn run(package: &str, budget: u64, mut case: impl FnMut(&mut Rng)) {
    let base = env_u64(SEED_VAR).unwrap_or(0);
    let count = env_u64(CASES_VAR).unwrap_or(budget);
    let thread = std::thread::current();
    // The test harness names each test's thread after the test.
    let test = thread.name().unwrap_or("<test name>").to_owned();
    let salt = name_hash(&test);
    let started = Instant::now();
    for i in 0..count {
        let seed = base.wrapping_add(i);
        let mut rng = Rng::new(seed ^ salt);
        if let Err(panic) = catch_unwind(AssertUnwindSafe(|| case(&mut rng))) {
            eprintln!(
                "{test}: case {i} of {count} failed; replay it alone with\n  \
                 {SEED_VAR}={seed} {CASES_VAR}=1 cargo test --profile ci -p {package} -- --exact {test}"
            );
            resume_unwind(panic);
        }
    }
    eprintln!("{test}: {count} cases from seed {base} in {} ms", started.elapsed().as_millis());
}

fn env_u64(name: &str) -> Option<u64> {
    let value = std::env::var(name).ok()?;
    match value.trim().parse() {
        Ok(n) => Some(n),
        Err(_) => panic!("{name}={value:?} is not a whole number"),
    }
}

/// FNV-1a: decorrelates tests that run with the same seeds.
fn name_hash(name: &str) -> u64 {
    name.bytes().fold(0xCBF2_9CE4_8422_2325, |h, b| (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3))
}

/// Applies one to four random mutations to `data`: bit flips, random or special bytes, integers at
/// their extremes written over a 2-, 4- or 8-byte window (either byte order), truncation, deleted,
/// inserted, duplicated and zeroed ranges, and splices of `donors` (other valid inputs).
pub fn mutate(rng: &mut Rng, data: &mut Vec<u8>, donors: &[&[u8]]) {
    for _ in 0..1 + rng.below(4) {
        mutate_once(rng, data, donors);
    }
}

fn mutate_once(rng: &mut Rng, data: &mut Vec<u8>, donors: &[&[u8]]) {
    const SPECIAL: [u8; 12] = [0x00, 0x01, 0x02, 0x7f, 0x80, 0xff, b'\'', b'"', b'(', b'{', b'[', b'\\'];
    let len = data.len();
    let at = rng.index(len);
    let range = |rng: &mut Rng| {
        let start = rng.index(len + 1);
        let end = start + rng.size(len - start);
        start..end
    };
    match rng.below(11) {
        0 if len > 0 => data[at] ^= 1 << rng.below(8),
        1 if len > 0 => data[at] = rng.next_u64() as u8,
        2 if len > 0 => data[at] = *rng.pick(&SPECIAL),
        3 => {
            let width = *rng.pick(&[2usize, 4, 8]);
            if len >= width {
                let at = rng.index(len - width + 1);
                let value = match rng.below(4) {
                    0 => len as u64,
                    1 => (len as u64).wrapping_add(rng.below(3)).wrapping_sub(1),
                    _ => rng.edge_u64(),
                };
                let bytes = if rng.bool() { value.to_be_bytes() } else { value.to_le_bytes() };
                let window = if rng.bool() { &bytes[8 - width..] } else { &bytes[..width] };
                data[at..at + width].copy_from_slice(window);
            }
        }
        4 => data.truncate(at),
        5 => {
            data.drain(range(rng));
        }
        6 => {
            let n = rng.size(64);
            let inserted = rng.bytes(n);
            data.splice(at..at, inserted);
        }
        7 => {
            let copied = data[range(rng)].to_vec();
            let to = rng.index(len + 1);
            data.splice(to..to, copied);
        }
        8 => range(rng).for_each(|i| data[i] = 0),
        9 | 10 if !donors.is_empty() => {
            let donor = *rng.pick(donors);
            let from = rng.index(donor.len() + 1);
            let piece = &donor[from..from + rng.size(donor.len() - from)];
            let replaced = range(rng);
            if rng.bool() {
                data.splice(replaced, piece.iter().copied());
            } else {
                data.extend_from_slice(piece);
            }
        }
        _ => data.push(*rng.pick(&SPECIAL)),
    }
}

/// [`mutate`] for text inputs (expressions, JSON): the bytes are mutated, then read as UTF-8 with
/// any broken sequence replaced.
pub fn mutate_text(rng: &mut Rng, text: &str, donors: &[&str]) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let donors: Vec<&[u8]> = donors.iter().map(|d| d.as_bytes()).collect();
    mutate(rng, &mut bytes, &donors);
    String::from_utf8_lossy(&bytes).into_owned()
}

/// `s` as a JSON string literal.
pub fn json_string(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => out.push_str(&format!("\\u{:04x}", u32::from(c))),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

/// A random JSON document no deeper than `depth`; object keys come mostly from `keys`, so that a
/// parser's known fields see values of every type, and sometimes twice.
pub fn json(rng: &mut Rng, keys: &[&str], depth: u32) -> String {
    let mut out = String::new();
    json_value(rng, keys, depth, &mut out);
    out
}

fn json_value(rng: &mut Rng, keys: &[&str], depth: u32, out: &mut String) {
    const NUMBERS: [&str; 16] = [
        "0",
        "1",
        "-1",
        "7",
        "1024",
        "65536",
        "4294967295",
        "4294967296",
        "9223372036854775807",
        "18446744073709551615",
        "18446744073709551616",
        "-9223372036854775809",
        "1.5",
        "-0",
        "1e308",
        "1e999",
    ];
    let nested = if depth == 0 { 0 } else { 2 };
    match rng.below(6 + nested) {
        0 => out.push_str("null"),
        1 => out.push_str(if rng.bool() { "true" } else { "false" }),
        2 => {
            let number = *rng.pick(&NUMBERS);
            out.push_str(number);
        }
        3 => out.push_str(&rng.edge_i64().to_string()),
        4 => {
            let s = if rng.bool() { rng.word(12) } else { rng.text(24) };
            out.push_str(&json_string(&s));
        }
        5 => out.push_str(&json_string(&rng.word(4).repeat(1 + rng.size(64)))),
        6 => {
            out.push('[');
            for i in 0..rng.size(6) {
                if i > 0 {
                    out.push(',');
                }
                json_value(rng, keys, depth - 1, out);
            }
            out.push(']');
        }
        _ => json_object(rng, keys, depth, out),
    }
}

fn json_object(rng: &mut Rng, keys: &[&str], depth: u32, out: &mut String) {
    out.push('{');
    for i in 0..rng.size(keys.len() + 2) {
        if i > 0 {
            out.push(',');
        }
        let key = if keys.is_empty() || rng.one_in(6) { rng.word(8) } else { (*rng.pick(keys)).to_owned() };
        out.push_str(&json_string(&key));
        out.push(':');
        json_value(rng, keys, depth.saturating_sub(1), out);
    }
    out.push('}');
}

/// An object of `keys`, each once, with random values: closer to what a parser accepts than
/// [`json`], so that validation past the parser is reached too.
pub fn json_fields(rng: &mut Rng, keys: &[&str], depth: u32) -> String {
    let mut out = String::from("{");
    let mut first = true;
    for key in keys {
        if rng.one_in(4) {
            continue;
        }
        if !first {
            out.push(',');
        }
        first = false;
        out.push_str(&json_string(key));
        out.push(':');
        json_value(rng, keys, depth, &mut out);
    }
    out.push('}');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_seed_gives_the_same_stream_and_another_seed_another() {
        let draw = |seed| {
            let mut rng = Rng::new(seed);
            (0..8).map(|_| rng.next_u64()).collect::<Vec<_>>()
        };
        assert_eq!(draw(7), draw(7));
        assert_ne!(draw(7), draw(8));
    }

    #[test]
    fn mutations_stay_in_bounds_and_change_inputs() {
        let mut rng = Rng::new(1);
        let donor = b"donor bytes".as_slice();
        let mut changed = 0;
        for _ in 0..10_000 {
            let mut data = b"a valid input of some length".to_vec();
            mutate(&mut rng, &mut data, &[donor]);
            changed += usize::from(data != b"a valid input of some length");
            let mut empty = Vec::new();
            mutate(&mut rng, &mut empty, &[]);
        }
        assert!(changed > 9_000, "{changed} of 10000 mutations changed their input");
    }

    #[test]
    fn generated_json_parses_unless_a_number_is_out_of_range() {
        let mut rng = Rng::new(2);
        for _ in 0..2000 {
            for doc in [json(&mut rng, &["name", "queues"], 3), json_fields(&mut rng, &["name", "queues"], 2)] {
                if let Err(err) = serde_json::from_str::<serde_json::Value>(&doc) {
                    assert!(err.to_string().contains("out of range"), "{doc}: {err}");
                }
            }
        }
        assert_eq!(json_string("a\"\\\u{1}é"), "\"a\\\"\\\\\\u0001é\"");
    }
}
