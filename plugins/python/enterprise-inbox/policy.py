"""Filter: delivers only messages whose `enterpriseId` property is in the binding's `enterprise_ids`
parameter (comma-separated) — each enterprise's inbox sees its own messages."""

import ferrymq_plugin as fp

_allowed = None


@fp.filter
def keep(message: fp.Message, config: fp.Config) -> bool:
    global _allowed
    if _allowed is None:  # parameters do not change for an instance: parse them once
        _allowed = frozenset(config.list("enterprise_ids"))
    return message.property("enterpriseId") in _allowed
