// The mesh view: one self-contained page (no build step), polling /api/graph every two seconds and
// drawing the service graph as SVG. Nodes and edges carry data-* attributes for tests and tooling.
export const MESH_VIEW_PAGE = `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>weft mesh</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
  body { font: 14px/1.4 system-ui, sans-serif; margin: 0; color: #1d2433; background: #f6f7f9; }
  header { padding: 12px 20px; background: #1d2433; color: #fff; display: flex; gap: 16px; align-items: baseline; }
  header h1 { font-size: 18px; margin: 0; }
  main { display: grid; grid-template-columns: minmax(420px, 3fr) minmax(300px, 2fr); gap: 16px; padding: 16px 20px; }
  section { background: #fff; border-radius: 6px; padding: 12px 16px; box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  h2 { font-size: 15px; margin: 0 0 8px; }
  svg { width: 100%; height: 520px; }
  .node circle { fill: #e8f0fe; stroke: #3b6fd8; stroke-width: 2; }
  .node.gateway circle { fill: #fdf1e3; stroke: #d98b2b; }
  .node.clients circle { fill: #eee; stroke: #888; }
  .node text { font-size: 13px; text-anchor: middle; }
  .edge line { stroke: #7a8599; stroke-width: 2; marker-end: url(#arrow); }
  .edge.errors line { stroke: #d33; }
  .edge text { font-size: 11px; fill: #444; text-anchor: middle; }
  table { border-collapse: collapse; width: 100%; font-size: 13px; }
  th, td { text-align: left; padding: 3px 6px; border-bottom: 1px solid #eee; }
  .SYNCED { color: #1a7f37; } .STALE, .WAITING { color: #9a6700; } .NACK, .GONE { color: #cf222e; }
  #updated { opacity: .7; font-size: 12px; }
</style>
</head>
<body>
<header><h1>weft mesh</h1><span id="updated">loading…</span></header>
<main>
  <section><h2>Service graph</h2>
    <svg id="graph" viewBox="0 0 800 520" role="img" aria-label="service graph">
      <defs><marker id="arrow" viewBox="0 0 10 10" refX="10" refY="5" markerWidth="7" markerHeight="7" orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#7a8599"/></marker></defs>
      <g id="edges"></g><g id="nodes"></g>
    </svg>
  </section>
  <div>
    <section><h2>Proxies</h2><table id="proxies"><thead><tr><th>proxy</th><th>workload</th><th>revision</th><th>sync</th></tr></thead><tbody></tbody></table></section>
    <section style="margin-top:16px"><h2>Recent denials</h2><table id="denials"><thead><tr><th>time</th><th>source → destination</th><th>request</th><th>code</th></tr></thead><tbody></tbody></table></section>
  </div>
</main>
<script>
const NS = "http://www.w3.org/2000/svg";
const el = (name, attrs, parent) => { const e = document.createElementNS(NS, name); for (const k in attrs) e.setAttribute(k, attrs[k]); parent.appendChild(e); return e; };
const text = (s) => document.createTextNode(s);
function layout(nodes) {
  // Clients on the left, gateways next, services on a circle to the right.
  const pos = {}; const cx = 520, cy = 260, r = 200;
  const services = nodes.filter((n) => n.kind === "service");
  nodes.filter((n) => n.kind === "clients").forEach((n, i) => (pos[n.name] = [70, 260 + i * 80]));
  nodes.filter((n) => n.kind === "gateway").forEach((n, i) => (pos[n.name] = [220, 180 + i * 160]));
  services.forEach((n, i) => { const a = -Math.PI / 2 + (2 * Math.PI * i) / Math.max(services.length, 1); pos[n.name] = [cx + r * Math.cos(a) * 0.8, cy + r * Math.sin(a)]; });
  return pos;
}
function render(g) {
  const pos = layout(g.nodes);
  const edges = document.getElementById("edges"), nodes = document.getElementById("nodes");
  edges.replaceChildren(); nodes.replaceChildren();
  for (const e of g.edges) {
    const a = pos[e.source], b = pos[e.destination]; if (!a || !b) continue;
    const dx = b[0] - a[0], dy = b[1] - a[1], len = Math.hypot(dx, dy) || 1, k = 34 / len;
    const grp = el("g", { class: "edge" + (e.errorRate > 0 ? " errors" : ""), "data-source": e.source, "data-destination": e.destination, "data-rps": e.rps.toFixed(2), "data-error-rate": e.errorRate.toFixed(4), "data-p99-ms": String(e.p99Ms) }, edges);
    el("line", { x1: a[0] + dx * k, y1: a[1] + dy * k, x2: b[0] - dx * k, y2: b[1] - dy * k }, grp);
    el("text", { x: (a[0] + b[0]) / 2, y: (a[1] + b[1]) / 2 - 6 }, grp).appendChild(text(e.rps.toFixed(1) + " rps · " + (e.errorRate * 100).toFixed(1) + "% err · p99 " + e.p99Ms.toFixed(1) + " ms"));
  }
  for (const n of g.nodes) {
    const p = pos[n.name]; if (!p) continue;
    const grp = el("g", { class: "node " + n.kind, "data-name": n.name, "data-kind": n.kind, "data-proxies": String(n.proxies.length) }, nodes);
    el("circle", { cx: p[0], cy: p[1], r: 30 }, grp);
    el("text", { x: p[0], y: p[1] + 4 }, grp).appendChild(text(n.name));
    const revs = [...new Set(n.proxies.map((x) => "r" + x.revision))].join(" ");
    if (revs) el("text", { x: p[0], y: p[1] + 48 }, grp).appendChild(text(n.proxies.length + " proxy · " + revs));
  }
  const rows = g.nodes.flatMap((n) => n.proxies.map((x) => "<tr><td>" + esc(x.proxyId) + "</td><td>" + esc(n.name) + "</td><td>" + x.revision + "</td><td class=\\"" + x.sync + "\\">" + x.sync + "</td></tr>"));
  document.querySelector("#proxies tbody").innerHTML = rows.join("");
  document.querySelector("#denials tbody").innerHTML = g.denials.slice().reverse().map((d) => "<tr><td>" + new Date(d.at).toLocaleTimeString() + "</td><td>" + esc(d.source) + " → " + esc(d.destination) + "</td><td>" + esc(d.method + " " + d.path) + "</td><td>" + d.status + " " + esc(d.reason) + "</td></tr>").join("");
  document.getElementById("updated").textContent = "updated " + new Date(g.generatedAt).toLocaleTimeString();
}
function esc(s) { return String(s).replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]); }
async function tick() {
  try { const r = await fetch("api/graph"); if (r.ok) render(await r.json()); } catch (e) { document.getElementById("updated").textContent = "offline"; }
  setTimeout(tick, 2000);
}
tick();
</script>
</body>
</html>
`;
