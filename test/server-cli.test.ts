/**
 * `sysroot serve` and `sysroot token …` command modules, run in-process, and the configuration
 * merge behind serve (flags > environment > file > defaults).
 */
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, it, vi } from 'vitest';
import { run as serve } from '../cli/commands/serve.js';
import { run as tokenCreate } from '../cli/commands/token-create.js';
import { run as tokenList } from '../cli/commands/token-list.js';
import { run as tokenRevoke } from '../cli/commands/token-revoke.js';
import { layerFromEnv, layerFromFile, parseListen, resolveConfig } from '../server/config.js';
import { TokenStore } from '../src/auth/tokens.js';
import { isRegistryError } from '../src/errors.js';
import { tempDir, tempRepo } from './helpers/repo.js';
import { startServe } from './helpers/serve-process.js';

/** Capture what a command writes to stdout and stderr. */
function capture(): { out: () => string; err: () => string } {
  let out = '';
  let err = '';
  vi.spyOn(process.stdout, 'write').mockImplementation((chunk: string | Uint8Array) => {
    out += String(chunk);
    return true;
  });
  vi.spyOn(process.stderr, 'write').mockImplementation((chunk: string | Uint8Array) => {
    err += String(chunk);
    return true;
  });
  return { out: () => out, err: () => err };
}

afterEach(() => {
  vi.restoreAllMocks();
});

describe('server configuration', () => {
  it('merges defaults < file < environment < flags, key by key', async () => {
    const file = join(tempDir(), 'sysroot.json');
    writeFileSync(file, JSON.stringify({ repo: '/from/file', listen: '0.0.0.0:9000', maxUploadBytes: 1000 }));
    const env = layerFromEnv({ SYSROOT_LISTEN: '127.0.0.1:9001', SYSROOT_ANONYMOUS_PULL: 'false' });
    const c = resolveConfig(await layerFromFile(file), env, { listen: '[::1]:9002' });
    expect(c).toEqual({
      repo: '/from/file',
      listen: { host: '::1', port: 9002 },
      anonymousPull: false,
      maxUploadBytes: 1000,
      maxMetadataBytes: 10 * 1024 * 1024,
      redirectObjects: false,
      signingKeys: [],
    });
    expect(resolveConfig({ repo: 'r' })).toMatchObject({
      listen: { host: '127.0.0.1', port: 8080 },
      anonymousPull: true,
      maxUploadBytes: 2 * 1024 ** 3,
    });
  });

  it('refuses bad values with a usage error naming them', async () => {
    expect(() => parseListen('localhost')).toThrow(/invalid listen address/);
    expect(() => parseListen('h:70000')).toThrow(/invalid listen address/);
    expect(() => layerFromEnv({ SYSROOT_ANONYMOUS_PULL: 'maybe' })).toThrow(/SYSROOT_ANONYMOUS_PULL/);
    expect(() => layerFromEnv({ SYSROOT_MAX_UPLOAD_BYTES: '-1' })).toThrow(/SYSROOT_MAX_UPLOAD_BYTES/);
    expect(() => resolveConfig({ listen: '127.0.0.1:1' })).toThrow(/no repository/);
    const file = join(tempDir(), 'bad.json');
    writeFileSync(file, JSON.stringify({ repo: 'r', anonymousPul: false }));
    await expect(layerFromFile(file)).rejects.toSatisfy((e) => isRegistryError(e, 'E_USAGE'));
  });
});

describe('sysroot token', () => {
  it('creates (token on the last stdout line), lists and revokes', async () => {
    const repo = await tempRepo();
    let io = capture();
    expect(
      await tokenCreate({ repo: repo.location, name: 'release-ci', scope: ['push:stage3-sysroot/*'] }),
    ).toBe(0);
    const lines = io.out().trimEnd().split('\n');
    const token = lines.at(-1)!;
    expect(token).toMatch(/^srt_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$/);
    expect(io.err()).toContain('release-ci');
    expect(io.err()).not.toContain(token);
    const id = token.slice(4, 12);

    vi.restoreAllMocks();
    io = capture();
    await tokenCreate({ repo: repo.location, name: 'admin', scope: ['admin'], json: true });
    const created = JSON.parse(io.out()) as { token: string; id: string; scopes: string[] };
    expect(created.token.slice(4, 12)).toBe(created.id);
    expect(created.scopes).toEqual(['admin']);

    vi.restoreAllMocks();
    io = capture();
    expect(await tokenRevoke(id, { repo: repo.location })).toBe(0);
    await tokenList({ repo: repo.location, json: true });
    const listed = JSON.parse(io.out()) as Array<{ id: string; revoked: boolean }>;
    expect(listed.map((t) => [t.id, t.revoked])).toEqual([
      [id, true],
      [created.id, false],
    ]);
    expect(io.out()).not.toContain(token.slice(13));
    vi.restoreAllMocks();

    const store = TokenStore.forRepo(repo);
    expect(await store.verify(token)).toBeUndefined();
    expect(await store.verify(created.token)).toBeDefined();
    store.close();
  });
});

describe('sysroot serve', () => {
  it('listens, logs each request on stderr, and closes cleanly on SIGTERM', async () => {
    const repo = await tempRepo();
    repo.close();
    const before = new Set(process.listeners('SIGTERM'));
    const io = capture();
    const sources = { getOptionValueSource: (k: string) => (k === 'repo' ? 'cli' : 'default') };
    const done = serve({ repo: repo.location, listen: '127.0.0.1:0', anonymousPull: true }, sources);
    let url: string | undefined;
    for (let i = 0; i < 200 && !url; i++) {
      url = /listening on (http:\/\/127\.0\.0\.1:\d+)/.exec(io.err())?.[1];
      if (!url) await new Promise((r) => setTimeout(r, 10));
    }
    expect(url).toBeDefined();
    const res = await fetch(`${url}/repo/config`);
    expect(res.status).toBe(200);
    expect(await res.text()).toContain('archive-z2');
    await new Promise((r) => setTimeout(r, 20));
    expect(io.err()).toMatch(/info GET \/repo\/config 200 38 \d+ms/);

    // Deliver SIGTERM to serve's own handler only (a real signal would reach the test runner too).
    const handler = process.listeners('SIGTERM').find((l) => !before.has(l));
    expect(handler).toBeDefined();
    (handler as (sig: NodeJS.Signals) => void)('SIGTERM');
    expect(await done).toBe(0);
    expect(process.listeners('SIGTERM').filter((l) => !before.has(l))).toEqual([]);
    await expect(fetch(`${url}/repo/config`)).rejects.toThrow();
  });

  it('as a process on a directory repository: exits 0 on SIGTERM, its write worker holding nothing open', async () => {
    // The store's write worker starts before the server listens; it used to keep the process alive
    // after SIGTERM until it was killed (serve-process's stop() sends SIGKILL after 5 s: 'SIGKILL').
    const repo = await tempRepo();
    repo.close();
    const server = await startServe(['--repo', repo.location]);
    expect((await fetch(`${server.url}/repo/config`)).status).toBe(200);
    expect(await server.stop()).toBe(0);
    expect(server.stderr()).toMatch(/SIGTERM: closing/);
  });

  it('does not start on a directory that is not a repository', async () => {
    const dir = tempDir();
    await expect(serve({ repo: dir, listen: '127.0.0.1:0' })).rejects.toSatisfy((e) =>
      isRegistryError(e, 'E_NOT_A_REPO'),
    );
  });
});
