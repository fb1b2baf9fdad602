//! Seeded fuzz tests of the SQL92 filter, whose expression a consumer sends: generated expressions
//! must mean what a reference three-valued evaluator says they mean; random and mutated ones must
//! parse or fail with a [`ParseError`], evaluate or fail with an [`EvalError`], and never panic;
//! nesting and length stay bounded however the input is shaped.
//!
//! Budgets and replay: `ferrymq_fuzzgen` (`FERRYMQ_FUZZ_SEED`, `FERRYMQ_FUZZ_CASES`).
#![allow(clippy::expect_used, clippy::unwrap_used)]

use std::collections::HashMap;

use ferrymq_fuzzgen::{Rng, cases, mutate_text};

use super::sql::{EXPRESSION_BYTES_MAX, NESTING_DEPTH_MAX, SqlFilter};

const NAMES: [&str; 8] = ["a", "b", "TAGS", "region", "user.id", "$x", "k_1", "A1.b2"];
const VALUES: [&str; 12] =
    ["", "x", "TagA", "taga", "it's", "é", "1", "-2.5", "true", " a ", "9223372036854775808", "NaN"];

/// Properties of one message: a few of [`NAMES`], valued from [`VALUES`] or at random.
fn properties(rng: &mut Rng) -> HashMap<String, String> {
    let mut props = HashMap::new();
    for name in NAMES {
        if rng.bool() {
            let value = if rng.one_in(4) { rng.text(12) } else { (*rng.pick(&VALUES)).to_owned() };
            props.insert(name.to_owned(), value);
        }
    }
    props
}

fn quoted(s: &str) -> String {
    format!("'{}'", s.replace('\'', "''"))
}

fn keyword(rng: &mut Rng, word: &str) -> String {
    match rng.below(3) {
        0 => word.to_lowercase(),
        _ => word.to_owned(),
    }
}

/// Blanks between tokens: spaces, line breaks, comments.
fn blank(rng: &mut Rng) -> &'static str {
    const BLANKS: [&str; 8] = [" ", " ", " ", "  ", "\n", "\t", " /* c */ ", " -- c\n"];
    BLANKS[rng.index(BLANKS.len())]
}

// ---------------------------------------------------------------------------------------------------------
// The reference: the operators that cannot fail on any property value, evaluated with SQL's
// three-valued logic directly on the generated tree.

#[derive(Clone, Debug)]
enum Ast {
    Const(bool),
    Not(Box<Ast>),
    And(Vec<Ast>),
    Or(Vec<Ast>),
    IsNull { property: &'static str, negated: bool },
    In { property: &'static str, values: Vec<String>, negated: bool },
    Text { op: &'static str, property: &'static str, pattern: String, negated: bool },
    Equals { property: &'static str, literal: String, unequal: bool, literal_first: bool },
}

fn literal(rng: &mut Rng) -> String {
    if rng.one_in(4) { rng.text(6) } else { (*rng.pick(&VALUES)).to_owned() }
}

fn ast(rng: &mut Rng, depth: u32) -> Ast {
    let leaf = depth == 0 || rng.one_in(3);
    let property = *rng.pick(&NAMES);
    match rng.below(if leaf { 5 } else { 8 }) {
        0 => Ast::Const(rng.bool()),
        1 => Ast::IsNull { property, negated: rng.bool() },
        2 => Ast::In { property, values: (0..1 + rng.below(4)).map(|_| literal(rng)).collect(), negated: rng.bool() },
        3 => {
            let op = *rng.pick(&["CONTAINS", "STARTSWITH", "ENDSWITH"]);
            Ast::Text { op, property, pattern: literal(rng), negated: rng.bool() }
        }
        4 => Ast::Equals { property, literal: literal(rng), unequal: rng.bool(), literal_first: rng.bool() },
        5 => Ast::Not(Box::new(ast(rng, depth - 1))),
        6 => Ast::And((0..2 + rng.below(3)).map(|_| ast(rng, depth - 1)).collect()),
        _ => Ast::Or((0..2 + rng.below(3)).map(|_| ast(rng, depth - 1)).collect()),
    }
}

fn junction(terms: &[Ast], props: &HashMap<String, String>, dominant: bool) -> Option<bool> {
    let mut result = Some(!dominant);
    for term in terms {
        match reference(term, props) {
            Some(b) if b == dominant => return Some(dominant),
            Some(_) => {}
            None => result = None,
        }
    }
    result
}

fn reference(ast: &Ast, props: &HashMap<String, String>) -> Option<bool> {
    let value = |name: &str| props.get(name).map(String::as_str);
    match ast {
        Ast::Const(b) => Some(*b),
        Ast::Not(inner) => reference(inner, props).map(|b| !b),
        Ast::And(terms) => junction(terms, props, false),
        Ast::Or(terms) => junction(terms, props, true),
        Ast::IsNull { property, negated } => Some(value(property).is_none() != *negated),
        Ast::In { property, values, negated } => value(property).map(|v| values.iter().any(|x| x == v) != *negated),
        Ast::Text { op, property, pattern, negated } => value(property).map(|v| {
            let found = match *op {
                "CONTAINS" => v.contains(pattern.as_str()),
                "STARTSWITH" => v.starts_with(pattern.as_str()),
                _ => v.ends_with(pattern.as_str()),
            };
            found != *negated
        }),
        Ast::Equals { property, literal, unequal, .. } => value(property).map(|v| (v == literal) != *unequal),
    }
}

/// SQL for `ast`, parenthesised only where precedence needs it (and sometimes where it does not).
fn render(rng: &mut Rng, ast: &Ast) -> String {
    match ast {
        Ast::Const(b) => keyword(rng, if *b { "TRUE" } else { "FALSE" }),
        Ast::Not(inner) => {
            let inner_sql = render(rng, inner);
            let needs = matches!(**inner, Ast::And(_) | Ast::Or(_));
            let inner_sql = if needs || rng.one_in(4) { format!("({inner_sql})") } else { inner_sql };
            format!("{}{}{inner_sql}", keyword(rng, "NOT"), blank(rng))
        }
        Ast::And(terms) | Ast::Or(terms) => {
            let and = matches!(ast, Ast::And(_));
            let word = if and { "AND" } else { "OR" };
            let mut out = String::new();
            for (i, term) in terms.iter().enumerate() {
                if i > 0 {
                    out.push_str(blank(rng));
                    out.push_str(&keyword(rng, word));
                    out.push_str(blank(rng));
                }
                let sql = render(rng, term);
                let needs = matches!(term, Ast::Or(_)) && and;
                out.push_str(&if needs || rng.one_in(5) { format!("({sql})") } else { sql });
            }
            out
        }
        Ast::IsNull { property, negated } => {
            let is = keyword(rng, "IS");
            let null = keyword(rng, "NULL");
            if *negated {
                format!("{property} {is} {} {null}", keyword(rng, "NOT"))
            } else {
                format!("{property} {is} {null}")
            }
        }
        Ast::In { property, values, negated } => {
            let list: Vec<String> = values.iter().map(|v| quoted(v)).collect();
            let prefix = if *negated { format!("{} ", keyword(rng, "NOT")) } else { String::new() };
            format!("{property} {prefix}{} ({})", keyword(rng, "IN"), list.join(", "))
        }
        Ast::Text { op, property, pattern, negated } => {
            let prefix = if *negated { format!("{} ", keyword(rng, "NOT")) } else { String::new() };
            format!("{property} {prefix}{} {}", keyword(rng, op), quoted(pattern))
        }
        Ast::Equals { property, literal, unequal, literal_first } => {
            let op = if *unequal { "<>" } else { "=" };
            if *literal_first {
                format!("{}{op}{property}", quoted(literal))
            } else {
                format!("{property}{}{op}{}{}", blank(rng), blank(rng), quoted(literal))
            }
        }
    }
}

#[test]
fn generated_expressions_mean_what_the_reference_evaluator_says() {
    cases!(40_000, |rng| {
        let tree = ast(rng, 5);
        let sql = render(rng, &tree);
        let filter = match SqlFilter::parse(&sql) {
            Ok(filter) => filter,
            Err(err) if sql.len() > EXPRESSION_BYTES_MAX => return assert!(err.message.contains("bytes"), "{err}"),
            Err(err) => panic!("{sql:?} does not parse: {err}"),
        };
        for _ in 0..4 {
            let props = properties(rng);
            let expected = reference(&tree, &props) == Some(true);
            let got = filter.evaluate(|name| props.get(name).map(String::as_str));
            assert_eq!(got, Ok(expected), "{sql:?} on {props:?}");
        }
    });
}

// ---------------------------------------------------------------------------------------------------------
// The whole dialect, valid or not

/// A number literal, often one at or past a limit of its type.
fn number(rng: &mut Rng) -> String {
    const NUMBERS: [&str; 14] = [
        "0",
        "1",
        "-1",
        "1.5",
        ".5",
        "1e3",
        "1E-3",
        "2L",
        "9223372036854775807",
        "-9223372036854775808",
        "9223372036854775808",
        "1e308",
        "1e309",
        "00",
    ];
    if rng.bool() { (*rng.pick(&NUMBERS)).to_owned() } else { rng.edge_i64().to_string() }
}

fn operand(rng: &mut Rng) -> String {
    match rng.below(5) {
        0 | 1 => (*rng.pick(&NAMES)).to_owned(),
        2 => number(rng),
        3 => quoted(&literal(rng)),
        _ => {
            let word = *rng.pick(&["TRUE", "FALSE", "NULL"]);
            keyword(rng, word)
        }
    }
}

/// Any expression of the dialect's grammar, with operands of any type in any place.
fn full(rng: &mut Rng, depth: u32) -> String {
    let leaf = depth == 0 || rng.one_in(3);
    match rng.below(if leaf { 6 } else { 9 }) {
        0 => {
            let op = *rng.pick(&["=", "<>", "<", "<=", ">", ">="]);
            format!("{}{}{op}{}{}", operand(rng), blank(rng), blank(rng), operand(rng))
        }
        1 => format!(
            "{} {} {} {} {}",
            operand(rng),
            keyword(rng, "BETWEEN"),
            number(rng),
            keyword(rng, "AND"),
            number(rng)
        ),
        2 => format!("{} {} ({})", operand(rng), keyword(rng, "IN"), quoted(&literal(rng))),
        3 => format!("{} {} {}", operand(rng), keyword(rng, "IS NOT NULL"), ""),
        4 => {
            let op = *rng.pick(&["CONTAINS", "STARTSWITH", "ENDSWITH"]);
            format!("{} {} {}", operand(rng), keyword(rng, op), operand(rng))
        }
        5 => operand(rng),
        6 => format!("{} ({})", keyword(rng, "NOT"), full(rng, depth - 1)),
        7 => format!(
            "({}){}{}{}({})",
            full(rng, depth - 1),
            blank(rng),
            keyword(rng, "AND"),
            blank(rng),
            full(rng, depth - 1)
        ),
        _ => format!("{} {} {}", full(rng, depth - 1), keyword(rng, "OR"), full(rng, depth - 1)),
    }
}

#[test]
fn any_expression_parses_or_fails_cleanly_and_never_matches_together_with_its_negation() {
    let seeds = [
        "a between -1.5e3 and 3L AND (b = 'it''s' OR NOT c IN ('x','y')) -- c",
        "TAGS NOT CONTAINS 'é' /* x */ OR region IS NOT NULL AND flag = TRUE",
        "(((a <> 1))) or b >= .5 and c STARTSWITH 'q' and d ENDSWITH ''",
    ];
    cases!(60_000, |rng| {
        let mut sql = if rng.bool() { full(rng, 4) } else { (*rng.pick(&seeds)).to_owned() };
        if rng.bool() {
            let donor = full(rng, 2);
            sql = mutate_text(rng, &sql, &[&donor, "((((", "'", "--", "/*", "NOT NOT", "9e999"]);
        }
        let Ok(filter) = SqlFilter::parse(&sql) else { return };
        let both = format!("({sql}\n) AND ({sql}\n)");
        let negated = format!("NOT ({sql}\n)");
        let both = SqlFilter::parse(&both).ok();
        let negated = SqlFilter::parse(&negated).ok();
        for _ in 0..3 {
            let props = properties(rng);
            let lookup = |name: &str| props.get(name).map(String::as_str);
            let result = filter.evaluate(lookup);
            if let Some(negated) = &negated {
                let opposite = negated.evaluate(lookup);
                assert!(!(result == Ok(true) && opposite == Ok(true)), "{sql:?} and its negation both match {props:?}");
            }
            if let Some(both) = &both {
                assert_eq!(both.evaluate(lookup), result, "{sql:?} AND itself on {props:?}");
            }
        }
    });
}

#[test]
fn random_text_is_refused_or_evaluated_without_panicking() {
    cases!(50_000, |rng| {
        let sql: String = if rng.bool() {
            rng.text(200)
        } else {
            (0..rng.size(40)).map(|_| format!("{}{}", operand(rng), blank(rng))).collect()
        };
        if let Ok(filter) = SqlFilter::parse(&sql) {
            let props = properties(rng);
            let _ = filter.evaluate(|name| props.get(name).map(String::as_str));
        }
    });
}

/// Runs `f` on a thread with a small stack: a parser or evaluator that recursed with its input
/// would overflow it.
fn on_small_stack(f: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(256 << 10)
        .spawn(f)
        .expect("spawn")
        .join()
        .expect("finished without overflowing a 256 KiB stack");
}

#[test]
fn pathological_nesting_and_length_are_refused_within_a_small_stack() {
    on_small_stack(|| {
        let deep = "(".repeat(100_000);
        let err = SqlFilter::parse(&deep).expect_err("100 000 parentheses");
        assert!(err.message.contains("bytes"), "{err}");
        for opener in ["(", "NOT ", "NOT (", "- "] {
            let n = EXPRESSION_BYTES_MAX / opener.len() - 8;
            let closer = if opener.contains('(') { ")".repeat(n) } else { String::new() };
            let sql = format!("{}a=1{}", opener.repeat(n), closer);
            let sql = &sql[..sql.len().min(EXPRESSION_BYTES_MAX)];
            assert!(SqlFilter::parse(sql).is_err(), "{opener:?} × {n}");
        }
        // The deepest accepted nesting evaluates within the same stack.
        let sql = format!("{}a = 1{}", "NOT (".repeat(NESTING_DEPTH_MAX / 2), ")".repeat(NESTING_DEPTH_MAX / 2));
        let filter = SqlFilter::parse(&sql).expect("nesting at the limit");
        assert_eq!(filter.evaluate(|_| Some("1")), Ok(true));
        let chain = vec!["a = 1"; 400].join(" OR ");
        let filter = SqlFilter::parse(&chain).expect("a long OR chain is not nesting");
        assert_eq!(filter.evaluate(|_| Some("2")), Ok(false));
    });
}
