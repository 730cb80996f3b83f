/**
 * Server configuration: defaults < JSON file < environment < command-line flags, merged per key
 * and validated with zod as a whole (docs/configuration.md lists every key).
 */
import { readFile } from 'node:fs/promises';
import { errnoCode, RegistryError } from '../src/errors.js';
import { zod } from '../src/lazy-zod.js';
import { DEFAULT_UPLOAD_LIMITS } from './upload.js';

const z = zod();

export interface ServerConfig {
  repo: string;
  listen: { host: string; port: number };
  anonymousPull: boolean;
  maxUploadBytes: number;
  maxMetadataBytes: number;
  /** Answer GET /repo/objects/… (not .commitmeta) with a redirect to a presigned store URL, if the store has them. */
  redirectObjects: boolean;
  /**
   * Secret key files the server signs with (`PATH` or `NAME=PATH`): every commit as it first
   * arrives, every summary, every ref log record. Paths only: a key is never in the configuration.
   */
  signingKeys: string[];
}

/** The keys a layer may set, all optional; later layers override earlier ones key by key. */
export type ConfigLayer = Partial<{
  repo: string;
  listen: string;
  anonymousPull: boolean;
  maxUploadBytes: number;
  maxMetadataBytes: number;
  redirectObjects: boolean;
  signingKeys: string[];
}>;

export const DEFAULT_LISTEN = '127.0.0.1:8080';

const byteCount = z.number().int().positive().max(Number.MAX_SAFE_INTEGER);

const FileSchema = z
  .object({
    repo: z.string().min(1),
    listen: z.string(),
    anonymousPull: z.boolean(),
    maxUploadBytes: byteCount,
    maxMetadataBytes: byteCount,
    redirectObjects: z.boolean(),
    signingKeys: z.array(z.string().min(1)),
  })
  .partial()
  .strict();

/** `HOST:PORT`, `[v6]:PORT`; port 0 picks a free port. */
export function parseListen(text: string): { host: string; port: number } {
  const m = /^(?:\[([^\]]+)\]|([^:[\]]+)):(\d{1,5})$/.exec(text.trim());
  const port = m ? Number(m[3]) : Number.NaN;
  if (!m || port > 65535) {
    throw new RegistryError(
      'E_USAGE',
      `invalid listen address ${JSON.stringify(text)}`,
      { found: text },
      'use HOST:PORT, e.g. 127.0.0.1:8080 or [::1]:8080',
    );
  }
  return { host: (m[1] ?? m[2])!, port };
}

function parseBool(name: string, text: string): boolean {
  const v = text.trim().toLowerCase();
  if (['1', 'true', 'yes', 'on'].includes(v)) return true;
  if (['0', 'false', 'no', 'off'].includes(v)) return false;
  throw new RegistryError(
    'E_USAGE',
    `${name}=${JSON.stringify(text)} is not a boolean`,
    { found: text },
    'use true or false',
  );
}

function parseBytes(name: string, text: string): number {
  const n = Number(text.trim());
  if (!Number.isSafeInteger(n) || n <= 0) {
    throw new RegistryError('E_USAGE', `${name}=${JSON.stringify(text)} is not a positive byte count`, {
      found: text,
    });
  }
  return n;
}

export function layerFromEnv(env: NodeJS.ProcessEnv): ConfigLayer {
  const layer: ConfigLayer = {};
  if (env.SYSROOT_REPO) layer.repo = env.SYSROOT_REPO;
  if (env.SYSROOT_LISTEN) layer.listen = env.SYSROOT_LISTEN;
  if (env.SYSROOT_ANONYMOUS_PULL)
    layer.anonymousPull = parseBool('SYSROOT_ANONYMOUS_PULL', env.SYSROOT_ANONYMOUS_PULL);
  if (env.SYSROOT_MAX_UPLOAD_BYTES)
    layer.maxUploadBytes = parseBytes('SYSROOT_MAX_UPLOAD_BYTES', env.SYSROOT_MAX_UPLOAD_BYTES);
  if (env.SYSROOT_REDIRECT_OBJECTS)
    layer.redirectObjects = parseBool('SYSROOT_REDIRECT_OBJECTS', env.SYSROOT_REDIRECT_OBJECTS);
  if (env.SYSROOT_SIGNING_KEYS !== undefined)
    layer.signingKeys = env.SYSROOT_SIGNING_KEYS.split(',')
      .map((x) => x.trim())
      .filter((x) => x !== '');
  return layer;
}

export async function layerFromFile(path: string): Promise<ConfigLayer> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new RegistryError(
      errnoCode(e) === 'ENOENT' ? 'E_NOT_FOUND' : 'E_IO',
      `cannot read configuration file ${path}: ${(e as Error).message}`,
      { path },
    );
  }
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch (e) {
    throw new RegistryError('E_USAGE', `${path} is not JSON: ${(e as Error).message}`, { path });
  }
  const r = FileSchema.safeParse(value);
  if (!r.success) {
    const i = r.error.issues[0]!;
    throw new RegistryError('E_USAGE', `${path}: ${i.path.join('.') || '(top level)'}: ${i.message}`, {
      path,
    });
  }
  return r.data;
}

/** Merge layers, lowest precedence first, and check the result. */
export function resolveConfig(...layers: ConfigLayer[]): ServerConfig {
  const merged: ConfigLayer = {};
  for (const layer of layers) {
    for (const [k, v] of Object.entries(layer)) if (v !== undefined) Object.assign(merged, { [k]: v });
  }
  if (!merged.repo) {
    throw new RegistryError(
      'E_USAGE',
      'no repository given',
      {},
      'pass --repo DIR, set SYSROOT_REPO, or "repo" in the config file',
    );
  }
  const limits = FileSchema.pick({ maxUploadBytes: true, maxMetadataBytes: true }).safeParse({
    maxUploadBytes: merged.maxUploadBytes,
    maxMetadataBytes: merged.maxMetadataBytes,
  });
  if (!limits.success)
    throw new RegistryError('E_USAGE', `invalid limit: ${limits.error.issues[0]!.message}`);
  return {
    repo: merged.repo,
    listen: parseListen(merged.listen ?? DEFAULT_LISTEN),
    anonymousPull: merged.anonymousPull ?? true,
    maxUploadBytes: merged.maxUploadBytes ?? DEFAULT_UPLOAD_LIMITS.maxFileBytes,
    maxMetadataBytes: merged.maxMetadataBytes ?? DEFAULT_UPLOAD_LIMITS.maxMetadataBytes,
    redirectObjects: merged.redirectObjects ?? false,
    signingKeys: merged.signingKeys ?? [],
  };
}
