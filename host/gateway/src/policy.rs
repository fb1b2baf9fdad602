//! A forward's policy: a route-world plugin that judges each message before it crosses, swappable
//! on a running gateway. The plugin runs under the same sandbox, limits and failure policies as a
//! route plugin in the broker; its answer is checked before the gateway acts on it.

use std::sync::{Arc, RwLock};

use anyhow::Context;
use ferrymq_client::{Message, Received};
use ferrymq_plugin::{Grant, PluginEngine, PluginError, PluginLimits, PluginStats, RouteOutcome, RoutePlugin};
use ferrymq_policy::compile::Compiler;
use ferrymq_policy::config::{FailurePolicy, PluginKind};
use ferrymq_proto::plugin_batch::PluginMessage;
use ferrymq_proto::properties;
use ferrymq_proto::sync::{read, write};

use crate::config::PolicyConfig;

/// What the policy decided for one message.
#[derive(Debug)]
pub enum Verdict {
    /// Cross to these target topics, as `message` (changed when `changed`).
    Cross { message: Box<Message>, topics: Vec<String>, changed: bool },
    /// Not forwarded: refused by the policy.
    Reject(String),
    /// Not forwarded: dropped by the policy.
    Drop(String),
    /// Not forwarded: the policy failed and the forward's failure policy sets such messages aside.
    SetAside(String),
}

/// The plugin in force, with what identifies it.
#[derive(Clone)]
struct Current {
    plugin: RoutePlugin,
    digest: String,
}

/// One forward's policy.
pub struct Policy {
    engine: Arc<PluginEngine>,
    compiler: Compiler,
    name: String,
    limits: PluginLimits,
    grant: Grant,
    on_failure: FailurePolicy,
    current: RwLock<Current>,
}

impl Policy {
    /// Loads `config`'s component for the forward of `topic`.
    pub fn load(
        engine: Arc<PluginEngine>,
        compiler: Compiler,
        topic: &str,
        config: &PolicyConfig,
    ) -> anyhow::Result<Policy> {
        let bytes = std::fs::read(&config.component)
            .with_context(|| format!("read the policy component {}", config.component.display()))?;
        let name = format!("gateway-{topic}");
        let mut grant_config: Vec<(String, String)> =
            config.params.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        grant_config.push(("ferrymq.plugin".into(), name.clone()));
        let grant = Grant { config: grant_config, http_allowlist: Vec::new(), ..Grant::default() };
        let limits = config.limits.for_kind(PluginKind::Route);
        let current = bind(&engine, &compiler, &name, &bytes, &limits, &grant)
            .with_context(|| format!("load the policy {} of {topic}", config.component.display()))?;
        Ok(Policy {
            engine,
            compiler,
            name,
            limits,
            grant,
            on_failure: config.on_failure,
            current: RwLock::new(current),
        })
    }

    /// Replaces the plugin with the component `bytes`; the one in force stays if these cannot be
    /// bound. Messages already judged keep their verdict; every later one gets the new plugin's.
    pub fn replace(&self, bytes: &[u8]) -> anyhow::Result<String> {
        let next = bind(&self.engine, &self.compiler, &self.name, bytes, &self.limits, &self.grant)?;
        let digest = next.digest.clone();
        *write(&self.current) = next;
        Ok(digest)
    }

    /// SHA-256 of the component in force.
    pub fn digest(&self) -> String {
        read(&self.current).digest.clone()
    }

    pub fn stats(&self) -> PluginStats {
        read(&self.current).plugin.stats()
    }

    /// Judges `received` (to be sent as `message`) for `target_topic`; `Err` with the reason when
    /// the policy failed and the forward is fail-closed: the message waits and is judged again.
    /// Blocking: call it off the async runtime.
    pub fn judge(&self, received: &Received, mut message: Message, target_topic: &str) -> Result<Verdict, String> {
        let plugin = read(&self.current).plugin.clone();
        let failure = match ask(&plugin, received) {
            Ok(RouteOutcome::Accept { tag, set_properties, remove_properties, body }) => {
                match apply(&mut message, tag, set_properties, remove_properties, body) {
                    Ok(changed) => {
                        let topics = vec![target_topic.to_owned()];
                        return Ok(Verdict::Cross { message: Box::new(message), topics, changed });
                    }
                    Err(reason) => PluginError::BadOutput(reason),
                }
            }
            Ok(RouteOutcome::Redirect(topics)) => match topics.iter().find_map(|t| bad_topic(t)) {
                Some(reason) => PluginError::BadOutput(reason),
                None => return Ok(Verdict::Cross { message: Box::new(message), topics, changed: false }),
            },
            Ok(RouteOutcome::Reject(reason)) => return Ok(Verdict::Reject(reason)),
            Ok(RouteOutcome::Drop(reason)) => return Ok(Verdict::Drop(reason)),
            Err(err) => err,
        };
        let reason = format!("policy {} failed: {failure}", self.name);
        match self.on_failure {
            FailurePolicy::FailClosed => Err(reason),
            FailurePolicy::FailOpen => {
                let topics = vec![target_topic.to_owned()];
                Ok(Verdict::Cross { message: Box::new(message), topics, changed: false })
            }
            FailurePolicy::DeadLetter => Ok(Verdict::SetAside(reason)),
        }
    }
}

fn bind(
    engine: &PluginEngine,
    compiler: &Compiler,
    name: &str,
    bytes: &[u8],
    limits: &PluginLimits,
    grant: &Grant,
) -> anyhow::Result<Current> {
    compiler.compile(bytes)?;
    let loaded = engine.load(bytes)?;
    if loaded.world != ferrymq_plugin::World::Route {
        anyhow::bail!("a gateway policy must implement the route world, not {}", loaded.world.name());
    }
    let plugin = RoutePlugin::new(engine, name, &loaded, limits.clone(), grant.clone())?;
    Ok(Current { plugin, digest: loaded.digest })
}

fn ask(plugin: &RoutePlugin, received: &Received) -> Result<RouteOutcome, PluginError> {
    let mut props = Vec::new();
    properties::encode(received.properties.iter().map(|(k, v)| (k.as_str(), v.as_str())), &mut props)
        .map_err(|e| PluginError::BadOutput(format!("the message's properties cannot be encoded: {e}")))?;
    let keys = received.keys.join(" ");
    plugin.route(&PluginMessage {
        topic: &received.topic,
        tag: received.tag.as_deref().unwrap_or(""),
        keys: &keys,
        properties: &props,
        body: Some(&received.body),
        born_ms: received.born_ms.unwrap_or(0),
        store_ms: received.store_ms.unwrap_or(0),
        attempt: u32::try_from(received.delivery_attempt).unwrap_or(1),
    })
}

/// Why `topic` cannot be a redirect's target, if it cannot.
fn bad_topic(topic: &str) -> Option<String> {
    ferrymq_proto::name::problem(topic, ferrymq_proto::name::TOPIC_BYTES_MAX)
        .map(|problem| format!("redirect to topic {topic:?}: {problem}"))
}

/// Applies a route's changes to `message`; says whether anything changed. A change to a property
/// the broker reserves is refused, and then nothing is changed.
fn apply(
    message: &mut Message,
    tag: Option<String>,
    set_properties: Vec<(String, String)>,
    remove_properties: Vec<String>,
    body: Option<Vec<u8>>,
) -> Result<bool, String> {
    if let Some(name) =
        set_properties.iter().map(|(k, _)| k).chain(&remove_properties).find(|name| properties::is_reserved(name))
    {
        return Err(format!("property {name:?} is reserved for the broker"));
    }
    let mut changed = false;
    if let Some(tag) = tag {
        let tag = (!tag.is_empty()).then_some(tag);
        changed |= tag != message.tag;
        message.tag = tag;
    }
    let before = message.properties.clone();
    message.properties.retain(|(k, _)| !remove_properties.contains(k));
    for (name, value) in set_properties {
        match message.properties.iter_mut().find(|(k, _)| *k == name) {
            Some(slot) => slot.1 = value,
            None => message.properties.push((name, value)),
        }
    }
    changed |= message.properties != before;
    if let Some(body) = body {
        changed |= body != message.body;
        message.body = body;
    }
    Ok(changed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn changes_are_applied_and_reported_and_reserved_properties_refused() {
        let mut message = Message::new("t", b"id 110101199003071234".to_vec());
        message.properties = vec![("a".into(), "1".into()), ("b".into(), "2".into())];
        let original = message.clone();
        assert_eq!(apply(&mut message, None, Vec::new(), Vec::new(), None), Ok(false));
        assert_eq!(message.properties, original.properties);

        let changed = apply(
            &mut message,
            Some("redacted".into()),
            vec![("b".into(), "3".into()), ("c".into(), "4".into())],
            vec!["a".into()],
            Some(b"id ******************".to_vec()),
        );
        assert_eq!(changed, Ok(true));
        assert_eq!(message.tag.as_deref(), Some("redacted"));
        assert_eq!(message.properties, [("b".to_owned(), "3".to_owned()), ("c".to_owned(), "4".to_owned())]);
        assert_eq!(message.body, b"id ******************");

        let mut untouched = original.clone();
        let err = apply(&mut untouched, Some("x".into()), vec![("UNIQ_KEY".into(), "x".into())], Vec::new(), None)
            .expect_err("a reserved property");
        assert!(err.contains("reserved"), "{err}");
        assert_eq!((untouched.tag, untouched.properties), (original.tag, original.properties), "nothing changed");
    }

    #[test]
    fn redirects_name_valid_topics() {
        assert!(bad_topic("decisions").is_none());
        assert!(bad_topic("a/b").is_some());
        assert!(bad_topic("").is_some());
    }
}
