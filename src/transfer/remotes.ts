/**
 * Named registry URLs (`sysroot remote add NAME URL`), kept in
 * `${XDG_CONFIG_HOME:-~/.config}/sysroot-registry/remotes.json` ($SYSROOT_CONFIG_DIR overrides the
 * directory). URLs and public keys are stored: tokens stay in $SYSROOT_TOKEN or a secret store,
 * never in a file that gets copied between machines. A remote's `verifyKeys` (public keys, as text:
 * ed25519 base64 or an armored OpenPGP key) are the keys a pull that follows a ref must find a
 * signature by; `revokedKeys` are refused (docs/signing.md).
 */
import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rename, unlink, writeFile } from 'node:fs/promises';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import type { z } from 'zod';
import { errnoCode, RegistryError } from '../errors.js';
import { lazy } from '../lazy-zod.js';
import { parseBaseUrl } from './client.js';

export function configDir(env: NodeJS.ProcessEnv = process.env): string {
  if (env.SYSROOT_CONFIG_DIR) return resolve(env.SYSROOT_CONFIG_DIR);
  const base = env.XDG_CONFIG_HOME ? resolve(env.XDG_CONFIG_HOME) : join(homedir(), '.config');
  return join(base, 'sysroot-registry');
}

export function remotesFile(env: NodeJS.ProcessEnv = process.env): string {
  return join(configDir(env), 'remotes.json');
}

const NAME = /^[A-Za-z0-9_][-._A-Za-z0-9]{0,63}$/;

const remotesSchema = lazy((z) =>
  z.object({
    version: z.literal(1),
    remotes: z.record(
      z.string(),
      z.object({
        url: z.string(),
        verifyKeys: z.array(z.string()).optional(),
        revokedKeys: z.array(z.string()).optional(),
      }),
    ),
  }),
);

type RemoteEntry = z.infer<ReturnType<typeof remotesSchema>>['remotes'][string];

export interface Remote {
  name: string;
  url: string;
  /** Public keys (text) a followed ref must be signed by. */
  verifyKeys?: string[];
  revokedKeys?: string[];
}

export function assertRemoteName(name: string): string {
  if (!NAME.test(name)) {
    throw new RegistryError(
      'E_USAGE',
      `invalid remote name ${JSON.stringify(name)}`,
      { found: name },
      'a remote name is letters, digits, "_", "-" and "." (at most 64), e.g. origin or prod-eu',
    );
  }
  return name;
}

async function load(file: string): Promise<Map<string, RemoteEntry>> {
  let text: string;
  try {
    text = await readFile(file, 'utf8');
  } catch (e) {
    if (errnoCode(e) === 'ENOENT') return new Map();
    throw new RegistryError('E_IO', `cannot read ${file}: ${(e as Error).message}`, { path: file });
  }
  let parsed: unknown;
  try {
    parsed = JSON.parse(text);
  } catch {
    throw new RegistryError('E_USAGE', `${file} is not JSON`, { path: file }, 'fix or remove the file');
  }
  const r = remotesSchema().safeParse(parsed);
  if (!r.success) {
    throw new RegistryError(
      'E_USAGE',
      `${file} is malformed: ${r.error.issues[0]?.message}`,
      { path: file },
      'fix or remove the file',
    );
  }
  return new Map(Object.entries(r.data.remotes));
}

export async function listRemotes(file: string = remotesFile()): Promise<Remote[]> {
  const m = await load(file);
  return [...m].map(([name, e]) => ({ name, ...e })).sort((a, b) => (a.name < b.name ? -1 : 1));
}

/** Add or replace a remote. The file is replaced atomically (temp + rename). */
export async function addRemote(
  name: string,
  url: string,
  file: string = remotesFile(),
  keys: { verifyKeys?: string[]; revokedKeys?: string[] } = {},
): Promise<Remote> {
  assertRemoteName(name);
  const base = parseBaseUrl(url);
  const m = await load(file);
  const entry: RemoteEntry = { url: base };
  if (keys.verifyKeys?.length) entry.verifyKeys = keys.verifyKeys;
  if (keys.revokedKeys?.length) entry.revokedKeys = keys.revokedKeys;
  m.set(name, entry);
  const body = {
    version: 1,
    remotes: Object.fromEntries([...m].sort(([a], [b]) => (a < b ? -1 : 1))),
  };
  const dir = resolve(file, '..');
  const tmp = join(dir, `.remotes.json.${process.pid}.${randomBytes(4).toString('hex')}`);
  try {
    await mkdir(dir, { recursive: true });
    await writeFile(tmp, `${JSON.stringify(body, null, 2)}\n`);
    await rename(tmp, file);
  } catch (e) {
    await unlink(tmp).catch(() => {});
    throw new RegistryError('E_IO', `cannot write ${file}: ${(e as Error).message}`, { path: file });
  }
  return { name, ...entry };
}

/** A named remote; E_USAGE with the known names as a hint if there is none. */
export async function lookupRemote(name: string, file: string = remotesFile()): Promise<Remote> {
  const m = await load(file);
  const e = m.get(name);
  if (e) return { name, ...e };
  const known = [...m.keys()].sort();
  throw new RegistryError(
    'E_USAGE',
    `unknown remote "${name}"`,
    { found: name, path: file },
    known.length
      ? `known remotes: ${known.join(', ')}; or add it with: sysroot remote add ${name} URL`
      : `add it with: sysroot remote add ${name} URL (or pass --url URL)`,
  );
}

/** The URL of a named remote. */
export async function resolveRemote(name: string, file: string = remotesFile()): Promise<string> {
  return (await lookupRemote(name, file)).url;
}

/**
 * The URL and remaining arguments of `push`/`pull`: with --url, the positionals are the command's
 * own (`want` of them); without it, one more comes first and is a remote name.
 */
export async function resolveTarget(
  positionals: string[],
  url: string | undefined,
  want: number,
  usage: string,
  file: string = remotesFile(),
): Promise<{ url: string; args: string[] }> {
  if (url !== undefined) {
    if (positionals.length !== want) {
      throw new RegistryError(
        'E_USAGE',
        `expected ${want} argument(s) with --url, got ${positionals.length}`,
        { found: positionals.join(' ') },
        `usage: ${usage}`,
      );
    }
    return { url: parseBaseUrl(url), args: positionals };
  }
  if (positionals.length === want + 1) {
    return { url: await resolveRemote(positionals[0]!, file), args: positionals.slice(1) };
  }
  throw new RegistryError(
    'E_USAGE',
    positionals.length === want
      ? 'no registry given'
      : `expected ${want + 1} arguments, got ${positionals.length}`,
    { found: positionals.join(' ') },
    `usage: ${usage}`,
  );
}

/**
 * Split what commander hands an action — the declared arguments (strings, undefined for an absent
 * optional one, an array for a variadic one), the options object, the Command — into positionals and
 * flags. Written against the values, not the positions, so it works whichever way main.ts declares
 * the arguments.
 */
export function commandArgs<F extends object>(args: readonly unknown[]): { positionals: string[]; flags: F } {
  const positionals: string[] = [];
  for (const a of args) {
    if (typeof a === 'string') positionals.push(a);
    else if (Array.isArray(a)) positionals.push(...a.filter((x): x is string => typeof x === 'string'));
    else if (a === undefined) continue;
    else if (typeof a === 'object' && a !== null) return { positionals, flags: a as F };
  }
  return { positionals, flags: {} as F };
}
