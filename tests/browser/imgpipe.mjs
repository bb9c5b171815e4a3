// Runs `imgpipe serve` as a real process for the browser tests, and talks to its API with the admin key.
import { spawn } from 'node:child_process';
import { createWriteStream, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { createInterface } from 'node:readline';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../..');
export const imgpipeBin = process.env.IMGPIPE_BIN ?? join(repoRoot, 'build/release/src/cli/imgpipe');
export const corporaDir = process.env.IMGPIPE_CORPORA_DIR ?? resolve(repoRoot, '../shared/corpora');
export const artifactsDir = join(repoRoot, 'build/browser-artifacts');

const keyPattern = /\bimgp_[A-Za-z0-9_-]{43}(?![A-Za-z0-9_-])/;

/** Our environment without any IMGPIPE_* variable: imgpipe reads each one as a config key and refuses unknown ones. */
function childEnv() {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('IMGPIPE_')));
}

export class Server {
  /** Starts serve on 127.0.0.1, port 0, on a fresh data folder; resolves once /readyz is 200 and the key printed. */
  static async start({ logFile, timeoutMs = 60_000 } = {}) {
    const s = new Server();
    s.dataDir = mkdtempSync(join(tmpdir(), 'imgpipe-browser-'));
    s.proc = spawn(imgpipeBin, ['serve', '--listen', '127.0.0.1:0', '--data-dir', s.dataDir],
      { env: childEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
    s.exited = new Promise((res) => s.proc.on('exit', (code, signal) => res({ code, signal })));
    s.logLines = [];
    const log = logFile ? createWriteStream(logFile) : null;
    let port = null;
    let key = null;
    createInterface({ input: s.proc.stderr }).on('line', (line) => {
      s.logLines.push(line);
      log?.write(line + '\n');
      if (port === null && line.includes('"listening"')) {
        try {
          const rec = JSON.parse(line);
          if (rec.msg === 'listening' && rec.port) port = Number(rec.port);
        } catch {
          // not a JSON line
        }
      }
    });
    createInterface({ input: s.proc.stdout }).on('line', (line) => {
      const m = keyPattern.exec(line);
      if (m && !key) key = m[0];
    });
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      if (s.proc.exitCode !== null) throw new Error(`imgpipe serve exited early:\n${s.tail()}`);
      if (Date.now() > deadline) {
        s.proc.kill('SIGKILL');
        throw new Error(`imgpipe serve did not become ready:\n${s.tail()}`);
      }
      if (port !== null && key !== null) {
        try {
          if ((await fetch(`http://127.0.0.1:${port}/readyz`)).status === 200) break;
        } catch {
          // not accepting yet
        }
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    s.base = `http://127.0.0.1:${port}`;
    s.adminKey = key;
    return s;
  }

  tail(n = 30) {
    return this.logLines.slice(-n).join('\n');
  }

  /** SIGTERM and wait; the data folder is removed. Returns the exit code. */
  async stop() {
    if (this.proc.exitCode === null) this.proc.kill('SIGTERM');
    const timer = setTimeout(() => this.proc.kill('SIGKILL'), 30_000);
    const { code } = await this.exited;
    clearTimeout(timer);
    rmSync(this.dataDir, { recursive: true, force: true });
    return code;
  }

  async request(method, path, { key = this.adminKey, body, headers = {} } = {}) {
    return fetch(this.base + path, { method, body, headers: { Authorization: `Bearer ${key}`, ...headers } });
  }

  async json(method, path, opts = {}) {
    const res = await this.request(method, path, opts);
    const text = await res.text();
    if (!res.ok) throw new Error(`${method} ${path}: ${res.status} ${text.slice(0, 300)}`);
    return JSON.parse(text);
  }

  /** Uploads a corpus file (raw body); returns the 201 body. */
  async upload(relPath) {
    const bytes = readFileSync(join(corporaDir, relPath));
    const res = await this.request('POST', '/v1/images', { body: bytes });
    const text = await res.text();
    if (res.status !== 201) throw new Error(`upload of ${relPath}: ${res.status} ${text.slice(0, 300)}`);
    return { ...JSON.parse(text), file: basename(relPath) };
  }

  /** Polls until the image is processed or failed; returns its JSON. */
  async settle(id, timeoutMs = 120_000) {
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const image = await this.json('GET', `/v1/images/${id}`);
      if (image.status === 'processed' || image.status === 'failed') return image;
      if (Date.now() > deadline) throw new Error(`image ${id} still ${image.status} after ${timeoutMs} ms`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }

  async query(sql, params = []) {
    return this.json('POST', '/v1/query', { body: JSON.stringify({ sql, params }),
      headers: { 'Content-Type': 'application/json' } });
  }
}
