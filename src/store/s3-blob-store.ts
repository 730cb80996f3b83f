/**
 * BlobStore on S3 (tested against Ceph RADOS Gateway; plain S3 API, so AWS and others too).
 *
 * Bucket layout: `s3://BUCKET/PREFIX` holds the repository's files key for key, as the directory
 * would (docs/architecture.md, "On disk"), so a static web server or CDN over the bucket serves
 * stock `ostree pull` just as over the directory:
 *
 *   PREFIX/config                            written once by init
 *   PREFIX/objects/XX/<62 hex>.<ext>          write-once (createOnce)
 *   PREFIX/refs/heads/<ref>                   "<64 hex>\n", replaced with If-Match on every ref move
 *   PREFIX/summary                            replaced with If-Match on every ref move
 *   PREFIX/sysroot/reflog/<ref>/<seq>.json    write-once: the commit point of a ref move
 *   PREFIX/sysroot/tokens/…                   token records
 *
 * No `sysroot/lock` and no `tmp/`: S3 has no lock, so withLock just runs its function, and several
 * registry nodes may write one bucket. What keeps them correct is conditional writes: only one node
 * can create ref log record N+1 (PutObject If-None-Match: *), and refs and the summary move with
 * If-Match on the etag read before (replace({ ifMatch })).
 *
 * Conditional writes on RGW, as observed (test/store-conformance.test.ts checks them):
 *   - If-None-Match: * on an existing key → 412; 20 racing creators → one 200, the rest 412.
 *   - If-Match must carry the ETag WITHOUT quotes: RGW compares it byte for byte with its stored etag,
 *     which has none, so the quoted form the SDK returns always fails (412) — fixed upstream only in
 *     2025 (ceph/ceph#63348). Stale etag → 412; missing key → 412.
 *   - A conditional PUT that loses a race may get 500 instead of 412. It wrote nothing, but a 500 or a
 *     lost connection could also hide a write that landed (and the retry then sees 412), so any
 *     ambiguous outcome is settled by reading the key back: our bytes → true; the old etag still
 *     there → try again; anything else → false.
 *   - Conditions on CompleteMultipartUpload are ignored: see createOnceMultipart.
 *
 * Retries: every request goes through `withRetry` (exponential backoff with full jitter, retry.ts;
 * the SDK's own retries are off for these) so that conditional writes can be settled between
 * attempts and tests can count them. Multipart parts are the exception: lib-storage sends them, with
 * the SDK's standard retry strategy and the same number of attempts.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { Readable } from 'node:stream';
import { setTimeout as sleep } from 'node:timers/promises';
import type { S3Client, S3ClientConfig } from '@aws-sdk/client-s3';
import { RegistryError } from '../errors.js';
import type { BlobStat, BlobStore, ReplaceOptions } from './blob-store.js';
import { backoffDelay, type RetryEvent, type RetryPolicy, retryPolicy } from './retry.js';
import {
  describeS3Error,
  isInvalidRange,
  isNotFound,
  isPreconditionFailed,
  isTransient,
  type S3Failure,
  s3IoError,
} from './s3-errors.js';

/**
 * The AWS SDK, required on first use. Loading it is ~100 modules and ~0.3 s of start-up (a CPU
 * profile of `sysroot refs` on a local repository, 2026-12-07: 0.64 s, of which the SDK's CommonJS
 * loader was half), and only an S3 store needs it: every command that opens a repository imports
 * this file, since openBlobStore() picks the store from a string.
 */
interface AwsSdk {
  s3: typeof import('@aws-sdk/client-s3');
  storage: typeof import('@aws-sdk/lib-storage');
  presigner: typeof import('@aws-sdk/s3-request-presigner');
}
let sdk: AwsSdk | undefined;
function aws(): AwsSdk {
  if (!sdk) {
    const require = createRequire(import.meta.url);
    sdk = {
      s3: require('@aws-sdk/client-s3'),
      storage: require('@aws-sdk/lib-storage'),
      presigner: require('@aws-sdk/s3-request-presigner'),
    };
  }
  return sdk;
}

/**
 * Buffers up to 16 MiB go up in one PutObject, which RGW checks conditions on and which is retried
 * as it is (the bytes are in memory already); bigger ones, and every stream, go up in parts.
 */
const SINGLE_PUT_MAX = 16 << 20;
/**
 * 8 MiB parts, 2 in flight: about 3 parts in memory (2 sending, 1 filling) whatever the size —
 * measured, +35 MiB RSS for a 40 MiB stream written and read back — and S3's 10,000-part limit
 * reaches 78 GiB, beyond any sysroot. Two streams already keep one RGW busy; more add only memory.
 */
const PART_SIZE = 8 << 20;
const QUEUE_SIZE = 2;

export interface S3Credentials {
  accessKeyId: string;
  secretAccessKey: string;
  sessionToken?: string;
}

export interface S3BlobStoreOptions {
  bucket: string;
  /** Key prefix inside the bucket ('' or ending in '/'; a missing '/' is added). */
  prefix?: string;
  /**
   * The S3 endpoint, e.g. http://127.0.0.1:7480. Default: the SDK's configuration chain
   * (AWS_ENDPOINT_URL_S3, AWS_ENDPOINT_URL, `endpoint_url` in the profile), else AWS.
   */
  endpoint?: string;
  /** Default: the SDK's chain (AWS_REGION, the profile's region). */
  region?: string;
  /** Default: the SDK's chain (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE, SSO, IMDS…). */
  credentials?: S3Credentials;
  /** Path-style URLs (http://host/bucket/key); default: on when an endpoint is set (RGW, MinIO). */
  forcePathStyle?: boolean;
  retry?: Partial<RetryPolicy>;
  /** Called before each retry wait. */
  onRetry?: (e: RetryEvent) => void;
  /** Abandon a TCP connect after this long (default 5 s). */
  connectionTimeoutMs?: number;
  /** Abandon a request whose socket is idle this long (default 30 s), then retry it. */
  socketTimeoutMs?: number;
}

interface OpenedBody {
  chunks: AsyncIterable<Uint8Array>;
  /** Bytes this response should carry (Content-Length). */
  length: number | undefined;
  etag: string;
  destroy(): void;
}

/** A stream that ended before its Content-Length: as transient as a reset connection. */
class TruncatedBody extends Error {
  readonly code = 'ETRUNCATED';
}

export class S3BlobStore implements BlobStore {
  readonly location: string;
  readonly bucket: string;
  /** '' or a prefix ending in '/'. */
  readonly prefix: string;
  private readonly client: S3Client;
  /** For lib-storage's multipart uploads: the SDK retries each part itself. */
  private readonly uploadClient: S3Client;
  private readonly retry: RetryPolicy;
  private readonly sdk = aws();
  private readonly onRetry: ((e: RetryEvent) => void) | undefined;

  constructor(opts: S3BlobStoreOptions) {
    this.bucket = opts.bucket;
    this.prefix = normalizePrefix(opts.prefix ?? '');
    this.location = `s3://${this.bucket}/${this.prefix}`;
    this.retry = retryPolicy(opts.retry);
    this.onRetry = opts.onRetry;
    const endpointSet = Boolean(
      opts.endpoint || process.env.AWS_ENDPOINT_URL_S3 || process.env.AWS_ENDPOINT_URL,
    );
    const config: S3ClientConfig = {
      forcePathStyle: opts.forcePathStyle ?? endpointSet,
      // The SDK's default (since 3.729) sends CRC32 trailers in aws-chunked bodies, which RGW refuses
      // for streamed bodies (411 MissingContentLength); integrity is ours to check anyway (sha256).
      requestChecksumCalculation: 'WHEN_REQUIRED',
      responseChecksumValidation: 'WHEN_REQUIRED',
      requestHandler: {
        connectionTimeout: opts.connectionTimeoutMs ?? 5_000,
        socketTimeout: opts.socketTimeoutMs ?? 30_000,
      },
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      ...(opts.region ? { region: opts.region } : {}),
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
    };
    const { S3Client } = this.sdk.s3;
    this.client = new S3Client({ ...config, maxAttempts: 1 });
    this.uploadClient = new S3Client({ ...config, maxAttempts: this.retry.attempts, retryMode: 'standard' });
  }

  /** Close the connection pools (idle keep-alive sockets would otherwise linger). */
  close(): void {
    this.client.destroy();
    this.uploadClient.destroy();
  }

  private s3Key(key: string): string {
    return this.prefix + key;
  }

  async read(key: string): Promise<Buffer | undefined> {
    return this.withRetry('read', key, async () => {
      try {
        const r = await this.client.send(
          new this.sdk.s3.GetObjectCommand({ Bucket: this.bucket, Key: this.s3Key(key) }),
        );
        const bytes = (await r.Body?.transformToByteArray()) ?? new Uint8Array();
        return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
      } catch (e) {
        if (isNotFound(describeS3Error(e))) return undefined;
        throw e;
      }
    });
  }

  async stat(key: string): Promise<BlobStat | undefined> {
    return this.withRetry('stat', key, async () => {
      try {
        const h = await this.client.send(
          new this.sdk.s3.HeadObjectCommand({ Bucket: this.bucket, Key: this.s3Key(key) }),
        );
        return {
          size: h.ContentLength ?? 0,
          mtimeMs: h.LastModified?.getTime() ?? 0,
          etag: unquote(h.ETag ?? ''),
        };
      } catch (e) {
        // A HEAD has no body, so a missing bucket is a 404 too: it reads as a missing key here.
        if (isNotFound(describeS3Error(e))) return undefined;
        throw e;
      }
    });
  }

  /**
   * Streams the object (or `Range: bytes=start-(end-1)`). A connection lost mid-body is resumed
   * from the byte reached with a new ranged GET, provided the object still has the etag it started
   * with (a replaced blob is never spliced from two versions).
   */
  async readStream(
    key: string,
    range?: { start: number; end: number },
  ): Promise<AsyncIterable<Buffer> | undefined> {
    const start = range?.start ?? 0;
    const end = range?.end;
    if (end !== undefined && end <= start) return (await this.stat(key)) ? empty() : undefined;
    const first = await this.openBody(key, start, end);
    if (first === 'missing') return undefined;
    if (first === 'beyond') return empty();
    return this.resumingBody(key, first, start, end);
  }

  private async openBody(
    key: string,
    start: number,
    end: number | undefined,
  ): Promise<OpenedBody | 'missing' | 'beyond'> {
    const Range =
      start > 0 || end !== undefined ? `bytes=${start}-${end === undefined ? '' : end - 1}` : undefined;
    return this.withRetry('read', key, async () => {
      try {
        const r = await this.client.send(
          new this.sdk.s3.GetObjectCommand({ Bucket: this.bucket, Key: this.s3Key(key), Range }),
        );
        return nodeBody(r.Body, r.ContentLength, unquote(r.ETag ?? ''));
      } catch (e) {
        const f = describeS3Error(e);
        if (isNotFound(f)) return 'missing';
        // S3 refuses a range that starts at or past the end (416); a file read there gives nothing.
        if (isInvalidRange(f)) return 'beyond';
        throw e;
      }
    });
  }

  private async *resumingBody(
    key: string,
    first: OpenedBody,
    start: number,
    end: number | undefined,
  ): AsyncGenerator<Buffer> {
    let current = first;
    let pos = start;
    let failures = 0;
    try {
      for (;;) {
        try {
          let got = 0;
          for await (const chunk of current.chunks) {
            const b = Buffer.isBuffer(chunk)
              ? chunk
              : Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength);
            got += b.length;
            pos += b.length;
            yield b;
          }
          if (current.length !== undefined && got < current.length)
            throw new TruncatedBody(`body ended after ${got} of ${current.length} bytes`);
          return;
        } catch (e) {
          if (e instanceof RegistryError) throw e;
          const f = describeS3Error(e);
          failures++;
          if (!isTransient(f) || failures >= this.retry.attempts) throw this.fail('read', key, f, failures);
          await this.pause('read', key, f, failures);
          current.destroy();
          if (end !== undefined && pos >= end) return;
          const next = await this.openBody(key, pos, end);
          if (next === 'beyond') return;
          if (next === 'missing' || next.etag !== first.etag) {
            if (next !== 'missing') next.destroy();
            throw new RegistryError(
              'E_IO',
              `${this.location}: ${key} was replaced while it was being read`,
              { path: key, key, expected: first.etag, found: next === 'missing' ? 'nothing' : next.etag },
              'read it again',
            );
          }
          current = next;
        }
      }
    } finally {
      // A consumer that stops early must not leave the response (and its socket) open.
      current.destroy();
    }
  }

  async createOnce(key: string, data: Buffer | AsyncIterable<Buffer>): Promise<boolean> {
    if (Buffer.isBuffer(data) && data.length <= SINGLE_PUT_MAX)
      return this.conditionalPut('createOnce', key, data, null);
    return this.createOnceMultipart(key, data);
  }

  /**
   * A stream, or a buffer over 16 MiB, as a multipart upload (lib-storage: 8 MiB parts, 2 in flight).
   *
   * RGW ignores If-None-Match on CompleteMultipartUpload (AWS honours it), so write-once rests on a
   * HEAD first: two writers that both pass it both complete, and the later completion replaces the
   * earlier object. That is harmless where big blobs are written — content-addressed objects
   * (`objects/XX/….filez`), whose key is the sha256 of their content and whose bytes ObjectStore has
   * verified against it, so both writers store the same bytes, and S3 makes a completed upload
   * visible at once, whole: a reader sees one complete copy or the other, never a mix. Blobs that are
   * not content-addressed and must not be replaced (ref log records, tokens: a few hundred bytes) are
   * Buffers and take the single-PUT path, where RGW does check the condition.
   *
   * A stream that turns out to fit in one part is sent by lib-storage as one PutObject with
   * If-None-Match, which RGW checks; if the SDK retried one that had landed, the 412 that follows is
   * told apart from a real one by comparing the stored ETag (MD5 of a one-part object) with ours.
   */
  private async createOnceMultipart(key: string, data: Buffer | AsyncIterable<Buffer>): Promise<boolean> {
    if (await this.stat(key)) {
      await discard(data);
      return false;
    }
    let sourceError: { error: unknown } | undefined;
    let total = 0;
    const md5 = createHash('md5');
    const tapped = async function* (src: AsyncIterable<Buffer>): AsyncGenerator<Buffer> {
      try {
        for await (const c of src) {
          total += c.length;
          // Only a one-part upload's ETag is the MD5 of its bytes: stop hashing past one part.
          if (total <= PART_SIZE) md5.update(c);
          yield c;
        }
      } catch (e) {
        sourceError = { error: e };
        throw e;
      }
    };
    const body = Buffer.isBuffer(data) ? data : Readable.from(tapped(data), { objectMode: false });
    try {
      await new this.sdk.storage.Upload({
        client: this.uploadClient,
        params: { Bucket: this.bucket, Key: this.s3Key(key), Body: body, IfNoneMatch: '*' },
        partSize: PART_SIZE,
        queueSize: QUEUE_SIZE,
      }).done();
      return true;
    } catch (e) {
      if (sourceError) throw sourceError.error;
      if (e instanceof RegistryError) throw e;
      const f = describeS3Error(e);
      if (isPreconditionFailed(f)) {
        if (Buffer.isBuffer(data) || total > PART_SIZE) return false;
        return (await this.stat(key))?.etag === md5.digest('hex');
      }
      throw this.fail('createOnce', key, f, 1);
    } finally {
      if (body instanceof Readable) body.destroy();
    }
  }

  async replace(key: string, data: Buffer, opts?: ReplaceOptions): Promise<boolean> {
    if (opts?.ifMatch !== undefined) return this.conditionalPut('replace', key, data, opts.ifMatch);
    await this.withRetry('replace', key, () =>
      this.client.send(
        new this.sdk.s3.PutObjectCommand({ Bucket: this.bucket, Key: this.s3Key(key), Body: data }),
      ),
    );
    return true;
  }

  /**
   * PutObject with If-Match: <etag> (ifMatch a string) or If-None-Match: * (null). A 412 on the first
   * attempt is a clean "no". Anything ambiguous — RGW's 500 for a lost race, a reset connection, a
   * timeout, a 412 after such an attempt (ours may have landed) — is settled by reading the key.
   */
  private async conditionalPut(
    op: string,
    key: string,
    data: Buffer,
    ifMatch: string | null,
  ): Promise<boolean> {
    const condition = ifMatch === null ? { IfNoneMatch: '*' } : { IfMatch: unquote(ifMatch) };
    let uncertain = false;
    for (let attempt = 1; ; attempt++) {
      let f: S3Failure;
      try {
        await this.client.send(
          new this.sdk.s3.PutObjectCommand({
            Bucket: this.bucket,
            Key: this.s3Key(key),
            Body: data,
            ...condition,
          }),
        );
        return true;
      } catch (e) {
        if (e instanceof RegistryError) throw e;
        f = describeS3Error(e);
      }
      const refused = isPreconditionFailed(f);
      if (refused && !uncertain) return false;
      if (!refused && !isTransient(f)) throw this.fail(op, key, f, attempt);
      const settled = await this.settle(op, key, data, ifMatch);
      if (settled !== undefined) return settled;
      uncertain = true;
      if (attempt >= this.retry.attempts) throw this.fail(op, key, f, attempt);
      await this.pause(op, key, f, attempt);
    }
  }

  /**
   * After an ambiguous conditional PUT: true if the key now holds our bytes (our write landed — or an
   * identical one; both leave the blob as the caller wanted), undefined if the store is as it was
   * before (nothing happened: try again), false if another writer's bytes are there.
   */
  private async settle(
    op: string,
    key: string,
    data: Buffer,
    ifMatch: string | null,
  ): Promise<boolean | undefined> {
    const now = await this.withRetry(op, key, async () => {
      try {
        const r = await this.client.send(
          new this.sdk.s3.GetObjectCommand({ Bucket: this.bucket, Key: this.s3Key(key) }),
        );
        const bytes = (await r.Body?.transformToByteArray()) ?? new Uint8Array();
        return {
          bytes: Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength),
          etag: unquote(r.ETag ?? ''),
        };
      } catch (e) {
        if (isNotFound(describeS3Error(e))) return undefined;
        throw e;
      }
    });
    if (!now) return ifMatch === null ? undefined : false;
    if (now.bytes.equals(data)) return true;
    if (ifMatch !== null && now.etag === unquote(ifMatch)) return undefined;
    return false;
  }

  async *list(prefix: string): AsyncIterable<string> {
    let token: string | undefined;
    do {
      const page = await this.withRetry('list', prefix, () =>
        this.client.send(
          new this.sdk.s3.ListObjectsV2Command({
            Bucket: this.bucket,
            Prefix: this.s3Key(prefix),
            ContinuationToken: token,
          }),
        ),
      );
      for (const o of page.Contents ?? []) {
        // Keys ending in '/' are "folder" markers some tools create; a directory has none either.
        if (o.Key && !o.Key.endsWith('/')) yield o.Key.slice(this.prefix.length);
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** No lock on S3: correctness comes from conditional writes (see the top of this file). */
  async withLock<T>(fn: () => Promise<T>): Promise<T> {
    return fn();
  }

  async presignGet(key: string, expiresSeconds: number): Promise<string> {
    try {
      return await this.sdk.presigner.getSignedUrl(
        this.client,
        new this.sdk.s3.GetObjectCommand({ Bucket: this.bucket, Key: this.s3Key(key) }),
        { expiresIn: expiresSeconds },
      );
    } catch (e) {
      throw this.fail('presign', key, describeS3Error(e), 1);
    }
  }

  private async withRetry<T>(op: string, key: string, fn: () => Promise<T>): Promise<T> {
    for (let attempt = 1; ; attempt++) {
      try {
        return await fn();
      } catch (e) {
        if (e instanceof RegistryError) throw e;
        const f = describeS3Error(e);
        if (!isTransient(f) || attempt >= this.retry.attempts) throw this.fail(op, key, f, attempt);
        await this.pause(op, key, f, attempt);
      }
    }
  }

  private async pause(op: string, key: string, f: S3Failure, attempt: number): Promise<void> {
    const delayMs = backoffDelay(attempt - 1, this.retry);
    this.onRetry?.({ op, key, attempt, code: f.code, status: f.status, delayMs });
    await sleep(delayMs);
  }

  private fail(op: string, key: string, f: S3Failure, attempts: number): RegistryError {
    return s3IoError(f, op, this.location, key, attempts);
  }
}

export function normalizePrefix(prefix: string): string {
  const p = prefix.replace(/^\/+/, '');
  return p === '' || p.endsWith('/') ? p : `${p}/`;
}

/** S3 returns ETags quoted ("…"); RGW wants them back without (see the top of this file). */
function unquote(etag: string): string {
  return etag.replace(/^(W\/)?"(.*)"$/, '$2');
}

async function* empty(): AsyncGenerator<Buffer> {}

/** A GetObject body as Node gives it (an IncomingMessage), without the SDK's types. */
function nodeBody(body: unknown, length: number | undefined, etag: string): OpenedBody {
  const destroy = (): void => {
    const d = typeof body === 'object' && body !== null ? (body as { destroy?: unknown }).destroy : undefined;
    if (typeof d === 'function') d.call(body);
  };
  if (typeof body !== 'object' || body === null || !(Symbol.asyncIterator in body)) {
    // No body at all (a zero-length object can come back so): nothing to read.
    return { chunks: empty(), length: 0, etag, destroy };
  }
  return { chunks: body as AsyncIterable<Uint8Array>, length, etag, destroy };
}

/** Release a source we will not read (an fs stream's iterator closes its descriptor on return()). */
async function discard(data: Buffer | AsyncIterable<Buffer>): Promise<void> {
  if (Buffer.isBuffer(data)) return;
  await data[Symbol.asyncIterator]().return?.();
}
