/**
 * A seeded HTTP fuzzer for the registry server: random methods, paths built from the route templates
 * (the OpenAPI document's paths and the OSTree layout) with mutated segments, random headers
 * (tokens of every kind, ranges, validators), and random bodies, among them well-formed packs whose
 * records are corrupt and objects whose bytes do not match their name.
 *
 * Requests go in process (`app.request`) or over a real socket as raw bytes, where the framing can
 * lie: a Content-Length shorter or longer than the body, chunked encoding with bad chunk sizes, a
 * client that hangs up mid-body. The same seed gives the same requests, so a failure names its seed
 * and reproduces.
 */
import { Socket } from 'node:net';
import { OPENAPI } from '../../server/openapi.js';
import { type Checksum, OBJECT_TYPES } from '../../src/objects/index.js';
import { KIND, PackWriter } from '../../src/pack/index.js';

export type Rng = () => number;

/** mulberry32: small, fast, good enough to spread requests; seeds are 32-bit. */
export function seeded(seed: number): Rng {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

const int = (rng: Rng, lo: number, hi: number): number => lo + Math.floor(rng() * (hi - lo + 1));
const pick = <T>(rng: Rng, xs: readonly T[]): T => xs[Math.floor(rng() * xs.length)]!;
const hex = (rng: Rng, n: number): string => {
  let s = '';
  for (let i = 0; i < n; i++) s += '0123456789abcdef'[int(rng, 0, 15)];
  return s;
};
const bytes = (rng: Rng, n: number): Buffer => {
  const b = Buffer.allocUnsafe(n);
  for (let i = 0; i < n; i++) b[i] = int(rng, 0, 255);
  return b;
};

export interface FuzzWorld {
  ref: string;
  commits: Checksum[];
  /** `<sha>.<type>` of stored objects. */
  objects: string[];
  /** Stored bytes by object id: for bodies that are right, or nearly right. */
  stored: Map<string, Buffer>;
  /**
   * Tokens the fuzzer may present, valid ones first (two): none of them can move a ref it can name.
   */
  tokens: string[];
}

export interface FuzzRequest {
  method: string;
  /** The request target as sent: may hold anything, escapes included. */
  target: string;
  headers: Array<[string, string]>;
  body?: Buffer;
  /** How the body is framed on a real socket. */
  framing: 'exact' | 'short' | 'long-hangup' | 'chunked' | 'bad-chunked' | 'none';
}

/**
 * Route templates with the methods they answer: the OpenAPI document's paths under /api/v1 (GET
 * routes answer HEAD too) and the OSTree layout under /repo.
 */
export function routeTemplates(): Array<{ template: string; methods: string[] }> {
  const read = ['GET', 'HEAD'];
  return [
    ...Object.entries(OPENAPI.paths).map(([p, ops]) => {
      const methods = Object.keys(ops)
        .filter((m) => ['get', 'put', 'post'].includes(m))
        .map((m) => m.toUpperCase());
      return { template: `/api/v1${p}`, methods: methods.includes('GET') ? [...methods, 'HEAD'] : methods };
    }),
    ...['config', 'summary', 'summary.sig', 'refs/heads/{ref}', 'objects/{xx}/{rest}', '{junk}'].map((p) => ({
      template: `/repo/${p}`,
      methods: read,
    })),
    { template: '/{junk}', methods: read },
  ];
}

const METHODS = ['GET', 'GET', 'GET', 'HEAD', 'PUT', 'PUT', 'POST', 'POST', 'DELETE', 'PATCH', 'OPTIONS'];
const TRICKS = [
  '..',
  '.',
  '%2e%2e',
  '%2E%2E',
  '%2e',
  '%2f',
  '%2F',
  '%252e%252e',
  '%00',
  '%',
  '%zz',
  '\\',
  '..%2f..%2f..%2fetc%2fpasswd',
  '../../../../etc/passwd',
  '',
  ' ',
  '%20',
  '+',
  ';x',
  '%c3%a9',
  '%ff%fe',
  '*',
  '~',
];

function junk(rng: Rng): string {
  const r = rng();
  if (r < 0.4) return pick(rng, TRICKS);
  if (r < 0.6) return hex(rng, int(rng, 0, 70));
  if (r < 0.7) return 'a'.repeat(int(rng, 200, 6000));
  const alphabet = 'abcXYZ019-_./%+~:@!$&()*,;=';
  let s = '';
  for (let i = int(rng, 1, 30); i > 0; i--) s += alphabet[int(rng, 0, alphabet.length - 1)];
  return s;
}

function checksumLike(rng: Rng, w: FuzzWorld): string {
  const r = rng();
  const real = pick(rng, w.objects).split('.')[0]!;
  if (r < 0.4) return pick(rng, w.commits);
  if (r < 0.6) return real;
  if (r < 0.65) return real.toUpperCase();
  if (r < 0.7) return real.slice(1);
  if (r < 0.75) return `${real}0`;
  if (r < 0.85) return hex(rng, 64);
  return junk(rng);
}

function refLike(rng: Rng, w: FuzzWorld): string {
  const r = rng();
  if (r < 0.3) return w.ref;
  if (r < 0.4) return `${w.ref}/${junk(rng)}`;
  if (r < 0.5) return w.ref.replace('/', pick(rng, ['%2f', '%2F', '//', '/./', '/../']));
  if (r < 0.55) return `new/${hex(rng, 6)}`;
  return `${junk(rng)}/${junk(rng)}`;
}

function segment(rng: Rng, w: FuzzWorld, name: string): string {
  switch (name) {
    case 'ref':
      return refLike(rng, w);
    case 'sha':
      return checksumLike(rng, w);
    case 'name': {
      const r = rng();
      if (r < 0.4) return pick(rng, w.objects).replace(/\.file$/, pick(rng, ['.file', '.filez']));
      const type = rng() < 0.7 ? pick(rng, OBJECT_TYPES) : junk(rng);
      return `${checksumLike(rng, w)}${pick(rng, ['.', '', '..', '.%2e'])}${type}`;
    }
    case 'spec': {
      const a = checksumLike(rng, w);
      const b = checksumLike(rng, w);
      return pick(rng, [a, `${a}..${b}`, `${a}...${b}`, `..${b}`, `${a}..`, `${a}%2e%2e${b}`]);
    }
    case 'xx': {
      const id = pick(rng, w.objects);
      return rng() < 0.6 ? id.slice(0, 2) : junk(rng);
    }
    case 'rest': {
      const [sha, type] = pick(rng, w.objects).split('.') as [string, string];
      const ext = type === 'file' ? 'filez' : type;
      return rng() < 0.5 ? `${sha.slice(2)}.${ext}` : `${sha.slice(2)}.${junk(rng)}`;
    }
    default:
      return junk(rng);
  }
}

function mutatePath(rng: Rng, path: string): string {
  const r = rng();
  if (r < 0.7) return path;
  const at = int(rng, 1, path.length);
  const insert = pick(rng, ['/', '//', '/./', '/../', '%2f', '%2e%2e/', '\\', '%00', '?', '#', '%']);
  if (r < 0.85) return path.slice(0, at) + insert + path.slice(at);
  if (r < 0.95) return `${path}?${pick(rng, ['token=srt_00000000_x', 'a=b', junk(rng)])}`;
  return path.toUpperCase();
}

function authHeader(rng: Rng, w: FuzzWorld): string | undefined {
  const r = rng();
  if (r < 0.4) return undefined;
  // The first two tokens are valid: most requests get past authentication to the handlers.
  const token = rng() < 0.7 ? pick(rng, w.tokens.slice(0, 2)) : pick(rng, w.tokens);
  if (r < 0.8) return `Bearer ${token}`;
  if (r < 0.9) return `Basic ${Buffer.from(`ostree:${token}`).toString('base64')}`;
  return pick(rng, [
    'Bearer',
    'Bearer ',
    'Bearer a b',
    `Bearer ${token}x`,
    'Basic !!!',
    `Basic ${Buffer.from('nocolon').toString('base64')}`,
    'Digest x',
    `Bearer srt_${hex(rng, 8)}_${'A'.repeat(43)}`,
    junk(rng),
  ]);
}

function randomHeaders(rng: Rng, w: FuzzWorld): Array<[string, string]> {
  const h: Array<[string, string]> = [];
  const auth = authHeader(rng, w);
  if (auth !== undefined) h.push(['authorization', auth]);
  if (rng() < 0.15) {
    h.push([
      'range',
      pick(rng, [
        'bytes=0-5',
        'bytes=-1',
        'bytes=5-2',
        'bytes=x',
        'bytes=0-0,2-3',
        'bytes=999999999-',
        'lines=1',
      ]),
    ]);
  }
  if (rng() < 0.1) h.push(['if-none-match', pick(rng, ['*', '"x"', 'W/"y"', junk(rng)])]);
  if (rng() < 0.05) h.push(['if-modified-since', pick(rng, ['yesterday', 'Thu, 01 Jan 1970 00:00:00 GMT'])]);
  if (rng() < 0.1) h.push(['content-type', pick(rng, ['application/json', 'text/plain', junk(rng)])]);
  if (rng() < 0.05) h.push(['x-forwarded-for', junk(rng)]);
  return h;
}

/** Well-formed packs whose records are stored objects, some of them made wrong. */
async function packBody(rng: Rng, w: FuzzWorld): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const writer = new PackWriter(async (c) => void chunks.push(c), { threads: false, level: 1 });
  const ids = w.objects.filter(() => rng() < 0.3).slice(0, 12);
  const kindOf: Record<string, number> = {
    commit: KIND.commit,
    dirtree: KIND.dirtree,
    dirmeta: KIND.dirmeta,
    file: KIND.filez,
  };
  const seen = new Set<string>();
  for (const id of ids) {
    const [sha, type] = id.split('.') as [string, string];
    let payload = Buffer.from(w.stored.get(id)!);
    let kind = kindOf[type]!;
    let name = sha;
    const r = rng();
    if (r < 0.2 && payload.length > 0) payload[int(rng, 0, payload.length - 1)]! ^= 1 << int(rng, 0, 7);
    else if (r < 0.3) payload = payload.subarray(0, int(rng, 0, payload.length));
    else if (r < 0.35) kind = pick(rng, [KIND.content, KIND.commit, KIND.dirtree, KIND.filez]);
    else if (r < 0.4) name = hex(rng, 64);
    if (seen.has(`${kind}${name}`)) continue;
    seen.add(`${kind}${name}`);
    await writer.add(kind as 1, name, payload);
  }
  await writer.finish();
  let pack = Buffer.concat(chunks);
  const r = rng();
  if (r < 0.15) pack = pack.subarray(0, int(rng, 0, pack.length));
  else if (r < 0.3 && pack.length > 0) {
    pack = Buffer.from(pack);
    pack[int(rng, 0, pack.length - 1)]! ^= 0xff;
  } else if (r < 0.35) pack = Buffer.concat([pack, bytes(rng, int(rng, 1, 64))]);
  return pack;
}

async function randomBody(rng: Rng, w: FuzzWorld, template: string): Promise<Buffer | undefined> {
  const r = rng();
  if (r < 0.1) return undefined;
  if (r < 0.15) return Buffer.alloc(0);
  if (r < 0.3) return bytes(rng, int(rng, 1, 4096));
  if (template.endsWith('/packs') && r < 0.75) return packBody(rng, w);
  if (template.endsWith('/objects/{name}') && r < 0.75) {
    const id = pick(rng, w.objects);
    const b = Buffer.from(w.stored.get(id)!);
    if (rng() < 0.7 && b.length > 0) b[int(rng, 0, b.length - 1)]! ^= 0x40;
    return b;
  }
  const sha = () => checksumLike(rng, w);
  const json = pick(rng, [
    () => ({
      objects: Array.from({ length: int(rng, 0, 20) }, () => ({ checksum: sha(), type: junk(rng) })),
    }),
    () => ({ objects: w.objects.slice(0, int(rng, 0, w.objects.length)).map((id) => id.split('.')) }),
    () => ({ from: rng() < 0.3 ? null : sha(), to: sha(), reason: junk(rng) }),
    () => ({ from: w.commits.at(-1), to: w.commits[0] }),
    () => ({ to: pick(rng, w.commits), reason: rng() < 0.5 ? '' : junk(rng) }),
    () => ({ objects: 'x'.repeat(int(rng, 0, 100)) }),
    () => [null, 1, 'x'],
    () => ({ __proto__: { from: null }, constructor: { prototype: {} } }),
  ])();
  let text = JSON.stringify(json);
  if (rng() < 0.15) text = text.slice(0, int(rng, 0, text.length));
  if (rng() < 0.03) text = '['.repeat(int(rng, 1000, 200_000));
  return Buffer.from(text);
}

export async function nextRequest(rng: Rng, w: FuzzWorld): Promise<FuzzRequest> {
  const route = pick(rng, routeTemplates());
  const template = route.template;
  let path = template.replace(/\{(\w+)\}/g, (_, name: string) => segment(rng, w, name));
  path = mutatePath(rng, path);
  // Mostly a method the route answers, so that most requests reach its handler.
  const method = rng() < 0.75 ? pick(rng, route.methods) : pick(rng, METHODS);
  const headers = randomHeaders(rng, w);
  const wantsBody = method === 'PUT' || method === 'POST' || rng() < 0.05;
  const body = wantsBody ? await randomBody(rng, w, template) : undefined;
  const framing = pick(rng, [
    'exact',
    'exact',
    'exact',
    'short',
    'long-hangup',
    'chunked',
    'bad-chunked',
    'none',
  ] as const);
  return { method, target: path.startsWith('/') ? path : `/${path}`, headers, body, framing };
}

/**
 * In process: the request as `fetch` can express it (a URL parser normalises the target; headers
 * with bytes fetch refuses are dropped). Returns the status and the body text.
 */
export async function sendInProcess(
  app: { request: (input: string, init?: RequestInit) => Response | Promise<Response> },
  req: FuzzRequest,
): Promise<{ status: number; body: string }> {
  const headers = new Headers();
  for (const [k, v] of req.headers) {
    try {
      headers.append(k, v);
    } catch {
      // A value fetch cannot send: the raw socket sends those.
    }
  }
  const noBody = req.method === 'GET' || req.method === 'HEAD';
  const res = await app.request(`http://localhost${req.target}`, {
    method: req.method,
    headers,
    body: noBody || req.body === undefined ? undefined : new Uint8Array(req.body),
  });
  return { status: res.status, body: await res.text() };
}

function frame(req: FuzzRequest): { head: string; body: Buffer; hangup: boolean } {
  const lines = [`${req.method} ${req.target} HTTP/1.1`, 'host: 127.0.0.1', 'connection: close'];
  for (const [k, v] of req.headers) lines.push(`${k}: ${v.replace(/[\r\n]/g, '')}`);
  const body = req.body ?? Buffer.alloc(0);
  let sent = body;
  let hangup = false;
  switch (req.framing) {
    case 'exact':
      lines.push(`content-length: ${body.length}`);
      break;
    case 'short':
      lines.push(`content-length: ${Math.floor(body.length / 2)}`);
      break;
    case 'long-hangup':
      lines.push(`content-length: ${body.length + 1 + (body.length >> 1)}`);
      hangup = true;
      break;
    case 'chunked':
    case 'bad-chunked': {
      lines.push('transfer-encoding: chunked');
      const parts: Buffer[] = [];
      for (let i = 0; i < body.length; i += 1000) {
        const c = body.subarray(i, i + 1000);
        // A chunk size that does not parse (one that promises more bytes than follow is a stalled
        // client, which hostile-http.test.ts times out with a short pace).
        const bad = ['zz', '-1', 'ffffffffffffffffffff', ' ', `${c.length.toString(16)}\u0001`];
        const size =
          req.framing === 'bad-chunked' && i === 0 ? bad[c.length % bad.length]! : c.length.toString(16);
        parts.push(Buffer.from(`${size}\r\n`), c, Buffer.from('\r\n'));
      }
      parts.push(Buffer.from('0\r\n\r\n'));
      sent = Buffer.concat(parts);
      break;
    }
    case 'none':
      break;
  }
  return { head: `${lines.join('\r\n')}\r\n\r\n`, body: sent, hangup };
}

/**
 * Over a real socket, framing as the request says. Resolves with the status line's code, or 0 when
 * the server closed without answering (a client that hung up gets no answer; the access log has it).
 */
export function sendRaw(port: number, req: FuzzRequest, timeoutMs = 10_000): Promise<number> {
  const { head, body, hangup } = frame(req);
  return new Promise((resolve, reject) => {
    const s = new Socket();
    const got: Buffer[] = [];
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`no answer in ${timeoutMs} ms to ${req.method} ${req.target.slice(0, 200)}`));
    }, timeoutMs);
    s.on('data', (d) => got.push(d));
    s.on('error', () => {});
    s.on('close', () => {
      clearTimeout(timer);
      const m = /^HTTP\/1\.1 (\d{3})/.exec(Buffer.concat(got).toString('latin1'));
      resolve(m ? Number(m[1]) : 0);
    });
    s.connect(port, '127.0.0.1', () => {
      s.write(head);
      s.write(body);
      // No half-close otherwise: Node's server takes a client's FIN as hanging up (it aborts the
      // request unanswered); `connection: close` has the server close after its answer.
      if (hangup) s.destroy();
    });
  });
}
