/**
 * S3BlobStore under transient faults: a small HTTP proxy on 127.0.0.1 (helpers/fault-proxy.ts) stands
 * between the adapter and a real RADOS Gateway and, request by request, answers 503 SlowDown or 500,
 * resets the connection mid-request or mid-response, or forwards the request and then loses the answer.
 * Reads and writes must still come out right (retries, resumed bodies, settled conditional writes),
 * and a failure that does not go away must end in RegistryError E_IO naming the key, not an SDK error.
 */
import { createHash, randomBytes, randomFillSync } from 'node:crypto';
import { S3ServiceException } from '@aws-sdk/client-s3';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { RegistryError } from '../src/errors.js';
import type { RetryEvent } from '../src/store/retry.js';
import { backoffDelay, DEFAULT_RETRY } from '../src/store/retry.js';
import { S3BlobStore } from '../src/store/s3-blob-store.js';
import { type Fault, type FaultProxy, startFaultProxy } from './helpers/fault-proxy.js';
import { type S3Server, startS3 } from './helpers/s3-server.js';

let s3: S3Server;
let proxy: FaultProxy;
const stores: S3BlobStore[] = [];
let prefixes = 0;

/** A store that reaches RGW through the proxy; fast retries so the test stays short. */
function store(retry: { attempts: number }, events: RetryEvent[] = []): S3BlobStore {
  const s = new S3BlobStore({
    bucket: s3.bucket,
    prefix: `faults-${++prefixes}-${randomBytes(3).toString('hex')}`,
    endpoint: proxy.endpoint,
    region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    retry: { ...retry, baseDelayMs: 5, maxDelayMs: 40 },
    onRetry: (e) => events.push(e),
  });
  stores.push(s);
  return s;
}

async function collect(s: AsyncIterable<Buffer> | undefined): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of s ?? []) chunks.push(c);
  return Buffer.concat(chunks);
}

async function rejection(p: Promise<unknown>): Promise<unknown> {
  return p.then(
    () => {
      throw new Error('expected a rejection');
    },
    (e: unknown) => e,
  );
}

beforeAll(async () => {
  s3 = await startS3({ bucket: 'faults' });
  proxy = await startFaultProxy(new URL(s3.endpoint));
});

afterAll(async () => {
  for (const s of stores) s.close();
  await proxy?.close();
  await s3?.stop();
});

describe('S3BlobStore through a faulty connection to a real RGW', () => {
  it('retries reads and writes through 503 SlowDown, 500 and connections reset mid-request', async () => {
    const events: RetryEvent[] = [];
    const s = store({ attempts: 6 }, events);
    // The first two tries of each distinct request (method + URL) fail, in turn with each kind of
    // fault; the third goes through. Conditional writes read the key between tries (to settle them),
    // and those reads fail the same way.
    const kinds: Fault[] = ['slowdown', 'reset-request', 'error500'];
    const tries = new Map<string, number>();
    let k = 0;
    proxy.policy = (req) => {
      const id = `${req.method} ${req.url}`;
      const t = tries.get(id) ?? 0;
      tries.set(id, t + 1);
      return t < 2 ? kinds[k++ % kinds.length]! : 'pass';
    };
    const from = proxy.seen.length;

    const ref = Buffer.from(`${'c'.repeat(64)}\n`);
    expect(await s.createOnce('sysroot/reflog/main/0000000000000001.json', Buffer.from('{"seq":1}'))).toBe(
      true,
    );
    expect(await s.createOnce('sysroot/reflog/main/0000000000000001.json', Buffer.from('{"seq":"x"}'))).toBe(
      false,
    );
    expect(await s.replace('refs/heads/main', ref)).toBe(true);
    const etag = (await s.stat('refs/heads/main'))!.etag;
    const next = Buffer.from(`${'d'.repeat(64)}\n`);
    expect(await s.replace('refs/heads/main', next, { ifMatch: etag })).toBe(true);
    expect(await s.replace('refs/heads/main', ref, { ifMatch: etag })).toBe(false);
    expect(await s.replace('summary', Buffer.from('s1'), { ifMatch: null })).toBe(true);
    expect((await s.read('refs/heads/main'))?.equals(next)).toBe(true);
    expect((await s.read('sysroot/reflog/main/0000000000000001.json'))?.toString()).toBe('{"seq":1}');
    expect(await s.read('refs/heads/missing')).toBeUndefined();
    expect(await s.stat('refs/heads/missing')).toBeUndefined();
    const big = randomBytes(300_000);
    expect(await s.createOnce('objects/aa/big.filez', big)).toBe(true);
    expect(
      (await collect(await s.readStream('objects/aa/big.filez', { start: 1000, end: 250_000 }))).equals(
        big.subarray(1000, 250_000),
      ),
    ).toBe(true);
    const listed: string[] = [];
    for await (const k of s.list('sysroot/')) listed.push(k);
    expect(listed).toEqual(['sysroot/reflog/main/0000000000000001.json']);

    const faults = proxy.seen.slice(from).filter((r) => r.fault !== 'pass');
    expect(faults.length).toBeGreaterThan(15);
    expect(events.length).toBeGreaterThanOrEqual(faults.length / 2);
    const codes = new Set(events.map((e) => e.code));
    expect(codes.has('SlowDown') && codes.has('InternalError')).toBe(true);
    expect(codes.has('ECONNRESET') || codes.has('EPIPE')).toBe(true);
    proxy.policy = () => 'pass';
  });

  it('streams a 24 MiB multipart createOnce through resets and SlowDowns; resumes a cut read', async () => {
    const s = store({ attempts: 6 });
    // Every third request fails: part uploads go through the SDK's retries, the rest through ours.
    proxy.policy = (_req, n) => (n % 3 === 1 ? (n % 2 ? 'slowdown' : 'reset-request') : 'pass');
    const hash = createHash('sha256');
    async function* body(): AsyncGenerator<Buffer> {
      for (let i = 0; i < 24; i++) {
        const c = randomFillSync(Buffer.allocUnsafe(1 << 20));
        hash.update(c);
        yield c;
      }
    }
    expect(await s.createOnce('objects/bb/stream.filez', body())).toBe(true);
    const digest = hash.digest('hex');
    // Now cut the first GET mid-body: the reader must continue from where it was, with a Range.
    const from = proxy.seen.length;
    let cut = false;
    proxy.policy = (req) => {
      if (req.method === 'GET' && !cut) {
        cut = true;
        return 'reset-response';
      }
      return 'pass';
    };
    const back = createHash('sha256');
    for await (const c of (await s.readStream('objects/bb/stream.filez'))!) back.update(c);
    expect(back.digest('hex')).toBe(digest);
    const gets = proxy.seen.slice(from).filter((r) => r.method === 'GET');
    expect(gets[0]?.fault).toBe('reset-response');
    expect(gets[1]?.range).toMatch(/^bytes=\d+-$/);
    proxy.policy = () => 'pass';
  }, 60_000);

  it('settles a conditional write whose answer was lost: the write landed, so it succeeded', async () => {
    const s = store({ attempts: 4 });
    const lostOnce = () => {
      let lost = false;
      proxy.policy = (req) => {
        if (
          req.method === 'PUT' &&
          req.headers['if-match'] === undefined &&
          req.headers['if-none-match'] === undefined
        )
          return 'pass';
        if (req.method === 'PUT' && !lost) {
          lost = true;
          return 'lose-response';
        }
        return 'pass';
      };
    };
    lostOnce();
    expect(await s.createOnce('sysroot/reflog/r/0000000000000001.json', Buffer.from('record 1'))).toBe(true);
    await s.replace('refs/heads/r', Buffer.from('one'));
    const etag = (await s.stat('refs/heads/r'))!.etag;
    lostOnce();
    expect(await s.replace('refs/heads/r', Buffer.from('two'), { ifMatch: etag })).toBe(true);
    lostOnce();
    expect(await s.replace('refs/heads/r', Buffer.from('three'), { ifMatch: etag })).toBe(false);
    expect((await s.read('refs/heads/r'))?.toString()).toBe('two');
    const lost = proxy.seen.filter((r) => r.fault === 'lose-response');
    // RGW did apply the requests whose answers the proxy threw away (200), and refused the stale one.
    expect(lost.slice(-3).map((r) => r.status)).toEqual([200, 200, 412]);
    proxy.policy = () => 'pass';
  });

  it('retries a conditional write that RGW never saw (a 500 from the proxy), not failing it', async () => {
    const s = store({ attempts: 4 });
    await s.replace('refs/heads/q', Buffer.from('one'));
    const etag = (await s.stat('refs/heads/q'))!.etag;
    let failed = 0;
    proxy.policy = (req) => (req.method === 'PUT' && failed++ < 2 ? 'error500' : 'pass');
    expect(await s.replace('refs/heads/q', Buffer.from('two'), { ifMatch: etag })).toBe(true);
    failed = 0;
    expect(await s.createOnce('sysroot/reflog/q/0000000000000001.json', Buffer.from('r'))).toBe(true);
    expect((await s.read('refs/heads/q'))?.toString()).toBe('two');
    proxy.policy = () => 'pass';
  });

  it('lets one of 20 racing conditional replaces win; RGW answers the losers 412 or 500', async () => {
    const s = store({ attempts: 4 });
    proxy.policy = () => 'pass';
    await s.replace('refs/heads/race', Buffer.from('base'));
    const etag = (await s.stat('refs/heads/race'))!.etag;
    const from = proxy.seen.length;
    const results = await Promise.all(
      Array.from({ length: 20 }, (_, i) =>
        s.replace('refs/heads/race', Buffer.from(`w${i}`), { ifMatch: etag }),
      ),
    );
    expect(results.filter(Boolean)).toHaveLength(1);
    const statuses = proxy.seen
      .slice(from)
      .filter((r) => r.method === 'PUT')
      .map((r) => r.status);
    expect(statuses.filter((x) => x === 200)).toHaveLength(1);
    expect(statuses.every((x) => x === 200 || x === 412 || x === 500)).toBe(true);
    expect((await s.read('refs/heads/race'))?.toString()).toBe(`w${results.indexOf(true)}`);
  });

  it('ends a failure that does not go away in E_IO naming the key, never an SDK error', async () => {
    const events: RetryEvent[] = [];
    const s = store({ attempts: 3 }, events);
    for (const [fault, code, status] of [
      ['slowdown', 'SlowDown', 503],
      ['reset-request', 'ECONNRESET', undefined],
    ] as const) {
      proxy.policy = () => fault;
      const ops: Array<[string, () => Promise<unknown>]> = [
        ['refs/heads/main', () => s.read('refs/heads/main')],
        ['refs/heads/main', () => s.stat('refs/heads/main')],
        ['objects/cc/x.filez', () => s.createOnce('objects/cc/x.filez', Buffer.from('x'))],
        ['refs/heads/main', () => s.replace('refs/heads/main', Buffer.from('x'))],
        ['refs/heads/main', () => s.replace('refs/heads/main', Buffer.from('x'), { ifMatch: 'abc' })],
        ['objects/cc/y.filez', () => s.readStream('objects/cc/y.filez', { start: 0, end: 10 })],
        ['refs/', async () => s.list('refs/')[Symbol.asyncIterator]().next()],
      ];
      for (const [key, op] of ops) {
        const e = await rejection(op());
        expect(e).toBeInstanceOf(RegistryError);
        expect(e).not.toBeInstanceOf(S3ServiceException);
        expect(e).toMatchObject({ code: 'E_IO', details: { key, attempts: 3 } });
        // A HEAD (stat) answer has no body, so no S3 code: only the status tells.
        expect(code === 'SlowDown' ? ['SlowDown', 'HTTP503'] : ['ECONNRESET', 'EPIPE']).toContain(
          (e as RegistryError).details.s3Code,
        );
        expect((e as RegistryError).details.httpStatus).toBe(status);
        expect((e as RegistryError).message).toContain(key);
      }
    }
    expect(events.every((e) => e.attempt <= 2)).toBe(true);
    proxy.policy = () => 'pass';
  });
});

describe('backoff', () => {
  it('waits up to base · 2^n, capped, with full jitter', () => {
    const p = { attempts: 8, baseDelayMs: 100, maxDelayMs: 5_000 };
    expect([0, 1, 2, 3, 4, 5, 6, 10].map((n) => backoffDelay(n, p, () => 0.999_999))).toEqual([
      99, 199, 399, 799, 1599, 3199, 4999, 4999,
    ]);
    expect(backoffDelay(3, p, () => 0)).toBe(0);
    const spread = new Set(Array.from({ length: 50 }, () => backoffDelay(4, p)));
    expect(spread.size).toBeGreaterThan(20);
    expect(DEFAULT_RETRY.attempts).toBeGreaterThan(1);
  });
});
