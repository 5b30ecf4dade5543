import { spawn } from 'node:child_process';
import http from 'node:http';

/** GET a path of an HTTP listener: status, content type and body. */
export function httpGet(address: string, path: string, method = 'GET'): Promise<{ status: number; type: string; body: string }> {
  const colon = address.lastIndexOf(':');
  return new Promise((resolve, reject) => {
    const req = http.request({ host: address.slice(0, colon), port: Number(address.slice(colon + 1)), path, method }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type'] ?? ''), body: Buffer.concat(chunks).toString('utf8') }));
      res.on('error', reject);
    });
    req.on('error', reject);
    req.end();
  });
}

/** `promtool check metrics` on a scrape (Debian's prometheus package): its exit code and what it said. */
export function promtoolCheck(text: string): Promise<{ code: number | null; output: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn('promtool', ['check', 'metrics'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let output = '';
    child.stdout.on('data', (c: Buffer) => (output += c.toString()));
    child.stderr.on('data', (c: Buffer) => (output += c.toString()));
    child.on('error', (err) => reject(new Error(`promtool: ${err.message} (install Debian's prometheus package: scripts/setup.sh does)`)));
    child.on('close', (code) => resolve({ code, output }));
    child.stdin.end(text);
  });
}

/** A scrape, checked by promtool, with a reader of its samples. */
export interface Scrape {
  readonly text: string;
  /** The value of `name` whose labels include all of `labels`; undefined when absent (several match: their sum). */
  value(name: string, labels?: Record<string, string>): number | undefined;
}

export async function scrape(address: string): Promise<Scrape> {
  const res = await httpGet(address, '/metrics');
  if (res.status !== 200) throw new Error(`scrape of ${address}: HTTP ${res.status}`);
  if (!res.type.startsWith('text/plain; version=0.0.4')) throw new Error(`scrape of ${address}: content type ${res.type}`);
  const check = await promtoolCheck(res.body);
  if (check.code !== 0) throw new Error(`promtool check metrics failed on ${address}:\n${check.output}`);
  const samples: Array<{ name: string; labels: Record<string, string>; value: number }> = [];
  for (const line of res.body.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$/.exec(line);
    if (!m) throw new Error(`scrape of ${address}: cannot read ${JSON.stringify(line)}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g)) labels[l[1]!] = l[2]!;
    samples.push({ name: m[1]!, labels, value: m[3] === '+Inf' ? Infinity : Number(m[3]) });
  }
  return {
    text: res.body,
    value: (name, want = {}) => {
      const hits = samples.filter((s) => s.name === name && Object.entries(want).every(([k, v]) => s.labels[k] === v));
      return hits.length === 0 ? undefined : hits.reduce((a, s) => a + s.value, 0);
    },
  };
}
