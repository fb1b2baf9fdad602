// Route: a message without an `enterpriseId` property is refused (the producer gets the reason),
// one tagged `test` is dropped, every other one is stored with a `checked=yes` property added.

import { accept, drop, reject } from "./.ferrymq/js/ferrymq-plugin.js";

export default function decide(message, config) {
  if (message.property("enterpriseId") === null) return reject("a message needs an enterpriseId property");
  if (message.tag === "test") return drop("test message");
  return accept({ setProperties: { checked: "yes" } });
}
