//! The SQL92 filter on any expression a consumer could send.
//!
//! Parsing fails with an error or gives a filter that evaluates to a match, no match or an error on
//! any properties; a filter and its negation never both match; `(e) AND (e)` means `e`.
#![no_main]

use ferrymq_broker::filter::SqlFilter;
use libfuzzer_sys::fuzz_target;

/// Properties of the message the filters run on: a few fixed ones, and of the other names, those
/// of an odd length, all valued "7".
fn property(name: &str) -> Option<&'static str> {
    match name {
        "a" => Some("1"),
        "b" => Some("-2.5"),
        "c" => Some("x"),
        "flag" => Some("true"),
        "TAGS" => Some("TagA"),
        other if other.len() % 2 == 1 => Some("7"),
        _ => None,
    }
}

fuzz_target!(|data: &[u8]| {
    let Ok(sql) = std::str::from_utf8(data) else { return };
    let Ok(filter) = SqlFilter::parse(sql) else { return };
    let result = filter.evaluate(property);
    if let Ok(negated) = SqlFilter::parse(&format!("NOT ({sql}\n)")) {
        assert!(!(result == Ok(true) && negated.evaluate(property) == Ok(true)));
    }
    if let Ok(both) = SqlFilter::parse(&format!("({sql}\n) AND ({sql}\n)")) {
        assert_eq!(both.evaluate(property), result);
    }
});
