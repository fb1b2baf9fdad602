"""Route: a message with a `region` property goes to `<topic>-<region>` instead of its topic; one
without is stored as sent. (The Rust one is plugins/route-by-region.)"""

import ferrymq_plugin as fp


@fp.route
def decide(message: fp.Message, config: fp.Config) -> fp.RouteDecision:
    region = message.property("region")
    if region:
        return fp.Redirect([f"{message.topic}-{region}"])
    return fp.Accept()
