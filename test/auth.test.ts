import { readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it, vi } from 'vitest';
import { canPushRef, canRead, canUpload, globMatches, isAdmin, parseScope } from '../src/auth/scopes.js';
import { parseToken, redactTokens } from '../src/auth/token-string.js';
import { TokenStore } from '../src/auth/tokens.js';
import { isRegistryError } from '../src/errors.js';
import { tempRepo } from './helpers/repo.js';

// Every comparison of a presented secret goes through node:crypto's timingSafeEqual; this records its
// arguments (it still compares).
const compared = vi.hoisted(() => [] as Array<[number, number]>);
vi.mock('node:crypto', async (importOriginal) => {
  const real = await importOriginal<typeof import('node:crypto')>();
  return {
    ...real,
    timingSafeEqual: (a: NodeJS.ArrayBufferView, b: NodeJS.ArrayBufferView) => {
      compared.push([a.byteLength, b.byteLength]);
      return real.timingSafeEqual(a, b);
    },
  };
});

function filesUnder(dir: string): string[] {
  return readdirSync(dir, { recursive: true, encoding: 'utf8' })
    .map((f) => join(dir, f))
    .filter((f) => statSync(f).isFile());
}

describe('token scopes', () => {
  it('matches * within one ref component and ** across components', () => {
    expect(globMatches('stage3-sysroot/*', 'stage3-sysroot/x86_64')).toBe(true);
    expect(globMatches('stage3-sysroot/*', 'stage3-sysroot/x86_64/debug')).toBe(false);
    expect(globMatches('stage3-sysroot/*', 'stage3-sysroot')).toBe(false);
    expect(globMatches('stage3-sysroot/*', 'other/x86_64')).toBe(false);
    expect(globMatches('stage3-sysroot/**', 'stage3-sysroot/x86_64/debug')).toBe(true);
    expect(globMatches('**', 'a/b/c')).toBe(true);
    expect(globMatches('*', 'a/b')).toBe(false);
    expect(globMatches('stage3-*/x86_64', 'stage3-sysroot/x86_64')).toBe(true);
    // '.' in a glob is literal, not a regular-expression wildcard.
    expect(globMatches('v1.0', 'v1x0')).toBe(false);
    expect(globMatches('v1.0', 'v1.0')).toBe(true);
  });

  it('parses pull, admin and push:<glob>, and refuses anything else', () => {
    expect(parseScope('push:stage3-sysroot/*')).toEqual({ kind: 'push', glob: 'stage3-sysroot/*' });
    for (const bad of ['push:', 'push:a//b', 'push:../x', 'write', 'push:a b', 'PULL']) {
      expect(() => parseScope(bad), bad).toThrow(/invalid scope/);
    }
  });

  it('grants reading to any token, uploads to push and admin, rollbacks to admin only', () => {
    expect(canRead(['pull'])).toBe(true);
    expect(canUpload(['pull'])).toBe(false);
    expect(canUpload(['push:x/*'])).toBe(true);
    expect(canPushRef(['push:x/*'], 'x/y')).toBe(true);
    expect(canPushRef(['push:x/*'], 'z/y')).toBe(false);
    expect(canPushRef(['admin'], 'z/y')).toBe(true);
    expect(isAdmin(['push:**'])).toBe(false);
  });
});

describe('token strings', () => {
  it('are srt_<8 hex>_<43 base64url> and redacted from any text', () => {
    const t = `srt_0123abcd_${'A'.repeat(40)}-_x`;
    expect(parseToken(t)).toEqual({ id: '0123abcd', secret: `${'A'.repeat(40)}-_x` });
    expect(parseToken('srt_0123abcd_short')).toBeUndefined();
    expect(redactTokens(`GET /repo/config?token=${t} 200`)).toBe('GET /repo/config?token=srt_REDACTED 200');
  });
});

describe('TokenStore', () => {
  it('creates a token that verifies, lists it without the secret, and revokes it', async () => {
    const repo = await tempRepo();
    const tokens = TokenStore.forRepo(repo);
    const { token, info } = await tokens.create({ name: 'release-ci', scopes: ['push:stage3-sysroot/*'] });
    expect(token).toMatch(/^srt_[0-9a-f]{8}_[A-Za-z0-9_-]{43}$/);
    expect(info).toMatchObject({ name: 'release-ci', scopes: ['push:stage3-sysroot/*'], revoked: false });

    expect(await tokens.verify(token)).toEqual({
      id: info.id,
      name: 'release-ci',
      scopes: ['push:stage3-sysroot/*'],
    });
    const listed = await tokens.list();
    expect(listed).toHaveLength(1);
    expect(listed[0]).toMatchObject({ id: info.id, revoked: false });
    expect(listed[0]!.lastUsed).not.toBeNull();
    expect(JSON.stringify(listed)).not.toContain(parseToken(token)!.secret);

    expect(await tokens.revoke(info.id)).toBe(true);
    expect(await tokens.revoke(info.id)).toBe(false);
    expect(await tokens.verify(token)).toBeUndefined();
    expect((await tokens.list())[0]).toMatchObject({ revoked: true });
    tokens.close();
  });

  it('refuses a wrong secret, an unknown id and garbage, alike', async () => {
    const repo = await tempRepo();
    const tokens = TokenStore.forRepo(repo);
    const { token } = await tokens.create({ name: 'a', scopes: ['pull'] });
    const { id, secret } = parseToken(token)!;
    const flipped = secret.slice(0, -1) + (secret.endsWith('A') ? 'B' : 'A');
    expect(await tokens.verify(`srt_${id}_${flipped}`)).toBeUndefined();
    expect(
      await tokens.verify(`srt_${id === '00000000' ? '00000001' : '00000000'}_${secret}`),
    ).toBeUndefined();
    expect(await tokens.verify('Bearer nonsense')).toBeUndefined();
    tokens.close();
  });

  it('compares in constant time: fixed-length sha256 digests through timingSafeEqual, whatever is presented', async () => {
    const repo = await tempRepo();
    const tokens = TokenStore.forRepo(repo);
    const { token } = await tokens.create({ name: 'a', scopes: ['pull'] });
    const { id, secret } = parseToken(token)!;
    compared.length = 0;
    // Right, wrong in the first and in the last character, and every secret differs in a way a
    // byte-by-byte comparison would answer at a different speed.
    const presented = [
      token,
      `srt_${id}_${secret[0] === 'A' ? 'B' : 'A'}${secret.slice(1)}`,
      `srt_${id}_${secret.slice(0, -1)}${secret.endsWith('A') ? 'B' : 'A'}`,
      `srt_${id}_${'-'.repeat(43)}`,
    ];
    const results = [];
    for (const t of presented) results.push((await tokens.verify(t)) !== undefined);
    expect(results).toEqual([true, false, false, false]);
    // One comparison per presented token, always of two 32-byte digests: neither the secret's
    // content nor where it differs changes what is compared.
    expect(compared).toEqual(presented.map(() => [32, 32]));
    // A malformed token or an unknown id is refused before any comparison: its id names no record.
    compared.length = 0;
    expect(await tokens.verify(`srt_${id}_short`)).toBeUndefined();
    expect(
      await tokens.verify(`srt_${id === '00000000' ? '00000001' : '00000000'}_${secret}`),
    ).toBeUndefined();
    expect(compared).toEqual([]);
    tokens.close();
  });

  it('sees a revocation made by another process within its revocation TTL', async () => {
    const repo = await tempRepo();
    let now = 1_700_000_000_000;
    const server = TokenStore.forRepo(repo, { now: () => now });
    const cli = TokenStore.forRepo(repo);
    const { token, info } = await cli.create({ name: 'a', scopes: ['pull'] });
    expect(await server.verify(token)).toBeDefined();
    await cli.revoke(info.id);
    now += 5_001;
    expect(await server.verify(token)).toBeUndefined();
    server.close();
    cli.close();
  });

  it('stores only hashes: the secret appears nowhere in the repository', async () => {
    const repo = await tempRepo();
    const tokens = TokenStore.forRepo(repo);
    const { token, info } = await tokens.create({ name: 'ci', scopes: ['admin'] });
    await tokens.verify(token);
    await tokens.revoke(info.id);
    tokens.close();
    const { secret } = parseToken(token)!;
    const files = filesUnder(repo.location);
    expect(files.some((f) => f.endsWith(`sysroot/tokens/${info.id}.json`))).toBe(true);
    expect(files.some((f) => f.endsWith(`sysroot/tokens/${info.id}.revoked`))).toBe(true);
    expect(files.some((f) => f.endsWith('sysroot/tokens.sqlite'))).toBe(true);
    for (const f of files) {
      const bytes = readFileSync(f);
      expect(bytes.includes(secret), f).toBe(false);
      expect(bytes.includes(token), f).toBe(false);
    }
    const record = JSON.parse(readFileSync(join(repo.location, `sysroot/tokens/${info.id}.json`), 'utf8'));
    expect(Object.keys(record).sort()).toEqual(['created', 'hash', 'id', 'name', 'scopes']);
  });

  it('refuses bad names, no scopes and unknown ids', async () => {
    const repo = await tempRepo();
    const tokens = TokenStore.forRepo(repo);
    for (const o of [
      { name: '', scopes: ['pull'] },
      { name: 'a\nb', scopes: ['pull'] },
      { name: 'ok', scopes: [] },
      { name: 'ok', scopes: ['push:'] },
    ]) {
      await expect(tokens.create(o)).rejects.toSatisfy((e) => isRegistryError(e, 'E_USAGE'));
    }
    await expect(tokens.revoke('deadbeef')).rejects.toSatisfy((e) => isRegistryError(e, 'E_NOT_FOUND'));
    tokens.close();
  });
});
