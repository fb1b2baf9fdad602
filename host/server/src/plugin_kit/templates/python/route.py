"""Route: a message without an `enterpriseId` property is refused (the producer gets the reason),
one tagged `test` is dropped, every other one is stored with a `checked=yes` property added."""

import ferrymq_plugin as fp


@fp.route
def decide(message: fp.Message, config: fp.Config) -> fp.RouteDecision:
    if message.property("enterpriseId") is None:
        return fp.Reject("a message needs an enterpriseId property")
    if message.tag == "test":
        return fp.Drop("test message")
    return fp.Accept(set_properties={"checked": "yes"})
