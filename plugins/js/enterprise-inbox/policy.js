// Filter: delivers only messages whose `enterpriseId` property is in the binding's
// `enterprise_ids` parameter (comma separated) — the Rust one is plugins/enterprise-inbox, the
// Python one plugins/python/enterprise-inbox: same parameter, same decisions.

let allowed = null;

export default function keep(message, config) {
  // Parameters do not change for an instance: parse them once.
  allowed ??= new Set(config.list("enterprise_ids"));
  return allowed.has(message.property("enterpriseId"));
}
