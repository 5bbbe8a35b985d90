// Interop origin for cmd/internal/proctest (TestInterop): Node's own
// http.createServer, defaults unless a flag says otherwise.
//
//   node origin.js --port P [--keepalive-ms N]
//
// Prints "listening <port>" on stdout once it accepts connections. Routes:
//   /ok          "ok"
//   /static      small text with Last-Modified and ETag; If-Modified-Since or
//                If-None-Match matching them gives 304
//   /big         2 MiB of deterministic bytes with Content-Length
//   /echo        reads the request body; answers JSON {method,length,sha256}
//   /chunked     several res.write calls, no Content-Length (chunked)
//   /close       no Content-Length and no chunking: close-delimited body
//   /trailers    chunked body, then trailers (Trailer + res.addTrailers)
//   /204         204 No Content
//   /slow        head after 200 ms, then 4 writes 100 ms apart
//   /headers     150 response fields, more than 64 KiB of head
//   /reject      413 before reading the request body, the rest of which is
//                then discarded (with Expect: 100-continue: 413 instead of
//                100, from the checkContinue event)
// HEAD works on every route (Node drops the body).
'use strict';
const http = require('http');
const crypto = require('crypto');

function arg(name, def) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : def;
}

const lastModified = 'Wed, 01 Jan 2020 00:00:00 GMT';
const etag = '"static-v1"';
const staticBody = 'hello from node\n';

// 2 MiB: SHA-256 in counter mode, so every run serves the same bytes.
function deterministic(n, seed) {
  const out = Buffer.alloc(n);
  for (let off = 0, i = 0; off < n; i++) {
    const h = crypto.createHash('sha256').update(seed + ':' + i).digest();
    off += h.copy(out, off);
  }
  return out;
}
const big = deterministic(2 << 20, 'node-big');
const parts = ['first part\n', 'second part\n', 'third part\n', 'fourth part\n', 'last part\n'];

function readBody(req, done) {
  const h = crypto.createHash('sha256');
  let n = 0;
  req.on('data', (c) => { h.update(c); n += c.length; });
  req.on('end', () => done(n, h.digest('hex')));
}

function handle(req, res) {
  const path = req.url.split('?')[0];
  switch (path) {
    case '/ok':
      res.setHeader('Content-Type', 'text/plain');
      res.end('ok');
      return;
    case '/static':
      res.setHeader('Last-Modified', lastModified);
      res.setHeader('ETag', etag);
      if (req.headers['if-none-match'] === etag || req.headers['if-modified-since'] === lastModified) {
        res.statusCode = 304;
        res.end();
        return;
      }
      res.setHeader('Content-Type', 'text/plain');
      res.setHeader('Content-Length', Buffer.byteLength(staticBody));
      res.end(staticBody);
      return;
    case '/big':
      res.setHeader('Content-Type', 'application/octet-stream');
      res.setHeader('Content-Length', big.length);
      res.end(big);
      return;
    case '/echo':
      readBody(req, (n, sha) => {
        const body = JSON.stringify({ method: req.method, length: n, sha256: sha }) + '\n';
        res.setHeader('Content-Type', 'application/json');
        res.setHeader('Content-Length', Buffer.byteLength(body));
        res.end(body);
      });
      return;
    case '/chunked':
      res.setHeader('Content-Type', 'text/plain');
      for (const p of parts) res.write(p);
      res.end();
      return;
    case '/close':
      res.useChunkedEncodingByDefault = false;
      res.setHeader('Content-Type', 'text/plain');
      for (const p of parts) res.write(p);
      res.end();
      return;
    case '/trailers': {
      res.setHeader('Content-Type', 'text/plain');
      res.setHeader('Trailer', 'X-Checksum, X-Parts');
      const h = crypto.createHash('sha256');
      for (const p of parts) { res.write(p); h.update(p); }
      res.addTrailers({ 'X-Checksum': h.digest('hex'), 'X-Parts': String(parts.length) });
      res.end();
      return;
    }
    case '/204':
      res.statusCode = 204;
      res.end();
      return;
    case '/slow': {
      let i = 0;
      const tick = () => {
        if (i === 0) {
          res.setHeader('Content-Type', 'text/plain');
          res.flushHeaders();
        }
        if (i === parts.length) { res.end(); return; }
        res.write(parts[i++]);
        setTimeout(tick, 100);
      };
      setTimeout(tick, 200);
      return;
    }
    case '/headers':
      for (let i = 0; i < 150; i++) {
        res.setHeader('X-Field-' + String(i).padStart(3, '0'), 'v'.repeat(450));
      }
      res.setHeader('Content-Type', 'text/plain');
      res.end('many fields\n');
      return;
    case '/reject':
      // The whole answer goes out before any of the body is read. The
      // response is ended (and the connection, for a caller that does not
      // keep it, closed) only once the rest of the upload has arrived and
      // been discarded: a lingering close, as nginx does. Ending at once,
      // Node would close on the unread upload, and whether a client that
      // sends its whole body before reading (ab) sees the 413 or a reset
      // would be a race.
      res.writeHead(413, { 'Content-Type': 'text/plain', 'Content-Length': '10' });
      res.write('too large\n');
      req.on('end', () => res.end());
      req.on('close', () => res.end());
      req.resume();
      return;
    default:
      res.statusCode = 404;
      res.end('not found\n');
  }
}

const server = http.createServer(handle);
const ka = arg('--keepalive-ms');
if (ka !== undefined) server.keepAliveTimeout = Number(ka);
server.on('checkContinue', (req, res) => {
  if (req.url.split('?')[0] === '/reject') {
    // 413 instead of 100 Continue: the client sends no body.
    res.writeHead(413, { 'Content-Type': 'text/plain', 'Content-Length': '10' });
    res.end('too large\n');
    return;
  }
  res.writeContinue();
  handle(req, res);
});
server.listen(Number(arg('--port', '0')), '127.0.0.1', () => {
  process.stdout.write('listening ' + server.address().port + '\n');
});
process.on('SIGTERM', () => process.exit(0));
