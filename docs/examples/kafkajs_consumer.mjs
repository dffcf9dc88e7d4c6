// Subscribe to a hivepipe topic with kafkajs: one line per message, key TAB value.
//
//     npm install kafkajs && node kafkajs_consumer.mjs BOOTSTRAP [TOPIC] [GROUP]
//
// BOOTSTRAP is HIVEPIPE_KAFKA, or under `make run` the embedded broker's address:
// `jq -r .kafka .hivepipe/urls.json`. docs/topics.md says why the session timeout is set.
import { Kafka, logLevel } from "kafkajs";

const [bootstrap, topic = "hivepipe.readings", group = "my-subscriber"] = process.argv.slice(2);
const kafka = new Kafka({ clientId: group, brokers: bootstrap.split(","), logLevel: logLevel.WARN });
const consumer = kafka.consumer({
  groupId: group,
  // The embedded broker answers a group join after half the session timeout: 3 s here
  // instead of 15 s with kafkajs' default 30 s (6 s: a Kafka cluster's minimum).
  sessionTimeout: 6000,
  heartbeatInterval: 2000,
});
await consumer.connect();
await consumer.subscribe({ topics: [topic], fromBeginning: true });
await consumer.run({
  eachMessage: async ({ message }) => {
    const value = JSON.parse(message.value.toString()); // docs/schemas/<topic>.schema.json
    console.log(`${message.key?.toString() ?? ""}\t${JSON.stringify(value)}`);
  },
});
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => consumer.disconnect().then(() => process.exit(0)));
}
