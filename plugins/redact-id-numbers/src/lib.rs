//! Route: masks resident identity numbers (18 characters: 17 digits and a digit or X) and mainland
//! mobile numbers (11 digits starting 13–19) in text bodies before they are stored, keeping the first
//! and last digits so a person can still tell numbers apart. Marks changed messages `redacted=true`.

use ferrymq_plugin_sdk::{Change, RouteDecision};

fn is_digit(b: u8) -> bool {
    b.is_ascii_digit()
}

/// Length of an identity or mobile number starting at `i`, if one does (not part of a longer number).
fn number_at(text: &[u8], i: usize) -> Option<usize> {
    if i > 0 && is_digit(text[i - 1]) {
        return None;
    }
    let run = text[i..].iter().take_while(|&&b| is_digit(b)).count();
    let id_tail = text.get(i + 17).is_some_and(|&b| b == b'X' || b == b'x');
    if run == 18 || (run == 17 && id_tail) {
        return Some(18);
    }
    if run == 11 && text[i] == b'1' && (b'3'..=b'9').contains(&text[i + 1]) {
        return Some(11);
    }
    None
}

fn redact(text: &[u8]) -> Option<Vec<u8>> {
    let mut out = text.to_vec();
    let mut changed = false;
    let mut i = 0;
    while i < text.len() {
        if let Some(len) = number_at(text, i) {
            // Keep the first three and the last two characters.
            for b in &mut out[i + 3..i + len - 2] {
                *b = b'*';
            }
            changed = true;
            i += len;
        } else {
            i += 1;
        }
    }
    changed.then_some(out)
}

ferrymq_plugin_sdk::route_plugin!(|message, _config| {
    let unchanged = Change { tag: None, set_properties: vec![], remove_properties: vec![], body: None };
    let Some(body) = message.body() else { return RouteDecision::Accept(unchanged) };
    // Only text bodies are rewritten.
    if std::str::from_utf8(&body).is_err() {
        return RouteDecision::Accept(unchanged);
    }
    match redact(&body) {
        Some(redacted) => RouteDecision::Accept(Change {
            tag: None,
            set_properties: vec![("redacted".into(), "true".into())],
            remove_properties: vec![],
            body: Some(redacted),
        }),
        None => RouteDecision::Accept(unchanged),
    }
});
