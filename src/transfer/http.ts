/**
 * The registry client's HTTP/1.1 transport, on node:http (and node:https for https URLs).
 *
 * Not Node's fetch: its first call loads and compiles undici (~18 ms of every command's start-up:
 * 27 ms against 9 ms for a first GET of a ref, 2026-11-25), and its web streams cost ~100 ms more
 * CPU to receive one 44 MB pack (163 ms against 62 ms; medians of 4 alternating runs over loopback).
 * A cold pull is ~0.75 s, so that was a sixth of the client's CPU.
 *
 * What fetch did for us and this does too: keep-alive connections (agents of our own), redirects
 * of bodiless requests (a node serving objects from a bucket answers 307 to a presigned URL; the
 * Authorization header is dropped when the origin changes, as fetch does), an AbortSignal that
 * stops the request and its body, and request bodies streamed with backpressure.
 */
import type { Agent, ClientRequest, IncomingHttpHeaders, IncomingMessage, RequestOptions } from 'node:http';

/** A request body streamed from `source`; `onChunk` runs as each chunk is handed to the socket. */
export interface StreamedBody {
  source: AsyncIterable<Uint8Array>;
  onChunk?: () => void;
  /**
   * Runs, in order, once each chunk has been written to the socket (its write callback, without an
   * error): the source may then reuse the chunk's memory. Not called for chunks of a request that
   * failed.
   */
  written?: (chunk: Uint8Array) => void;
}

/** A body source that reuses its chunks' memory once told they were written (StreamedBody.written). */
export interface ReusesChunks {
  written(chunk: Uint8Array): void;
}

export function reusesChunks(source: object): source is ReusesChunks {
  return typeof (source as Partial<ReusesChunks>).written === 'function';
}

export interface HttpRequest {
  method: 'GET' | 'POST' | 'PUT';
  url: string;
  headers: Record<string, string>;
  body?: Buffer | StreamedBody;
  signal?: AbortSignal;
}

/** An answer whose headers have arrived; the body is read from `body` (Buffers) or dropped with cancel(). */
export interface HttpAnswer {
  status: number;
  statusText: string;
  header(name: string): string | undefined;
  body: AsyncIterable<Buffer>;
  /** Drop the rest of the body (and the connection, if the body was not read to its end). */
  cancel(): void;
}

/** Redirects followed for a bodiless request; fetch's limit is 20, a registry needs one. */
const MAX_REDIRECTS = 5;

type HttpModule = typeof import('node:http');
interface Transport {
  mod: HttpModule;
  agent: Agent;
}
let httpTransport: Transport | undefined;
let httpsTransport: Transport | undefined;

/**
 * node:http or node:https, each with an agent of our own. Not Node's global agents: they give every
 * socket a 5 s timeout, and a request may rightly be quiet for longer (a big file deflated before
 * the pack's first byte, a server generating a GiB-sized pack from a bucket). Idleness is the
 * client's IdleTimer's business (60 s by default). Idle pooled sockets are unref'd by the agent, so
 * they never keep the process alive.
 */
async function transportFor(protocol: string): Promise<Transport> {
  if (protocol === 'https:') {
    if (!httpsTransport) {
      const mod = (await import('node:https')) as unknown as HttpModule & typeof import('node:https');
      httpsTransport = { mod, agent: new mod.Agent({ keepAlive: true }) };
    }
    return httpsTransport;
  }
  if (!httpTransport) {
    const mod = await import('node:http');
    httpTransport = { mod, agent: new mod.Agent({ keepAlive: true }) };
  }
  return httpTransport;
}

class Answer implements HttpAnswer {
  constructor(
    private readonly res: IncomingMessage,
    /** The body as sent, or decoded when a proxy compressed it (Content-Encoding). */
    readonly body: AsyncIterable<Buffer> = res,
  ) {}

  get status(): number {
    return this.res.statusCode ?? 0;
  }

  get statusText(): string {
    return this.res.statusMessage ?? '';
  }

  header(name: string): string | undefined {
    const v = (this.res.headers as IncomingHttpHeaders)[name.toLowerCase()];
    return Array.isArray(v) ? v.join(', ') : v;
  }

  cancel(): void {
    // A body read to its end leaves the connection to the agent, for the next request.
    if (!this.res.complete) this.res.destroy();
  }
}

/**
 * The answer, its body decoded if it came compressed. We never send Accept-Encoding, but a proxy in
 * front of a registry may compress anyway, and fetch used to decode that for us.
 */
async function answer(res: IncomingMessage): Promise<Answer> {
  const encoding = String(res.headers['content-encoding'] ?? '')
    .trim()
    .toLowerCase();
  if (encoding === '' || encoding === 'identity') return new Answer(res);
  const zlib = await import('node:zlib');
  const { pipeline } = await import('node:stream');
  const decoder =
    encoding === 'gzip' || encoding === 'x-gzip'
      ? zlib.createGunzip()
      : encoding === 'deflate'
        ? zlib.createInflate()
        : encoding === 'br'
          ? zlib.createBrotliDecompress()
          : undefined;
  // Anything else is passed on as it is: what reads it (JSON, a verified pack) will say it is wrong.
  if (!decoder) return new Answer(res);
  pipeline(res, decoder, () => {});
  return new Answer(res, decoder);
}

/** Send one request; resolves when the answer's headers arrive (following redirects of bodiless requests). */
export async function send(req: HttpRequest): Promise<HttpAnswer> {
  let url = new URL(req.url);
  let headers = req.headers;
  for (let hop = 0; ; hop++) {
    const res = await once(url, req, headers);
    const status = res.statusCode ?? 0;
    const location = res.headers.location;
    if (req.body !== undefined || !isRedirect(status) || !location || hop >= MAX_REDIRECTS) {
      return answer(res);
    }
    res.resume();
    const next = new URL(location, url);
    if (next.protocol !== 'http:' && next.protocol !== 'https:') return answer(res);
    if (next.origin !== url.origin && headers.authorization !== undefined) {
      // The token is for the registry, never for a bucket or another host it points to.
      const { authorization: _dropped, ...rest } = headers;
      headers = rest;
    }
    url = next;
  }
}

function isRedirect(status: number): boolean {
  return status === 301 || status === 302 || status === 303 || status === 307 || status === 308;
}

async function once(url: URL, req: HttpRequest, headers: Record<string, string>): Promise<IncomingMessage> {
  const { mod, agent } = await transportFor(url.protocol);
  const body = req.body;
  const h: Record<string, string> = { ...headers };
  if (Buffer.isBuffer(body)) h['content-length'] = String(body.length);
  const options: RequestOptions = { method: req.method, headers: h, signal: req.signal, agent };
  return new Promise<IncomingMessage>((resolve, reject) => {
    let response: IncomingMessage | undefined;
    /** The whole body has been handed to the socket. */
    let sent = !isStreamed(body);
    const r: ClientRequest = mod.request(url, options, (res) => {
      response = res;
      if (!sent) {
        // Answered before the body was all sent (a refusal): the connection cannot carry another
        // request, so it is closed once the answer has been read. Left open, it would keep the process
        // alive until the server hung up.
        const drop = (): void => {
          r.destroy();
        };
        res.once('end', drop).once('close', drop);
      }
      resolve(res);
    });
    // After the answer, a write that fails (the server answered early and closed) is no news:
    // the answer says what happened.
    r.on('error', (e) => {
      if (!response) reject(e);
    });
    if (!isStreamed(body)) r.end(body);
    else {
      // Headers now, not with the first chunk: a pack's first bytes can be seconds away (a big file
      // is deflated first). Held back, on Node's global agent, the push of a 384 MiB file failed with
      // ECONNRESET on every attempt (~6 s of deflate against a 5 s socket timeout); either this or
      // our own agent (transportFor) fixed it, and both are right on their own.
      r.flushHeaders();
      pump(
        r,
        body,
        () => response !== undefined,
        () => {
          sent = true;
        },
      ).catch((e: unknown) => {
        r.destroy(e instanceof Error ? e : new Error(String(e)));
      });
    }
  });
}

/**
 * Write `body` into the request, one chunk at a time, waiting for 'drain' when the socket is full.
 * Stops (and closes the source) when the request is destroyed or the server has answered: a server
 * that refuses a pack halfway (400 for a corrupt record, 507 for a full disk) answers at once.
 */
async function pump(
  r: ClientRequest,
  body: StreamedBody,
  answered: () => boolean,
  onSent: () => void,
): Promise<void> {
  const it = body.source[Symbol.asyncIterator]();
  let finished = false;
  const stopped = (): boolean => r.destroyed || answered();
  try {
    for (;;) {
      if (stopped()) return;
      const n = await it.next();
      if (n.done) {
        finished = true;
        onSent();
        r.end();
        return;
      }
      if (stopped()) return;
      body.onChunk?.();
      const chunk = n.value;
      const written = body.written;
      const more = written ? r.write(chunk, (e) => e || written(chunk)) : r.write(chunk);
      if (!more) await drained(r);
    }
  } finally {
    if (!finished) await it.return?.();
  }
}

function isStreamed(body: HttpRequest['body']): body is StreamedBody {
  return body !== undefined && !Buffer.isBuffer(body);
}

function drained(r: ClientRequest): Promise<void> {
  return new Promise<void>((resolve) => {
    const done = (): void => {
      r.off('drain', done);
      r.off('close', done);
      r.off('response', done);
      resolve();
    };
    r.on('drain', done);
    r.on('close', done);
    r.on('response', done);
  });
}
