//! The rule for topic and group names, shared by everything that accepts one.
//!
//! RocketMQ allows letters, digits and `% | _ -`; that also keeps names safe as directory names.

/// Longest topic name (RocketMQ's limit); the store refuses longer ones.
pub const TOPIC_BYTES_MAX: usize = 127;
/// Longest consumer-group name: its dead-letter topic (`%DLQ%<group>`) must still be a valid topic
/// name. (RocketMQ allows 255 bytes; a longer group could never set a message aside.)
pub const GROUP_BYTES_MAX: usize = TOPIC_BYTES_MAX - "%DLQ%".len();

/// Why `name` is not a valid topic or group name of at most `bytes_max` bytes, if it is not.
pub fn problem(name: &str, bytes_max: usize) -> Option<&'static str> {
    if name.is_empty() {
        return Some("empty");
    }
    if name.len() > bytes_max {
        return Some("too long");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'%' | b'|' | b'_' | b'-')) {
        return Some("only letters, digits and % | _ - are allowed");
    }
    None
}

#[cfg(test)]
mod tests {
    use super::problem;

    #[test]
    fn names_follow_rocketmqs_rule() {
        assert_eq!(problem("%RETRY%g_t-1|x", 127), None);
        assert_eq!(problem("", 127), Some("empty"));
        assert_eq!(problem("abc", 2), Some("too long"));
        for bad in ["a b", "a/b", "..", "é"] {
            assert!(problem(bad, 127).is_some(), "{bad}");
        }
    }
}
