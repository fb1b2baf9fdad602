//! Unit-testing a policy natively (`cargo test`, no broker, no Wasm): build messages, encode them
//! as the broker does, and run the policy's function through the same code the component runs.
//!
//! ```
//! use ferrymq_plugin_sdk::testing::{Sample, filter};
//!
//! let keep = |m: &ferrymq_plugin_sdk::Message<'_>, c: &ferrymq_plugin_sdk::Config| {
//!     m.property("enterpriseId").is_some_and(|id| c.list("enterprise_ids").any(|a| a == id))
//! };
//! let samples = [Sample::new("inbox").property("enterpriseId", "E1"), Sample::new("inbox")];
//! assert_eq!(filter(keep, &samples, &[("enterprise_ids", "E1")]), [true, false]);
//! ```

use crate::batch::{Batch, Message};
use crate::config::Config;
use crate::{Resolution, RouteDecision};

/// A message to test with.
#[derive(Clone, Debug, Default)]
pub struct Sample {
    pub topic: String,
    pub tag: String,
    pub keys: Vec<String>,
    pub properties: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub born_ms: i64,
}

impl Sample {
    pub fn new(topic: &str) -> Self {
        Self { topic: topic.to_owned(), ..Self::default() }
    }
    pub fn tag(mut self, tag: &str) -> Self {
        self.tag = tag.to_owned();
        self
    }
    pub fn key(mut self, key: &str) -> Self {
        self.keys.push(key.to_owned());
        self
    }
    pub fn property(mut self, name: &str, value: &str) -> Self {
        self.properties.push((name.to_owned(), value.to_owned()));
        self
    }
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }
}

fn put_str(out: &mut Vec<u8>, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    out.extend_from_slice(&(s.len() as u16).to_le_bytes());
    out.extend_from_slice(s);
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u32).to_le_bytes());
    out.extend_from_slice(b);
}

/// The samples in the batch encoding (docs/plugins.md), bodies included, with `attempt`.
pub fn batch(samples: &[Sample], attempt: u32) -> Vec<u8> {
    let mut out = (samples.len() as u32).to_le_bytes().to_vec();
    for s in samples {
        let mut m = Vec::new();
        m.extend_from_slice(&0u32.to_le_bytes());
        m.extend_from_slice(&s.born_ms.to_le_bytes());
        m.extend_from_slice(&0i64.to_le_bytes());
        m.extend_from_slice(&attempt.to_le_bytes());
        put_str(&mut m, &s.topic);
        put_str(&mut m, &s.tag);
        put_str(&mut m, &s.keys.join(" "));
        let properties: Vec<u8> =
            s.properties.iter().flat_map(|(k, v)| [k.as_bytes(), b"\x01", v.as_bytes(), b"\x02"].concat()).collect();
        put_bytes(&mut m, &properties);
        put_bytes(&mut m, &s.body);
        put_bytes(&mut out, &m);
    }
    out
}

fn config(params: &[(&str, &str)]) -> Config {
    Config::from_params(params.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect())
}

fn messages(buf: &[u8]) -> Vec<Message<'_>> {
    Batch::parse(buf, None).map(|b| b.iter().collect()).unwrap_or_default()
}

/// What a filter decides for each sample (true delivers), with the binding's `params`.
pub fn filter(keep: impl Fn(&Message<'_>, &Config) -> bool, samples: &[Sample], params: &[(&str, &str)]) -> Vec<bool> {
    let buf = batch(samples, 1);
    let config = config(params);
    messages(&buf).iter().map(|m| keep(m, &config)).collect()
}

/// What a route decides for a sample.
pub fn route(
    decide: impl Fn(&Message<'_>, &Config) -> RouteDecision,
    sample: &Sample,
    params: &[(&str, &str)],
) -> RouteDecision {
    let buf = batch(std::slice::from_ref(sample), 0);
    let all = messages(&buf);
    decide(&all[0], &config(params))
}

/// What a tx-check resolves for a sample's transaction.
pub fn tx_check(
    check: impl Fn(&str, &Message<'_>, &Config) -> Resolution,
    transaction_id: &str,
    sample: &Sample,
    params: &[(&str, &str)],
) -> Resolution {
    let buf = batch(std::slice::from_ref(sample), 0);
    let all = messages(&buf);
    check(transaction_id, &all[0], &config(params))
}
