// Start Node-RED as node-red/red.js does for settings.js (an express app, the flow's HTTP
// nodes at httpNodeRoot, no editor), through Node-RED's embedding API: red.js refuses to
// start on a Node.js older than 22.9, the embedding API only logs it, and this machine has
// Node.js 20. Usage: node run.js USER_DIR (the port and the rest: settings.js).
const http = require("http");
const express = require("express");
const RED = require("node-red");
const settings = require("./settings.js");

settings.userDir = process.argv[2];
const app = express();
app.set("x-powered-by", false);
const server = http.createServer((req, res) => app(req, res));
server.setMaxListeners(0);
RED.init(server, settings);
app.use(settings.httpNodeRoot, RED.httpNode);

function stop() {
    server.close();
    RED.stop().then(() => process.exit(0), () => process.exit(1));
}
process.on("SIGTERM", stop);
process.on("SIGINT", stop);

RED.start().then(
    () => server.listen(settings.uiPort, settings.uiHost),
    (err) => {
        console.error(err);
        process.exit(1);
    },
);
