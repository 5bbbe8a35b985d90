// Interop client for cmd/internal/proctest (TestInterop): one request with
// Node's fetch (undici) or http.request, result as one JSON line on stdout.
//
//   node [--max-http-header-size=N] client.js --lib fetch|http --url URL
//       [--method M] [--header 'Name: value']... [--body-file F]
//       [--chunked] [--expect] [--close]
//
// --chunked sends the body file as a stream without a length (chunked);
// --expect (http only) sends Expect: 100-continue and writes the body on
// the 'continue' event, or not at all if a final response comes first;
// --close adds Connection: close.
//
// Output: {"status", "headers": [[name, value]...], "trailers": [...],
// "interim": [codes], "body_len", "body_sha256", "body_b64" (bodies up to
// 64 KiB), "error"}; error is null when
// the exchange completed. fetch exposes no trailers.
'use strict';
const fs = require('fs');
const http = require('http');
const crypto = require('crypto');

const a = { header: [] };
for (let i = 2; i < process.argv.length; i++) {
  const k = process.argv[i].replace(/^--/, '');
  if (k === 'chunked' || k === 'expect' || k === 'close') a[k] = true;
  else if (k === 'header') a.header.push(process.argv[++i]);
  else a[k.replace(/-(.)/g, (_, c) => c.toUpperCase())] = process.argv[++i];
}
a.method = a.method || 'GET';

const result = { status: 0, headers: [], trailers: [], interim: [], body_len: 0, body_sha256: '', body_b64: '', error: null };

// consume hashes a body chunk by chunk, keeping it when small (up to 64 KiB).
function consumer() {
  const h = crypto.createHash('sha256');
  const small = [];
  return {
    add(c) {
      h.update(c);
      result.body_len += c.length;
      if (result.body_len <= 65536) small.push(Buffer.from(c));
    },
    done() {
      result.body_sha256 = h.digest('hex');
      if (result.body_len <= 65536) result.body_b64 = Buffer.concat(small).toString('base64');
    },
  };
}

function headersOf() {
  const h = {};
  for (const line of a.header) {
    const i = line.indexOf(':');
    h[line.slice(0, i).trim()] = line.slice(i + 1).trim();
  }
  if (a.close) h['Connection'] = 'close';
  return h;
}

function pairs(raw) {
  const out = [];
  for (let i = 0; i < raw.length; i += 2) out.push([raw[i], raw[i + 1]]);
  return out;
}

async function withFetch() {
  const init = { method: a.method, headers: headersOf() };
  if (a.bodyFile) {
    if (a.chunked) {
      const stream = fs.createReadStream(a.bodyFile, { highWaterMark: 65536 });
      init.body = require('stream').Readable.toWeb(stream);
      init.duplex = 'half';
    } else {
      init.body = fs.readFileSync(a.bodyFile);
    }
  }
  const res = await fetch(a.url, init);
  result.status = res.status;
  for (const [k, v] of res.headers) result.headers.push([k, v]);
  const body = consumer();
  if (res.body) {
    for await (const c of res.body) body.add(c);
  }
  body.done();
}

function withHTTP() {
  return new Promise((resolve, reject) => {
    const headers = headersOf();
    let body = null;
    if (a.bodyFile && !a.chunked) {
      body = fs.readFileSync(a.bodyFile);
      headers['Content-Length'] = String(body.length);
    }
    if (a.expect) headers['Expect'] = '100-continue';
    const req = http.request(a.url, { method: a.method, headers, agent: new http.Agent({ keepAlive: false }) });
    // The body goes once: at once, on 100 Continue, or (like curl, RFC 9110
    // 10.1.1) after a second without one, for origins that never send it
    // (HTTP/1.0 ones). A final answer that comes first means no body.
    let sent = false;
    const send = () => {
      if (sent) return;
      sent = true;
      if (!a.bodyFile) { req.end(); return; }
      if (body) { req.end(body); return; }
      fs.createReadStream(a.bodyFile, { highWaterMark: 65536 }).pipe(req);
    };
    const expectTimer = a.expect ? setTimeout(send, 1000) : null;
    req.on('information', (info) => result.interim.push(info.statusCode));
    req.on('continue', send);
    req.on('response', (res) => {
      if (expectTimer) clearTimeout(expectTimer);
      if (!sent) { sent = true; req.end(); }
      result.status = res.statusCode;
      result.headers = pairs(res.rawHeaders);
      const out = consumer();
      res.on('data', (c) => out.add(c));
      res.on('end', () => {
        result.trailers = pairs(res.rawTrailers);
        out.done();
        if (!res.complete) reject(new Error('response ended before it was complete'));
        else resolve();
      });
      res.on('error', reject);
      res.on('aborted', () => reject(new Error('response aborted')));
    });
    req.on('error', reject);
    req.setTimeout(60000, () => req.destroy(new Error('client timeout')));
    if (!a.expect) send();
    else req.flushHeaders();
  });
}

(a.lib === 'fetch' ? withFetch() : withHTTP())
  .catch((e) => {
    const cause = e.cause ? ' (' + (e.cause.code || e.cause.message) + ')' : '';
    result.error = (e.code || e.name) + ': ' + e.message + cause;
  })
  .finally(() => {
    process.stdout.write(JSON.stringify(result) + '\n');
  });
