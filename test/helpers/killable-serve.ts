/**
 * `sysroot serve` (the built CLI) as a separate process, so a test can kill -9 it and start it again
 * on the same repository and port, as a crash and a supervisor's restart would. Its stderr (the
 * access log, one line per request) is kept per instance. Stopped by pid, never by name.
 */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/sysroot.js', import.meta.url));
const DIST = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

/** A server that printed nothing for this long did not start (it takes ~0.4 s on 2 busy cores). */
const START_TIMEOUT_MS = 30_000;

export interface ServeOptions {
  env?: NodeJS.ProcessEnv;
  /** Extra flags for `sysroot serve`. */
  args?: string[];
  /** 0 (default): a free port, learnt from the "listening on" line. */
  port?: number;
}

export interface ServeProcess {
  readonly url: string;
  readonly port: number;
  /** The current instance's pid. */
  readonly pid: number;
  /** Every line the current instance wrote to stderr so far. */
  log(): string;
  /** The logs of every instance so far, oldest first (a restart starts a new one). */
  logs(): string[];
  /**
   * Resolve once the current instance's log matches `re` (the log arrives through this process's
   * event loop, so it lags a spawnSync'd client by a tick); reject after `timeoutMs`.
   */
  waitForLog(re: RegExp, timeoutMs?: number): Promise<void>;
  /** kill -9, and wait until the process is gone (reaped). */
  kill9(): Promise<void>;
  /** Start a new instance on the same repository and port (after kill9 or stop). */
  restart(): Promise<void>;
  /** SIGTERM (a clean close), SIGKILL after `graceMs`. Safe to call twice. */
  stop(graceMs?: number): Promise<void>;
}

interface Instance {
  child: ChildProcess;
  stderr: string;
  exited: Promise<void>;
}

function launch(repo: string, port: number, opts: ServeOptions): Instance {
  if (!existsSync(DIST)) throw new Error(`${DIST} is missing: run \`npm run build\` first (npm test does)`);
  const child = spawn(
    process.execPath,
    [BIN, 'serve', '--repo', repo, '--listen', `127.0.0.1:${port}`, ...(opts.args ?? [])],
    { env: { ...process.env, ...opts.env }, stdio: ['ignore', 'ignore', 'pipe'] },
  );
  const inst: Instance = {
    child,
    stderr: '',
    exited: new Promise((resolve) => child.once('exit', () => resolve())),
  };
  child.stderr!.setEncoding('utf8').on('data', (c: string) => {
    inst.stderr += c;
  });
  live.add(child);
  void inst.exited.then(() => live.delete(child));
  return inst;
}

async function listening(inst: Instance): Promise<number> {
  const deadline = Date.now() + START_TIMEOUT_MS;
  while (Date.now() < deadline) {
    const m = /listening on http:\/\/127\.0\.0\.1:(\d+)/.exec(inst.stderr);
    if (m) return Number(m[1]);
    if (inst.child.exitCode !== null || inst.child.signalCode !== null) break;
    await sleep(10);
  }
  const how =
    inst.child.exitCode !== null || inst.child.signalCode !== null
      ? `it exited (code ${inst.child.exitCode}, signal ${inst.child.signalCode})`
      : `no "listening" line in ${START_TIMEOUT_MS} ms`;
  inst.child.kill('SIGKILL');
  throw new Error(`sysroot serve did not start: ${how}; its stderr:\n${inst.stderr}`);
}

/** Every server child still running, so a failed test can stop them (by pid) in afterAll. */
const live = new Set<ChildProcess>();

export async function stopAllServers(): Promise<void> {
  await Promise.all(
    [...live].map(async (child) => {
      child.kill('SIGKILL');
      await new Promise((r) =>
        child.exitCode !== null || child.signalCode !== null ? r(null) : child.once('exit', r),
      );
    }),
  );
}

export async function startServe(repo: string, opts: ServeOptions = {}): Promise<ServeProcess> {
  const instances: Instance[] = [];
  let port = opts.port ?? 0;
  const begin = async (): Promise<void> => {
    const inst = launch(repo, port, opts);
    instances.push(inst);
    port = await listening(inst);
  };
  await begin();
  const cur = (): Instance => instances[instances.length - 1]!;
  return {
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    get pid() {
      return cur().child.pid!;
    },
    log: () => cur().stderr,
    logs: () => instances.map((i) => i.stderr),
    async waitForLog(re, timeoutMs = 10_000) {
      const deadline = Date.now() + timeoutMs;
      while (!re.test(cur().stderr)) {
        if (Date.now() > deadline) throw new Error(`the server never logged ${re}:\n${cur().stderr}`);
        await sleep(10);
      }
    },
    async kill9() {
      cur().child.kill('SIGKILL');
      await cur().exited;
    },
    async restart() {
      const c = cur().child;
      if (c.exitCode === null && c.signalCode === null)
        throw new Error('restart: the server is still running');
      // The port is free again once the process is gone; a connection in TIME_WAIT does not hold it
      // (Node listens with SO_REUSEADDR).
      await begin();
    },
    async stop(graceMs = 15_000) {
      const inst = cur();
      if (inst.child.exitCode !== null || inst.child.signalCode !== null) return;
      inst.child.kill('SIGTERM');
      const timer = setTimeout(() => inst.child.kill('SIGKILL'), graceMs);
      await inst.exited;
      clearTimeout(timer);
    },
  };
}
