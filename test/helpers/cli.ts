/** Runs the built `sysroot` CLI (dist/, built by `npm test` and `npm ci`) as a user would. */
import { spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

const BIN = fileURLToPath(new URL('../../bin/sysroot.js', import.meta.url));
const DIST = fileURLToPath(new URL('../../dist/cli/main.js', import.meta.url));

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

export function sysroot(args: string[], opts: { env?: NodeJS.ProcessEnv; input?: string } = {}): CliResult {
  if (!existsSync(DIST)) throw new Error(`${DIST} is missing: run \`npm run build\` first (npm test does)`);
  const r = spawnSync(process.execPath, [BIN, ...args], {
    encoding: 'utf8',
    env: { ...process.env, ...opts.env },
    input: opts.input,
    maxBuffer: 256 * 1024 * 1024,
  });
  return { status: r.status ?? -1, stdout: r.stdout, stderr: r.stderr };
}

/** Run and expect success; returns the last line of stdout (commit checksums are printed there). */
export function sysrootOk(args: string[], opts: { env?: NodeJS.ProcessEnv } = {}): string {
  const r = sysroot(args, opts);
  if (r.status !== 0) throw new Error(`sysroot ${args.join(' ')} exited ${r.status}\n${r.stderr}`);
  return r.stdout.trimEnd().split('\n').pop() ?? '';
}

/**
 * Run the built CLI asynchronously: for tests whose server runs in the same process, where
 * spawnSync would block the event loop that has to answer it.
 */
export async function sysrootAsync(args: string[], env: NodeJS.ProcessEnv = {}): Promise<CliResult> {
  if (!existsSync(DIST)) throw new Error(`${DIST} is missing: run \`npm run build\` first (npm test does)`);
  const child = spawn(process.execPath, [BIN, ...args], {
    env: { ...process.env, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let stdout = '';
  let stderr = '';
  child.stdout.setEncoding('utf8').on('data', (c: string) => {
    stdout += c;
  });
  child.stderr.setEncoding('utf8').on('data', (c: string) => {
    stderr += c;
  });
  const status = await new Promise<number>((r) => child.on('close', (c) => r(c ?? -1)));
  return { status, stdout, stderr };
}
