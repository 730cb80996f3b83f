/**
 * HTTP client for a registry server (docs/http-api.md): the JSON API under `<base>/api/v1/` and the
 * read-only OSTree repository under `<base>/repo/`.
 *
 * - The token travels only in the `Authorization: Bearer` header. It is never part of a URL, a
 *   message or an error's details, because errors end up in CI logs.
 * - Connection errors, timeouts and 5xx answers (but a 500 E_CORRUPT_OBJECT: the server's own copy is
 *   damaged, and stays so) are retried with exponential backoff and jitter
 *   (5 tries, 200 ms doubling to at most 3 s: ~3 s of waiting in all), which rides out a server
 *   restart or a load balancer hiccup without hiding a server that is really down.
 * - A JSON error body (`{"error": {code, message, details}}`) becomes the same RegistryError the
 *   server raised, so `sysroot push` fails with the server's code, message and exit code.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { ERROR_CODES, type ErrorCode, type ErrorDetails, RegistryError } from '../errors.js';
import { type Checksum, type ObjectType, objectId, objectPath } from '../objects/index.js';
import { type RefLogRecord, refLogRecordSchema } from '../repo/reflog.js';
import { assertRef } from '../repo/refs.js';
import type { ObjectRef } from '../store/object-store.js';
import { type HttpAnswer, reusesChunks, type StreamedBody, send } from './http.js';

export interface ClientOptions {
  /** Bearer token; default $SYSROOT_TOKEN. An empty string means "no token". */
  token?: string;
  /** Attempts per request, including the first (default 5). */
  tries?: number;
  /** First backoff delay (default 200 ms); doubles per retry up to maxDelayMs (default 3 s). */
  baseDelayMs?: number;
  maxDelayMs?: number;
  /**
   * Give up on an attempt when nothing happened for this long (default 60 s): no answer yet, or no
   * body bytes for that long. An idle timer rather than a total one, so a 2 GiB object on a slow
   * link is not cut off while it is still moving.
   */
  idleTimeoutMs?: number;
  /** Called before each retry, e.g. to tell the user; never given the token. */
  onRetry?: (what: string, attempt: number, why: string, delayMs: number) => void;
}

/** OSTree caps every metadata object at 10 MiB (OSTREE_MAX_METADATA_SIZE); so do we. */
export const MAX_METADATA_SIZE = 10 * 1024 * 1024;

const RETRY_STATUS_MIN = 500;

const KNOWN_CODES = new Set<string>(ERROR_CODES);

/** An attempt failed in a way that a second attempt may fix (connection, timeout, 5xx). */
class TransientError extends Error {
  constructor(
    message: string,
    readonly final: RegistryError,
    readonly retryAfterMs?: number,
  ) {
    super(message);
  }
}

/**
 * Validate a registry URL (`http://host:port`, or with a path prefix: `https://host/sysroots`) and
 * return it without a trailing slash; the API is then at `<base>/api/v1/`, OSTree at `<base>/repo/`.
 */
export function parseBaseUrl(url: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new RegistryError(
      'E_USAGE',
      `"${url}" is not a URL`,
      { found: url },
      'e.g. --url https://sysroots.example.org',
    );
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new RegistryError('E_USAGE', `registry URL must be http or https, not ${u.protocol}`, {
      found: u.protocol,
    });
  }
  if (u.username || u.password) {
    // Credentials in a URL end up in logs and shell history; the found value is left out on purpose.
    throw new RegistryError(
      'E_USAGE',
      'registry URL must not contain credentials',
      {},
      'pass the token with --token or $SYSROOT_TOKEN',
    );
  }
  if (u.search || u.hash) {
    throw new RegistryError('E_USAGE', 'registry URL must not have a query or fragment', {
      found: `${u.origin}${u.pathname}`,
    });
  }
  return `${u.origin}${u.pathname.replace(/\/+$/, '')}`;
}

function registryErrorFromBody(
  status: number,
  statusText: string,
  body: string,
  what: string,
): RegistryError {
  let parsed: unknown;
  try {
    parsed = JSON.parse(body);
  } catch {
    parsed = undefined;
  }
  const err =
    typeof parsed === 'object' && parsed !== null && 'error' in parsed
      ? (parsed as { error: unknown }).error
      : undefined;
  if (typeof err === 'object' && err !== null) {
    const e = err as { code?: unknown; message?: unknown; details?: unknown; hint?: unknown };
    const code =
      typeof e.code === 'string' && KNOWN_CODES.has(e.code) ? (e.code as ErrorCode) : codeForStatus(status);
    const details =
      typeof e.details === 'object' && e.details !== null && !Array.isArray(e.details)
        ? (e.details as ErrorDetails)
        : {};
    const message = typeof e.message === 'string' ? e.message : `${what}: HTTP ${status}`;
    return new RegistryError(code, message, details, typeof e.hint === 'string' ? e.hint : undefined);
  }
  const text = body.trim().slice(0, 200);
  return new RegistryError(
    codeForStatus(status),
    `${what}: HTTP ${status} ${statusText}${text ? `: ${text}` : ''}`,
    { status },
    status === 404 ? 'is the URL the registry server, not a plain web server?' : undefined,
  );
}

function codeForStatus(status: number): ErrorCode {
  if (status === 401) return 'E_UNAUTHORIZED';
  if (status === 403) return 'E_FORBIDDEN';
  if (status === 404 || status === 410) return 'E_NOT_FOUND';
  if (status === 408) return 'E_TIMEOUT';
  if (status === 409) return 'E_REF_CONFLICT';
  if (status === 413) return 'E_LIMIT';
  if (status === 422) return 'E_OBJECT_MISSING';
  if (status === 507) return 'E_NO_SPACE';
  if (status >= 400 && status < 500) return 'E_USAGE';
  return 'E_IO';
}

/** "ECONNREFUSED" or the like, from a socket error (or an error with a cause chain). */
function describeTransportError(e: unknown): string {
  const parts: string[] = [];
  let cur: unknown = e;
  for (let i = 0; i < 4 && typeof cur === 'object' && cur !== null; i++) {
    const c = cur as { code?: unknown; message?: unknown; cause?: unknown };
    if (typeof c.code === 'string' && !parts.includes(c.code)) parts.push(c.code);
    else if (typeof c.message === 'string' && c.message && !parts.includes(c.message)) parts.push(c.message);
    cur = c.cause;
  }
  return parts.join(': ') || String(e);
}

/**
 * TLS verification failures (OpenSSL's codes as Node reports them): final, not transient. The list
 * is the ones a misconfigured or self-signed server gives; anything else is retried as before.
 */
const CERTIFICATE_ERRORS = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'CERT_REVOKED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

function isCertificateError(e: unknown): boolean {
  const code = (e as { code?: unknown } | null)?.code;
  return typeof code === 'string' && CERTIFICATE_ERRORS.has(code);
}

/** A timer that aborts a request when it is not touched for `ms`. */
class IdleTimer {
  readonly controller = new AbortController();
  private timer: NodeJS.Timeout | undefined;

  constructor(private readonly ms: number) {
    this.touch();
  }

  touch(): void {
    clearTimeout(this.timer);
    this.timer = setTimeout(() => {
      this.controller.abort(new Error(`no progress for ${this.ms / 1000} s`));
    }, this.ms);
    this.timer.unref();
  }

  stop(): void {
    clearTimeout(this.timer);
  }

  get signal(): AbortSignal {
    return this.controller.signal;
  }
}

export type RequestBody = Buffer | (() => AsyncIterable<Uint8Array>);

interface RequestSpec {
  method: 'GET' | 'POST' | 'PUT';
  url: string;
  /** For messages: "GET /api/v1/refs/x" (never the token). */
  what: string;
  json?: unknown;
  /** A buffer, or a factory so a streamed body can be sent again on a retry. */
  body?: RequestBody;
  contentLength?: number;
  /** Runs after the backoff, before each retry: e.g. to work out again what the body must hold. */
  beforeRetry?: () => Promise<void>;
  /** Attempts at most (default: the client's `tries`); 1 for a body that cannot be made twice. */
  tries?: number;
}

/** What one attempt does with a successful (2xx) answer; it runs inside the retry loop. */
type Consume<T> = (res: HttpAnswer, touch: () => void) => Promise<T>;

export class RegistryClient {
  readonly base: string;
  /** An ECMAScript private field: not enumerable, so neither JSON.stringify nor util.inspect shows it. */
  readonly #token: string | undefined;
  private readonly tries: number;
  private readonly baseDelayMs: number;
  private readonly maxDelayMs: number;
  private readonly idleTimeoutMs: number;
  private readonly onRetry: ClientOptions['onRetry'];

  constructor(url: string, opts: ClientOptions = {}) {
    this.base = parseBaseUrl(url);
    const token = opts.token ?? process.env.SYSROOT_TOKEN;
    this.#token = token ? token : undefined;
    this.tries = Math.max(1, opts.tries ?? 5);
    this.baseDelayMs = opts.baseDelayMs ?? 200;
    this.maxDelayMs = opts.maxDelayMs ?? 3000;
    this.idleTimeoutMs = opts.idleTimeoutMs ?? 60_000;
    this.onRetry = opts.onRetry;
  }

  get hasToken(): boolean {
    return this.#token !== undefined;
  }

  apiUrl(path: string): string {
    return `${this.base}/api/v1/${path}`;
  }

  repoUrl(path: string): string {
    return `${this.base}/repo/${path}`;
  }

  /** Exponential backoff with "equal jitter": half the delay fixed, half random, so clients spread out. */
  private backoff(attempt: number): number {
    const d = Math.min(this.maxDelayMs, this.baseDelayMs * 2 ** attempt);
    return Math.round(d / 2 + Math.random() * (d / 2));
  }

  /** Run one request with retries. `consume` reads the body; failures while reading are retried too. */
  async request<T>(spec: RequestSpec, consume: Consume<T>): Promise<T> {
    for (let attempt = 0; ; attempt++) {
      try {
        return await this.attempt(spec, consume);
      } catch (e) {
        if (!(e instanceof TransientError)) throw e;
        if (attempt + 1 >= (spec.tries ?? this.tries)) throw e.final;
        // A server's Retry-After is honoured, but capped at 10x our own ceiling (30 s by default).
        const delay = Math.min(e.retryAfterMs ?? this.backoff(attempt), this.maxDelayMs * 10);
        this.onRetry?.(spec.what, attempt + 1, e.message, delay);
        await sleep(delay);
        await spec.beforeRetry?.();
      }
    }
  }

  private async attempt<T>(spec: RequestSpec, consume: Consume<T>): Promise<T> {
    const idle = new IdleTimer(this.idleTimeoutMs);
    const headers: Record<string, string> = { 'user-agent': 'sysroot-registry' };
    if (this.#token) headers.authorization = `Bearer ${this.#token}`;
    let body: Buffer | StreamedBody | undefined;
    if (spec.json !== undefined) {
      headers['content-type'] = 'application/json';
      body = Buffer.from(JSON.stringify(spec.json));
    } else if (Buffer.isBuffer(spec.body)) {
      headers['content-type'] = 'application/octet-stream';
      body = spec.body;
    } else if (spec.body) {
      headers['content-type'] = 'application/octet-stream';
      if (spec.contentLength !== undefined) headers['content-length'] = String(spec.contentLength);
      // Touch the idle timer on every chunk sent, so a long upload that is moving is not aborted.
      const source = spec.body();
      body = {
        source,
        onChunk: () => idle.touch(),
        ...(reusesChunks(source) ? { written: (c: Uint8Array) => source.written(c) } : {}),
      };
    }
    let res: HttpAnswer;
    try {
      res = await send({ method: spec.method, url: spec.url, headers, body, signal: idle.signal });
    } catch (e) {
      idle.stop();
      const why = idle.signal.aborted
        ? String((idle.signal.reason as Error).message)
        : describeTransportError(e);
      const message = `${spec.what}: cannot reach ${this.base}: ${why}`;
      // The server's certificate is not trusted: a second try would not trust it either.
      if (isCertificateError(e)) {
        throw new RegistryError(
          'E_IO',
          message,
          { url: this.base },
          "the server's TLS certificate is not trusted; for a private CA, point NODE_EXTRA_CA_CERTS at its certificate",
        );
      }
      throw new TransientError(why, new RegistryError('E_IO', message, { url: this.base }));
    }
    try {
      if (res.status >= 300) {
        const text = await readText(res, idle, 64 * 1024).catch(() => '');
        const err = registryErrorFromBody(res.status, res.statusText, text, spec.what);
        // A server that found its own stored copy corrupt (500 E_CORRUPT_OBJECT) finds it corrupt
        // again on a retry: it is answered at once, naming the object. 501, and 507 (a full disk: it
        // does not empty itself in the ~3 s of retries) are final too.
        if (
          res.status >= RETRY_STATUS_MIN &&
          res.status !== 501 &&
          res.status !== 507 &&
          err.code !== 'E_CORRUPT_OBJECT'
        ) {
          const ra = Number(res.header('retry-after'));
          throw new TransientError(
            `HTTP ${res.status}`,
            err,
            Number.isFinite(ra) && ra > 0 ? ra * 1000 : undefined,
          );
        }
        throw err;
      }
      return await consume(res, () => idle.touch());
    } catch (e) {
      if (e instanceof RegistryError || e instanceof TransientError) throw e;
      // The body stopped halfway (connection reset, idle timeout): try the whole request again.
      const why = idle.signal.aborted
        ? String((idle.signal.reason as Error).message)
        : describeTransportError(e);
      throw new TransientError(
        why,
        new RegistryError('E_IO', `${spec.what}: connection to ${this.base} failed: ${why}`, {
          url: this.base,
        }),
      );
    } finally {
      idle.stop();
    }
  }

  private async api<T>(method: RequestSpec['method'], path: string, json?: unknown): Promise<T> {
    return this.request(
      { method, url: this.apiUrl(path), what: `${method} /api/v1/${path}`, json },
      (res, touch) => readJson<T>(res, touch, 256 * 1024 * 1024, `${method} /api/v1/${path}`, this.base),
    );
  }

  /** The ref's head on the server, or null if the ref does not exist there. */
  async getRef(ref: string): Promise<Checksum | null> {
    assertRef(ref);
    try {
      const r = await this.api<{ commit?: unknown }>('GET', `refs/${ref}`);
      return checksumField(r.commit, `GET /api/v1/refs/${ref}`);
    } catch (e) {
      if (e instanceof RegistryError && e.code === 'E_REF_NOT_FOUND') return null;
      throw e;
    }
  }

  /** The ref's history, newest first. */
  async log(ref: string): Promise<RefLogRecord[]> {
    assertRef(ref);
    const r = await this.api<{ history?: unknown }>('GET', `log/${ref}`);
    if (!Array.isArray(r.history)) {
      throw new RegistryError('E_IO', `GET /api/v1/log/${ref}: the answer has no history list`, { ref });
    }
    return r.history.map((h: unknown, i) => {
      const { pin: _pin, ...rest } = (typeof h === 'object' && h !== null ? h : {}) as Record<
        string,
        unknown
      >;
      const parsed = refLogRecordSchema().safeParse(rest);
      if (!parsed.success) {
        throw new RegistryError('E_IO', `GET /api/v1/log/${ref}: record ${i} is malformed`, {
          ref,
          found: parsed.error.issues[0]?.message,
        });
      }
      return parsed.data;
    });
  }

  /** GET /api/v1/keys: the keys the server publishes (for discovery only: trust is pinned by the user). */
  async keys(): Promise<unknown[]> {
    const r = await this.api<{ keys?: unknown }>('GET', 'keys');
    if (!Array.isArray(r.keys))
      throw new RegistryError('E_IO', 'GET /api/v1/keys: the answer has no key list');
    return r.keys;
  }

  /** The ref log's records as stored (JSON lines, oldest first): GET /api/v1/log/{ref}?format=jsonl. */
  async rawLog(ref: string): Promise<Buffer> {
    assertRef(ref);
    const path = `log/${ref}?format=jsonl`;
    return this.request(
      { method: 'GET', url: this.apiUrl(path), what: `GET /api/v1/${path}` },
      (res, touch) => readBody(res, { touch }, 256 * 1024 * 1024, `GET /api/v1/${path}`),
    );
  }

  /** Which of `objects` the server lacks. One request; the caller batches (the server takes ≤ 100,000). */
  async missing(objects: ObjectRef[]): Promise<ObjectRef[]> {
    const r = await this.api<{ missing?: unknown }>('POST', 'objects/missing', {
      objects: objects.map((o) => ({ checksum: o.checksum, type: o.type })),
    });
    if (!Array.isArray(r.missing)) {
      throw new RegistryError('E_IO', 'POST /api/v1/objects/missing: the answer has no missing list');
    }
    return r.missing.map((m: unknown) => {
      const o = m as { checksum?: unknown; type?: unknown };
      return {
        checksum: checksumField(o.checksum, 'POST /api/v1/objects/missing'),
        type: o.type as ObjectType,
      };
    });
  }

  /** Upload one object. Returns true if the server created it, false if it had it already. */
  async putObject(checksum: Checksum, type: ObjectType, body: RequestBody, size?: number): Promise<boolean> {
    const path = `objects/${checksum}.${type}`;
    return this.request(
      {
        method: 'PUT',
        url: this.apiUrl(path),
        what: `PUT /api/v1/${path}`,
        body,
        ...(size !== undefined && !Buffer.isBuffer(body) ? { contentLength: size } : {}),
      },
      async (res, touch) => {
        await readBody(res, { touch }, 64 * 1024).catch(() => undefined);
        return res.status === 201;
      },
    );
  }

  /**
   * Upload a pack of objects in one request (POST /api/v1/packs). `body` is a factory: a retry
   * generates the pack again, after `beforeRetry` (if given) has run. Answers how many records the
   * server stored or had already.
   */
  async postPack(
    body: () => AsyncIterable<Uint8Array>,
    opts: { beforeRetry?: () => Promise<void>; tries?: number } = {},
  ): Promise<{ records: number; stored: number; existing: number; bytes: number }> {
    return this.request(
      { method: 'POST', url: this.apiUrl('packs'), what: 'POST /api/v1/packs', body, ...opts },
      (res, touch) =>
        readJson<{ records: number; stored: number; existing: number; bytes: number }>(
          res,
          touch,
          1024 * 1024,
          'POST /api/v1/packs',
          this.base,
        ),
    );
  }

  /** Compare-and-swap the ref from `from` to `to`. */
  async moveRef(
    ref: string,
    from: Checksum | null,
    to: Checksum,
    reason?: string,
  ): Promise<{ ref: string; commit: Checksum; seq: number }> {
    assertRef(ref);
    return this.api('PUT', `refs/${ref}`, { from, to, ...(reason ? { reason } : {}) });
  }

  /**
   * GET an object from the OSTree repository and hand its body to `consume` (inside the retry loop:
   * a body cut off halfway is fetched again). 404 becomes E_OBJECT_MISSING naming the object.
   */
  async fetchObject<T>(
    checksum: Checksum,
    type: ObjectType,
    consume: (res: HttpAnswer, touch: () => void) => Promise<T>,
  ): Promise<T> {
    const path = objectPath(checksum, type);
    try {
      return await this.request(
        { method: 'GET', url: this.repoUrl(path), what: `GET /repo/${path}` },
        consume,
      );
    } catch (e) {
      if (e instanceof RegistryError && (e.code === 'E_NOT_FOUND' || e.code === 'E_OBJECT_MISSING')) {
        const id = objectId(checksum, type);
        throw new RegistryError('E_OBJECT_MISSING', `the server does not have object ${id}`, {
          object: id,
          url: this.base,
        });
      }
      throw e;
    }
  }
}

function checksumField(v: unknown, what: string): Checksum {
  if (typeof v !== 'string' || !/^[0-9a-f]{64}$/.test(v)) {
    throw new RegistryError('E_IO', `${what}: the answer holds no valid commit checksum`, {
      found: String(v).slice(0, 80),
    });
  }
  return v;
}

/** Read a whole body, at most `limit` bytes (a bigger body is an error, not a memory blow-up). */
export async function readBody(
  res: HttpAnswer,
  idle: { touch(): void },
  limit: number,
  what?: string,
): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const c of res.body) {
    idle.touch();
    n += c.length;
    if (n > limit) {
      res.cancel();
      throw new RegistryError('E_LIMIT', `${what ?? 'answer'} is larger than ${limit} bytes`, {
        expected: `≤ ${limit} bytes`,
        found: `> ${limit} bytes`,
      });
    }
    chunks.push(c);
  }
  return Buffer.concat(chunks);
}

async function readText(res: HttpAnswer, idle: { touch(): void }, limit: number): Promise<string> {
  return (await readBody(res, idle, limit)).toString('utf8');
}

/** A JSON answer of at most `limit` bytes; anything else is E_IO naming the request. */
async function readJson<T>(
  res: HttpAnswer,
  touch: () => void,
  limit: number,
  what: string,
  url: string,
): Promise<T> {
  const text = await readText(res, { touch }, limit);
  try {
    return JSON.parse(text) as T;
  } catch {
    throw new RegistryError('E_IO', `${what}: the answer is not JSON`, { url });
  }
}

/** `sysroot log --url`: a ref's history from the server, newest first. */
export async function remoteLog(url: string, ref: string, opts: ClientOptions = {}): Promise<RefLogRecord[]> {
  return new RegistryClient(url, opts).log(ref);
}
