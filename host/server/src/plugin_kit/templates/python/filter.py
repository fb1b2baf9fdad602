"""Filter: delivers a message to the consumer group only when its `enterpriseId` property is one of
the binding's `enterprise_ids` parameter (comma separated); the rest are withheld from the group."""

import ferrymq_plugin as fp


@fp.filter
def keep(message: fp.Message, config: fp.Config) -> bool:
    return message.property("enterpriseId") in config.list("enterprise_ids")
