//! The tag hash stored in every consume-queue entry.
//!
//! RocketMQ stores Java's `String.hashCode` of the tag, sign-extended to 64 bits, so that a broker can
//! pre-filter on the hash before comparing strings. ferrymq uses the same function so that queue files and
//! filter expressions mean the same thing to tools that know RocketMQ.

/// Java's `String.hashCode` of `tag` (over UTF-16 code units), widened to `i64`.
pub fn tag_hash(tag: &str) -> i64 {
    let mut hash: i32 = 0;
    for unit in tag.encode_utf16() {
        hash = hash.wrapping_mul(31).wrapping_add(i32::from(unit));
    }
    i64::from(hash)
}

#[cfg(test)]
mod tests {
    use super::tag_hash;

    #[test]
    fn tag_hash_matches_java_string_hash_code() {
        // Values of "".hashCode(), "TagA".hashCode() and the classic colliding pair in Java.
        assert_eq!(tag_hash(""), 0);
        assert_eq!(tag_hash("TagA"), 2_598_919);
        assert_eq!(tag_hash("Aa"), tag_hash("BB"));
        assert_eq!(tag_hash("Aa"), 2112);
        // Non-ASCII tags hash by UTF-16 code unit, including surrogate pairs.
        assert_eq!(tag_hash("é"), 233);
        assert_eq!(tag_hash("😀"), 0xD83D * 31 + 0xDE00);
        // Long tags wrap like Java's 32-bit arithmetic.
        assert_eq!(tag_hash("polygenelubricants"), i64::from(i32::MIN));
    }
}
