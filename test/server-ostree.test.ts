/**
 * The real `ostree` 2022.7 CLI pulling from a real listening server: archive and bare-user clients,
 * by ref, by REF@OLD pin after the ref moved twice, and by bare checksum; fsck and checkout must
 * agree with what was committed.
 */

import { mkdirSync, readFileSync } from 'node:fs';
import { request } from 'node:http';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../server/app.js';
import { type Listening, listen } from '../server/listen.js';
import { streamLogger } from '../server/logger.js';
import { TokenStore } from '../src/auth/tokens.js';
import type { Checksum } from '../src/objects/index.js';
import type { Repository } from '../src/repo/repository.js';
import { ostree } from './helpers/ostree.js';
import { commitContent, tempDir, tempRepo } from './helpers/repo.js';

const REF = 'stage3-sysroot/x86_64';

let repo: Repository;
let tokens: TokenStore;
let server: Listening;
const log: string[] = [];
const commits: Checksum[] = [];

beforeAll(async () => {
  repo = await tempRepo();
  for (const v of ['release one', 'release two', 'release three'])
    commits.push(await commitContent(repo, REF, v));
  tokens = TokenStore.forRepo(repo);
  const app = createApp({ repo, tokens, anonymousPull: true, logger: streamLogger((l) => log.push(l)) });
  server = await listen(app, '127.0.0.1', 0);
});

afterAll(async () => {
  await server?.close(1000);
  tokens?.close();
  repo?.close();
});

async function client(mode: 'archive' | 'bare-user'): Promise<string> {
  const dir = join(tempDir('sysroot-ostree-client-'), 'repo');
  mkdirSync(dir);
  await ostree(['init', `--repo=${dir}`, `--mode=${mode}`]);
  await ostree(['remote', 'add', `--repo=${dir}`, '--no-gpg-verify', 'r', `${server.url}/repo`]);
  return dir;
}

async function checkoutText(dir: string, commit: Checksum, mode: 'archive' | 'bare-user'): Promise<string> {
  const dest = join(tempDir('sysroot-ostree-co-'), 'out');
  await ostree(['checkout', `--repo=${dir}`, ...(mode === 'bare-user' ? ['-U'] : []), commit, dest]);
  return readFileSync(join(dest, 'file.txt'), 'utf8');
}

function rawGet(path: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const url = new URL(server.url);
    const req = request({ host: url.hostname, port: url.port, path, method: 'GET' }, (res) => {
      res.resume();
      resolve(res.statusCode ?? 0);
    });
    req.on('error', reject);
    req.end();
  });
}

describe.each(['archive', 'bare-user'] as const)('ostree pull into a %s repository', (mode) => {
  let dir: string;

  beforeAll(async () => {
    dir = await client(mode);
  });

  it('pulls the ref head, and fsck and checkout agree with the commit', async () => {
    await ostree(['pull', `--repo=${dir}`, 'r', REF]);
    expect((await ostree(['rev-parse', `--repo=${dir}`, `r:${REF}`])).trim()).toBe(commits[2]);
    await ostree(['fsck', `--repo=${dir}`]);
    expect(await checkoutText(dir, commits[2]!, mode)).toBe('release three');
  });

  it('pulls REF@OLD, a commit the ref moved away from twice', async () => {
    await ostree(['pull', `--repo=${dir}`, 'r', `${REF}@${commits[0]}`]);
    await ostree(['fsck', `--repo=${dir}`]);
    expect(await checkoutText(dir, commits[0]!, mode)).toBe('release one');
  });

  it('pulls a bare commit checksum', async () => {
    await ostree(['pull', `--repo=${dir}`, 'r', commits[1]!]);
    await ostree(['fsck', `--repo=${dir}`]);
    expect(await checkoutText(dir, commits[1]!, mode)).toBe('release two');
  });
});

describe('the listening server', () => {
  it('logged every ostree request, and answered only GETs for known paths with 200 or 404', () => {
    const lines = log.filter((l) => l.includes(' GET /repo/'));
    expect(lines.length).toBeGreaterThan(10);
    expect(lines.some((l) => / GET \/repo\/summary 200 /.test(l))).toBe(true);
    expect(lines.every((l) => / (200|404) \d+ \d+ms$/.test(l))).toBe(true);
  });

  it('refuses raw path tricks on the socket with 400, before URL normalisation', async () => {
    for (const path of [
      '/repo/objects/%2e%2e/config',
      '/repo/refs/heads/../../config',
      '/repo/refs/heads/a%2fb',
      '/repo//config',
    ]) {
      expect(await rawGet(path), path).toBe(400);
    }
    // Resolved by the URL parser to a path outside /repo/, where no route exists.
    expect(await rawGet('/repo/../../etc/passwd')).toBe(404);
    expect(await rawGet('/repo/objects/%2E%2E/%2e%2e/%2e%2e/etc/passwd')).toBe(404);
    expect(await rawGet('/repo/config')).toBe(200);
  });
});

describe('ostree pull with anonymous pulls switched off', () => {
  let closed: Listening;
  let store: TokenStore;

  afterAll(async () => {
    await closed?.close(1000);
    store?.close();
  });

  it('works with the token as the Basic password in the remote URL, and fails without it', async () => {
    store = TokenStore.forRepo(repo);
    const { token } = await store.create({ name: 'builder', scopes: ['pull'] });
    closed = await listen(createApp({ repo, tokens: store, anonymousPull: false }), '127.0.0.1', 0);
    const dir = join(tempDir('sysroot-ostree-client-'), 'repo');
    mkdirSync(dir);
    await ostree(['init', `--repo=${dir}`, '--mode=archive']);
    const withToken = closed.url.replace('http://', `http://ostree:${token}@`);
    await ostree(['remote', 'add', `--repo=${dir}`, '--no-gpg-verify', 'ok', `${withToken}/repo`]);
    await ostree(['remote', 'add', `--repo=${dir}`, '--no-gpg-verify', 'anon', `${closed.url}/repo`]);
    await expect(ostree(['pull', `--repo=${dir}`, 'anon', REF])).rejects.toThrow(/401/);
    await ostree(['pull', `--repo=${dir}`, 'ok', REF]);
    expect(await checkoutText(dir, commits[2]!, 'archive')).toBe('release three');
  });
});
