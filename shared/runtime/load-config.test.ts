import { test } from "node:test";
import assert from "node:assert/strict";
import { mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { pathToFileURL } from "node:url";
import { loadMeshModule } from "./load-config.ts";

const CONFIG_INDEX = resolve(import.meta.dirname, "../config/index.ts");

async function folder(files: Record<string, string>): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), "weft-load-config-"));
  for (const [name, text] of Object.entries(files)) await writeFile(join(dir, name), text);
  return dir;
}

const mesh = (route: string) => `
import { defineMesh } from ${JSON.stringify(CONFIG_INDEX)};
import { upstream } from "./parts.ts";
export default defineMesh({
  services: { web: { endpoints: [{ address: upstream }] } },
  gateways: { edge: { listeners: [{ port: 8080 }], routes: [{ name: ${JSON.stringify(route)}, forward: { to: [{ service: "web" }] } }] } },
});
`;

test("a TypeScript config and the files it imports are read again at every load, and nothing is written beside them", async () => {
  const dir = await folder({ "weft.config.ts": mesh("first"), "parts.ts": `export const upstream: string = "127.0.0.1:9001";\n` });
  try {
    const url = pathToFileURL(join(dir, "weft.config.ts"));
    const first = await loadMeshModule(url);
    assert.ok(first.ok, JSON.stringify(first));
    assert.equal(first.value.gateways.edge!.routes[0]!.name, "first");
    assert.equal(first.value.services.web!.endpoints![0]!.address, "127.0.0.1:9001");

    await writeFile(join(dir, "weft.config.ts"), mesh("second"));
    await writeFile(join(dir, "parts.ts"), `export const upstream: string = "127.0.0.1:9002";\n`);
    const second = await loadMeshModule(url);
    assert.ok(second.ok, JSON.stringify(second));
    assert.equal(second.value.gateways.edge!.routes[0]!.name, "second");
    assert.equal(second.value.services.web!.endpoints![0]!.address, "127.0.0.1:9002", "an imported file is read again too");
    assert.deepEqual((await readdir(dir)).sort(), ["parts.ts", "weft.config.ts"]);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});

test("a config that does not compile, has no default export, or fails validation is refused with its problems", async () => {
  const dir = await folder({
    "syntax.ts": "export default {",
    "none.ts": "export const mesh = {};\n",
    "invalid.ts": `export default { gateways: { edge: { listeners: [], routes: [] } } };\n`,
  });
  try {
    const syntax = await loadMeshModule(pathToFileURL(join(dir, "syntax.ts")));
    assert.equal(syntax.ok, false);
    assert.equal(!syntax.ok && syntax.issues[0]!.path, "(file)");
    const none = await loadMeshModule(pathToFileURL(join(dir, "none.ts")));
    assert.equal(none.ok, false);
    assert.match(!none.ok ? none.issues[0]!.message : "", /no default export/);
    const invalid = await loadMeshModule(pathToFileURL(join(dir, "invalid.ts")));
    assert.equal(invalid.ok, false);
    assert.ok(!invalid.ok && invalid.issues.some((i) => i.path === "gateways.edge.listeners"), JSON.stringify(invalid));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
