// A Cosmos DB API server on loopback for the Cosmos DB sink tests: the MIT-licensed
// @vercel/cosmosdb-server over plain HTTP, in memory, with the few adjustments the Rust SDK
// needs from it. Usage: node server.js [PORT] [HOST]   (port 0 picks a free one)
// It prints one line `listening http://HOST:PORT/` once it accepts connections.
"use strict";

const { createHttpServer } = require("@vercel/cosmosdb-server");

const port = Number(process.argv[2] || 0);
const host = process.argv[3] || "127.0.0.1";

// The package serves keep-alive only when asked; the SDK pools its connections.
const server = createHttpServer({ keepAlive: true });
const [handle] = server.listeners("request");
server.removeAllListeners("request");

server.on("request", (req, res) => {
  // The SDK addresses a query to one partition-key range with this header and no partition key;
  // the package would refuse it as "missing partition keys".
  if (req.headers["x-ms-documentdb-partitionkeyrangeid"] !== undefined) {
    req.headers["x-ms-documentdb-query-enablecrosspartition"] = "true";
  }
  const path = (req.url || "").split("?")[0];
  const isAccount = req.method === "GET" && (path === "/" || path === "");
  const isRanges = req.method === "GET" && /\/pkranges\/?$/.test(path);
  if (isAccount || isRanges) {
    const end = res.end.bind(res);
    res.end = (body, ...rest) => {
      try {
        const doc = JSON.parse(String(body));
        if (isAccount) {
          // The package advertises https:// endpoints even when it serves plain HTTP.
          for (const list of [doc.writableLocations, doc.readableLocations]) {
            for (const loc of list || []) {
              loc.databaseAccountEndpoint = String(loc.databaseAccountEndpoint).replace(/^https:/, "http:");
            }
          }
        }
        if (isRanges) {
          // Partition-key-range ids are strings in the real service.
          for (const r of doc.PartitionKeyRanges || []) {
            r.id = String(r.id);
            r.parents = (r.parents || []).map(String);
          }
        }
        body = JSON.stringify(doc);
      } catch (e) {
        // Not JSON: pass it through unchanged.
      }
      return end(body, ...rest);
    };
  }
  handle(req, res);
});

server.keepAliveTimeout = 65000;
server.listen(port, host, () => {
  const addr = server.address();
  process.stdout.write(`listening http://${addr.address}:${addr.port}/\n`);
});

for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => process.exit(0));
}
