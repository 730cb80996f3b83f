/**
 * One fuzz run (http-fuzz.ts) against a registry with real commits: part in process through
 * `app.request()` (fast, and every answer's body is checked), part as raw bytes over real sockets to
 * `sysroot serve` running as a child process (framing that lies, clients that hang up; the server's
 * access log gives the status of requests whose answer the client never read). The caller asserts
 * on the report; test/fuzz-http.test.ts runs 10,000 requests, test/soak/fuzz-http.test.ts 200,000.
 */
import { createApp } from '../../server/app.js';
import { streamLogger } from '../../server/logger.js';
import { objectPath } from '../../src/objects/index.js';
import { HOSTILE_REF, type HostileFixture, hostileFixture } from './hostile-fixture.js';
import {
  type FuzzRequest,
  type FuzzWorld,
  nextRequest,
  seeded,
  sendInProcess,
  sendRaw,
} from './http-fuzz.js';
import { type ServeProcess, startServe } from './serve-process.js';

export interface FuzzReport {
  seed: number;
  inProcess: number;
  socket: number;
  seconds: number;
  /** Status → count, in process and over sockets (0: closed without an answer). */
  statuses: Record<string, number>;
  /** Socket requests closed without an answer, by framing (a client that hung up gets none). */
  unanswered: Record<string, number>;
  /** Requests answered 5xx, described. */
  serverErrors: string[];
  /** 4xx answers in process whose body is not `{"error": {"code", "message"}}`. */
  unclearErrors: string[];
  /** Access-log lines with a 5xx, and `error` lines, from both servers. */
  logErrors: string[];
}

export interface FuzzRun {
  report: FuzzReport;
  fixture: HostileFixture;
  /** fixture.snapshot() before the first request. */
  before: Map<string, string>;
  serve: ServeProcess;
}

function describeRequest(r: FuzzRequest): string {
  const auth = r.headers.find(([k]) => k === 'authorization') ? ' (with authorization)' : '';
  return `${r.method} ${r.target.slice(0, 160)} framing=${r.framing} body=${r.body?.length ?? '-'}${auth}`;
}

function logProblems(lines: string[]): string[] {
  return lines.filter((l) => / 5\d\d \d+ \d+ms/.test(l) || /^\S+ error /.test(l)).map((l) => l.slice(0, 400));
}

export async function runFuzz(o: {
  seed: number;
  inProcess: number;
  socket: number;
  /** Sockets open at once. */
  concurrency?: number;
}): Promise<FuzzRun> {
  const fixture = await hostileFixture();
  const { repo, tokens } = fixture;
  const before = fixture.snapshot();
  const stored = new Map<string, Buffer>();
  for (const id of fixture.objects) {
    const [sha, type] = id.split('.') as [string, 'file'];
    stored.set(id, (await repo.blobs.read(objectPath(sha, type)))!);
  }
  const world: FuzzWorld = {
    ref: HOSTILE_REF,
    commits: fixture.commits,
    objects: fixture.objects,
    stored,
    tokens: [tokens.puller, tokens.strayPusher, tokens.revoked, tokens.wrongSecret, 'hunter2'],
  };
  const rng = seeded(o.seed);
  const statuses: Record<string, number> = {};
  const count = (s: number) => {
    statuses[s] = (statuses[s] ?? 0) + 1;
  };
  const serverErrors: string[] = [];
  const unanswered: Record<string, number> = {};
  const unclearErrors: string[] = [];
  const started = performance.now();

  // In process, with small JSON and upload limits so that oversized bodies are common.
  const log: string[] = [];
  const app = createApp({
    repo,
    tokens: fixture.tokenStore,
    anonymousPull: true,
    logger: streamLogger((l) => log.push(l)),
    limits: { maxJsonBytes: 64 * 1024, maxMetadataBytes: 64 * 1024, maxFileBytes: 256 * 1024 },
  });
  for (let i = 0; i < o.inProcess; i++) {
    const req = await nextRequest(rng, world);
    const res = await sendInProcess(app, req);
    count(res.status);
    if (res.status >= 500)
      serverErrors.push(`${res.status} ${describeRequest(req)}: ${res.body.slice(0, 300)}`);
    // 416 is a range answer (Content-Range says why), not an API error.
    else if (res.status >= 400 && res.status !== 416 && req.method !== 'HEAD') {
      let code: unknown;
      try {
        const e = (JSON.parse(res.body) as { error?: { code?: unknown; message?: unknown } }).error;
        code = typeof e?.message === 'string' && e.message.length > 0 ? e.code : undefined;
      } catch {
        code = undefined;
      }
      if (typeof code !== 'string' || !/^E_[A-Z_]+$/.test(code))
        unclearErrors.push(`${res.status} ${describeRequest(req)}: ${res.body.slice(0, 200)}`);
    }
  }

  // Over sockets, to a separate server process on the same repository.
  const serve = await startServe(['--repo', repo.location]);
  const concurrency = o.concurrency ?? 8;
  let sent = 0;
  const worker = async () => {
    while (sent < o.socket) {
      sent++;
      const req = await nextRequest(rng, world);
      let status: number;
      try {
        status = await sendRaw(serve.port, req);
      } catch (e) {
        serverErrors.push(`${(e as Error).message} (${describeRequest(req)})`);
        continue;
      }
      count(status);
      if (status === 0) unanswered[req.framing] = (unanswered[req.framing] ?? 0) + 1;
      if (status >= 500) serverErrors.push(`${status} ${describeRequest(req)}`);
    }
  };
  await Promise.all(Array.from({ length: concurrency }, worker));
  // The access log line of a request is written when its answer is sent (or the client is gone).
  await new Promise((r) => setTimeout(r, 300));

  const report: FuzzReport = {
    seed: o.seed,
    inProcess: o.inProcess,
    socket: o.socket,
    seconds: Math.round((performance.now() - started) / 100) / 10,
    statuses,
    unanswered,
    serverErrors,
    unclearErrors,
    logErrors: [...logProblems(log), ...logProblems(serve.stderr().split('\n'))],
  };
  return { report, fixture, before, serve };
}
