/**
 * A real S3 server for tests: a throwaway one-node Ceph RADOS Gateway started by
 * scripts/s3-server.sh on 127.0.0.1 (about 1 s once the Debian packages are installed).
 *
 * There is no mock in its place. A machine that cannot run it (not root and Ceph not installed,
 * no Debian mirror) fails the S3 tests with an explanation; they are never skipped, in CI or out.
 *
 * Each server watches the process that started it (`-w`): if a test file dies or its worker is killed
 * before stop(), the server stops itself within ~2 s, so no Ceph daemon outlives the run.
 */
import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';

const SCRIPT = fileURLToPath(new URL('../../scripts/s3-server.sh', import.meta.url));

export interface S3Server {
  /** `http://127.0.0.1:PORT`; path-style addressing only. */
  endpoint: string;
  accessKeyId: string;
  secretAccessKey: string;
  region: string;
  /** Created by the start; empty. */
  bucket: string;
  /** All of the cluster's state, logs (`log/`) and pid files (`pids/`). Deleted by stop(). */
  stateDir: string;
  /**
   * The processes the start left running, by name: `mon.a`, `osd.0`, `rgw` (the Ceph daemons) and
   * `watch` (the script, waiting for this process to exit), read from `stateDir/pids`.
   */
  pids(): Record<string, number>;
  /** Stops exactly this server's daemons and deletes stateDir. Safe to call twice. */
  stop(): Promise<void>;
}

function run(args: string[], timeoutMs: number): Promise<{ stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    execFile(
      'bash',
      [SCRIPT, ...args],
      { encoding: 'utf8', timeout: timeoutMs, maxBuffer: 16 * 1024 * 1024 },
      (error, stdout, stderr) => {
        if (error === null) resolve({ stdout, stderr });
        else reject(Object.assign(error, { stdout, stderr }));
      },
    );
  });
}

/** Parses the script's `export NAME=VALUE` lines (VALUE quoted by bash's `printf %q`). */
export function parseExports(stdout: string): Record<string, string> {
  const vars: Record<string, string> = {};
  for (const line of stdout.split('\n')) {
    if (line.trim() === '') continue;
    const m = /^export ([A-Z0-9_]+)=(.*)$/.exec(line);
    if (!m) throw new Error(`s3-server.sh printed a line that is not an export: ${JSON.stringify(line)}`);
    const raw = m[2]!;
    if (raw.startsWith("$'")) throw new Error(`cannot parse the bash-quoted value of ${m[1]}: ${raw}`);
    vars[m[1]!] = raw === "''" ? '' : raw.replace(/\\(.)/g, '$1');
  }
  return vars;
}

function cannotStart(why: string, detail: string): Error {
  const ci = process.env.CI === 'true' ? ' (CI=true: this fails the run)' : '';
  return new Error(
    [
      '',
      '=================================================================================',
      `S3 TESTS NEED A REAL CEPH RADOS GATEWAY, AND IT COULD NOT BE STARTED${ci}.`,
      `Why: ${why}`,
      'They are never skipped and have no mock: they prove the registry works against a real S3.',
      'Fix: run the tests as root on Debian/Ubuntu (the script installs radosgw, ceph-mon and',
      'ceph-osd), or install those packages first: apt-get install -y radosgw ceph-mon ceph-osd.',
      `By hand: bash ${SCRIPT} start -b test`,
      '=================================================================================',
      detail,
    ].join('\n'),
  );
}

/** Starts a fresh S3 server with an empty bucket (`opts.bucket`, default `sysroot-test`). */
export async function startS3(opts: { bucket?: string } = {}): Promise<S3Server> {
  const bucket = opts.bucket ?? 'sysroot-test';
  let out: { stdout: string; stderr: string };
  try {
    // Installing the packages on a fresh machine takes ~30 s; a start after that ~1 s.
    out = await run(['start', '-b', bucket, '-w', String(process.pid)], 600_000);
  } catch (error) {
    const e = error as NodeJS.ErrnoException & { stderr?: string; killed?: boolean; signal?: string };
    const stderr = (e.stderr ?? '').trimEnd();
    const last = stderr
      .split('\n')
      .filter((l) => l.includes('ERROR'))
      .pop();
    const why = e.killed
      ? `scripts/s3-server.sh start timed out (${e.signal ?? 'killed'})`
      : (last?.replace(/^s3-server [\d.]+s: ERROR: /, '') ??
        `scripts/s3-server.sh start failed: ${e.message}`);
    // A failed start leaves its logs for the message above; remove them and anything left running.
    const stateDir = /stop -d (\S+) removes them/.exec(stderr)?.[1];
    if (stateDir) await run(['stop', '-d', stateDir], 60_000).catch(() => undefined);
    throw cannotStart(why, `--- scripts/s3-server.sh stderr:\n${stderr}`);
  }

  const vars = parseExports(out.stdout);
  const need = ['S3_ENDPOINT', 'S3_ACCESS_KEY_ID', 'S3_SECRET_ACCESS_KEY', 'S3_REGION', 'S3_STATE_DIR'];
  const missing = need.filter((k) => !vars[k]);
  if (missing.length > 0) {
    if (vars.S3_STATE_DIR) await run(['stop', '-d', vars.S3_STATE_DIR], 60_000).catch(() => undefined);
    throw cannotStart(`the start printed no ${missing.join(', ')}`, `stdout:\n${out.stdout}\n${out.stderr}`);
  }
  const stateDir = vars.S3_STATE_DIR!;

  let stopped: Promise<void> | undefined;
  return {
    endpoint: vars.S3_ENDPOINT!,
    accessKeyId: vars.S3_ACCESS_KEY_ID!,
    secretAccessKey: vars.S3_SECRET_ACCESS_KEY!,
    region: vars.S3_REGION!,
    bucket: vars.S3_BUCKET || bucket,
    stateDir,
    pids: () => readPids(stateDir),
    stop() {
      stopped ??= run(['stop', '-d', stateDir], 60_000).then(
        () => undefined,
        (error: Error & { stderr?: string }) => {
          throw new Error(
            `scripts/s3-server.sh stop -d ${stateDir} failed:\n${error.stderr ?? error.message}`,
          );
        },
      );
      return stopped;
    },
  };
}

function readPids(stateDir: string): Record<string, number> {
  const dir = join(stateDir, 'pids');
  const pids: Record<string, number> = {};
  let names: string[];
  try {
    names = readdirSync(dir);
  } catch {
    return pids; // stopped: the state directory is gone
  }
  for (const name of names) {
    if (!name.endsWith('.pid')) continue;
    const pid = Number(readFileSync(join(dir, name), 'utf8').trim());
    if (Number.isInteger(pid) && pid > 0) pids[name.slice(0, -'.pid'.length)] = pid;
  }
  return pids;
}

/**
 * The standard AWS variables for a child process (the AWS CLI, SDKs, our own CLI) to reach `s3`;
 * lay them over process.env: `{ ...process.env, ...s3Env(s3) }`.
 */
export function s3Env(s3: S3Server): NodeJS.ProcessEnv {
  return {
    AWS_ENDPOINT_URL: s3.endpoint,
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    AWS_REGION: s3.region,
  };
}

/**
 * S3Client options that work with this RGW (Ceph 16): path-style URLs, and no CRC32 checksum
 * trailers, which SDK versions since early 2025 send by default and this RGW does not understand.
 */
export function s3ClientConfig(s3: S3Server) {
  return {
    endpoint: s3.endpoint,
    region: s3.region,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
    forcePathStyle: true,
    requestChecksumCalculation: 'WHEN_REQUIRED' as const,
    responseChecksumValidation: 'WHEN_REQUIRED' as const,
  };
}
