// PGlite (WASM PostgreSQL) with TimescaleDB, served over the PostgreSQL wire protocol.
//
// Only for the `timescale` test tier (tests/timescale_server.py starts it); never for production.
// Usage: node server.mjs [--host 127.0.0.1] [--port 0] [--db memory://]
// Port 0 binds a free port. Once the extension is created and loaded, one line
// `READY {"host": ..., "port": ...}` is printed on stdout; SIGTERM/SIGINT stop it cleanly.
import { parseArgs } from "node:util";
import { PGlite } from "@electric-sql/pglite";
import { timescaledb } from "@electric-sql/pglite/timescaledb";
import { PGLiteSocketServer } from "@electric-sql/pglite-socket";

const { values } = parseArgs({
  options: {
    host: { type: "string", default: "127.0.0.1" },
    port: { type: "string", default: "0" },
    db: { type: "string", default: "memory://" },
    debug: { type: "boolean", default: false },
  },
});

const db = new PGlite(values.db, { extensions: { timescaledb } });
await db.waitReady;
// The build needs both: CREATE EXTENSION registers it, LOAD brings the library into this backend.
await db.exec("CREATE EXTENSION IF NOT EXISTS timescaledb;");
await db.exec("LOAD 'timescaledb';");

// PGlite is single-backend: one client connection at a time (a second one is refused).
const server = new PGLiteSocketServer({
  db,
  host: values.host,
  port: Number.parseInt(values.port, 10),
  maxConnections: 1,
  debug: values.debug,
});
server.addEventListener("listening", (event) => {
  process.stdout.write(`READY ${JSON.stringify(event.detail)}\n`);
});
server.addEventListener("error", (event) => {
  console.error("pglite server error:", event.detail);
});

let stopping = false;
async function shutdown(code) {
  if (stopping) return;
  stopping = true;
  try {
    await server.stop();
    await db.close();
  } catch (err) {
    console.error("pglite shutdown:", err);
  }
  process.exit(code);
}
process.on("SIGINT", () => shutdown(0));
process.on("SIGTERM", () => shutdown(0));
// When the parent (pytest) dies and closes our stdin, do not linger.
process.stdin.on("end", () => shutdown(0));
process.stdin.resume();

await server.start();
