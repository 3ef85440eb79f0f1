import { after, before } from "node:test";
import { runBusConformance } from "../../shared/bus/bus.conformance.ts";
import { connectNatsBus } from "../../shared/bus/index.ts";
import { startNatsServer, type NatsServer } from "../harness/nats-server.ts";

let server: NatsServer;
before(async () => {
  server = await startNatsServer();
});
after(async () => {
  await server?.stop();
});

runBusConformance("nats", async () => {
  const bus = await connectNatsBus({ servers: server.url, name: "conformance-1" });
  const bus2 = await connectNatsBus({ servers: server.url, name: "conformance-2" });
  return {
    bus,
    bus2,
    async cleanup() {
      await bus.close();
      await bus2.close();
    },
  };
});
