// Node-RED settings of the bench's flow (bench/nodered.py starts it through run.js).
// No editor and no admin API: the flow is flows.json, as committed. The environment gives the
// port (NODERED_PORT), PostgreSQL (NODERED_PG_URL, read by the flow's INSERT node) and the
// callback token (NODERED_CALLBACK_TOKEN, read by its decode node).
const path = require("path");

module.exports = {
    uiHost: "127.0.0.1",
    uiPort: Number(process.env.NODERED_PORT || 1880),
    httpAdminRoot: false,
    httpNodeRoot: "/",
    flowFile: path.join(__dirname, "flows.json"),
    credentialSecret: false,
    // Function nodes get `pg` from here (global.get("pg")); no modules installed at run time.
    functionExternalModules: false,
    functionGlobalContext: { pg: require("pg") },
    externalModules: { autoInstall: false, palette: { allowInstall: false } },
    diagnostics: { enabled: false, ui: false },
    runtimeState: { enabled: false, ui: false },
    telemetry: { enabled: false, updateNotification: false },
    editorTheme: { tours: false, projects: { enabled: false } },
    logging: { console: { level: "warn", metrics: false, audit: false } },
};
