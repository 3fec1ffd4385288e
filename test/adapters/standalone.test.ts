import { startServiceServer } from "../../src/server/service-server.js";
import { adapterSuite } from "./suite.js";

adapterSuite("standalone server", async ({ services, tls, logger }) => {
  const server = await startServiceServer({
    ...services,
    port: 0,
    tls,
    logger,
    shutdownTimeoutMs: 3_000,
    clientBundle: false,
    requestHandler: (req, res) => {
      if (req.url === "/health") res.end("ok");
      else res.writeHead(404).end();
    },
  });
  return { port: server.port, middleware: false, close: () => server.shutdown() };
});
