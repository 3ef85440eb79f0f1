// The benchmark's upstream: a plain node:http server answering every request with a small body,
// on each port given (the weft gateway balances over two of them).
// usage: node bench/upstream.ts PORT [PORT...]
import http from "node:http";

const body = Buffer.from("hello from the upstream\n");
for (const port of process.argv.slice(2).map(Number)) {
  http
    .createServer((req, res) => {
      req.resume();
      res.writeHead(200, { "content-type": "text/plain", "content-length": body.length });
      res.end(body);
    })
    .listen(port, "127.0.0.1");
}
