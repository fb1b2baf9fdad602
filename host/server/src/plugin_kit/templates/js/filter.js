// Filter: delivers a message to the consumer group only when its `enterpriseId` property is one of
// the binding's `enterprise_ids` parameter (comma separated); the rest are withheld from the group.

export default function keep(message, config) {
  return config.list("enterprise_ids").includes(message.property("enterpriseId"));
}
