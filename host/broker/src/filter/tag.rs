//! TAG filter expressions: `*` (or empty) for everything, or tags separated by `||`, each trimmed,
//! matched exactly and case-sensitively.

use ferrymq_proto::tag::tag_hash;

/// Longest TAG expression accepted.
pub const TAG_EXPRESSION_BYTES_MAX: usize = 4096;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TagFilter {
    All,
    /// Tags with their hashes, for the queue pre-check.
    Any(Vec<(String, i64)>),
}

impl TagFilter {
    /// Parses an expression; `None` when it is too long or lists an empty tag (`A || || B`).
    pub fn parse(expression: &str) -> Option<Self> {
        if expression.len() > TAG_EXPRESSION_BYTES_MAX {
            return None;
        }
        let trimmed = expression.trim();
        if trimmed.is_empty() || trimmed == "*" {
            return Some(TagFilter::All);
        }
        let mut tags = Vec::new();
        for tag in trimmed.split("||").map(str::trim) {
            if tag.is_empty() {
                return None;
            }
            if tag == "*" {
                return Some(TagFilter::All);
            }
            tags.push((tag.to_owned(), tag_hash(tag)));
        }
        Some(TagFilter::Any(tags))
    }

    pub fn may_match(&self, hash: i64) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Any(tags) => tags.iter().any(|(_, h)| *h == hash),
        }
    }

    pub fn matches(&self, tag: Option<&str>) -> bool {
        match self {
            TagFilter::All => true,
            TagFilter::Any(tags) => tag.is_some_and(|tag| tags.iter().any(|(t, _)| t == tag)),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn star_and_empty_match_everything_including_untagged() {
        for expr in ["*", "", "  ", "A || *"] {
            let f = TagFilter::parse(expr).expect("valid");
            assert_eq!(f, TagFilter::All, "{expr:?}");
            assert!(f.matches(None));
        }
    }

    #[test]
    fn listed_tags_match_exactly_and_case_sensitively() {
        let f = TagFilter::parse("TagA || TagB").expect("valid");
        assert!(f.matches(Some("TagA")) && f.matches(Some("TagB")));
        assert!(!f.matches(Some("taga")) && !f.matches(Some("TagC")) && !f.matches(None));
    }

    #[test]
    fn colliding_hashes_pass_the_pre_check_but_not_the_exact_match() {
        let f = TagFilter::parse("Aa").expect("valid");
        assert!(f.may_match(tag_hash("BB")), "same Java hash");
        assert!(!f.matches(Some("BB")));
        assert!(!f.may_match(tag_hash("Ab")));
    }

    #[test]
    fn malformed_expressions_are_refused() {
        assert_eq!(TagFilter::parse("A || || B"), None);
        assert_eq!(TagFilter::parse(&"a".repeat(TAG_EXPRESSION_BYTES_MAX + 1)), None);
    }
}
