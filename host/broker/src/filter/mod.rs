//! Message filters: TAG expressions and the RocketMQ SQL92 subset.
//!
//! A subscription's filter is checked in two steps: [`Filter::may_match`] on the tag hash stored in the
//! consume queue (no record read), then [`Filter::matches`] on the record's properties.

pub mod sql;
#[cfg(test)]
mod sql_fuzz;
mod tag;

use ferrymq_proto::properties::{self, TAGS};

pub use sql::{EvalError, ParseError, SqlFilter};
pub use tag::TagFilter;

/// A subscription's filter.
#[derive(Clone, Debug)]
pub enum Filter {
    Tag(TagFilter),
    Sql(SqlFilter),
}

/// The outcome of checking one message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Verdict {
    Match,
    NoMatch,
    /// The SQL expression could not be evaluated on this message (not delivered, counted).
    Error(String),
}

impl Filter {
    /// Everything.
    pub fn all() -> Self {
        Filter::Tag(TagFilter::All)
    }

    /// Cheap pre-check on the queue entry's tag hash: `false` means certainly no match.
    pub fn may_match(&self, tag_hash: i64) -> bool {
        match self {
            Filter::Tag(tag) => tag.may_match(tag_hash),
            Filter::Sql(_) => true,
        }
    }

    /// The full check on the message's encoded properties.
    pub fn matches(&self, encoded_properties: &[u8]) -> Verdict {
        match self {
            Filter::Tag(tag) => {
                if tag.matches(properties::get(encoded_properties, TAGS)) {
                    Verdict::Match
                } else {
                    Verdict::NoMatch
                }
            }
            Filter::Sql(sql) => match sql.evaluate(|name| properties::get(encoded_properties, name)) {
                Ok(true) => Verdict::Match,
                Ok(false) => Verdict::NoMatch,
                Err(err) => Verdict::Error(err.to_string()),
            },
        }
    }
}
