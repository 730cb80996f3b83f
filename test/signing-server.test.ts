/**
 * Signing inside the server and the repository, in-process: summary.sig always belongs to the
 * summary served (and goes away when a writer without keys rewrites the summary), a pushed pack's
 * commitmeta is merged with the server's signature on arrival, detached metadata is accepted only
 * with its commit, and `sysroot commit --sign-key` signs a local commit.
 */
import { createHash } from 'node:crypto';
import { mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { createApp } from '../server/app.js';
import { silentLogger } from '../server/logger.js';
import { TokenStore } from '../src/auth/tokens.js';
import { objectPath } from '../src/objects/index.js';
import { KIND, PackWriter } from '../src/pack/index.js';
import { Repository } from '../src/repo/repository.js';
import { ed25519FromSeed, ed25519VerifyKey, type SigningKey } from '../src/sign/keys.js';
import { encodeSignatures, readSignatures } from '../src/sign/signatures.js';
import { verifyCommit, verifySummary } from '../src/sign/verify.js';
import { sysroot, sysrootOk } from './helpers/cli.js';
import { commitContent, tempDir, tempRepo } from './helpers/repo.js';

const key = (name: string): SigningKey => ed25519FromSeed(createHash('sha256').update(name).digest(), name);
const trust = (...keys: SigningKey[]) => ({
  trusted: keys.map((k) => ed25519VerifyKey(Buffer.from(k.public, 'base64'))),
  revoked: [],
});
const server = key('server');
const pusher = key('pusher');

async function app(repo: Repository) {
  const tokens = TokenStore.forRepo(repo);
  const token = (await tokens.create({ name: 'ci', scopes: ['push:**'] })).token;
  return { app: createApp({ repo, tokens, anonymousPull: true, logger: silentLogger }), token };
}

/** Every object of `repo` as the pack a push sends: .filez records, metadata, commitmeta, commit. */
async function uploadPack(repo: Repository): Promise<Buffer> {
  const chunks: Buffer[] = [];
  const w = new PackWriter(async (b) => void chunks.push(b), { threads: false });
  for await (const o of repo.objects.list()) {
    const bytes = (await repo.objects.getRaw(o.checksum, o.type))!;
    await w.add(o.type === 'file' ? KIND.filez : KIND[o.type], o.checksum, bytes);
  }
  await w.finish();
  return Buffer.concat(chunks);
}

describe('summary.sig', () => {
  it('is served for exactly the summary served, across ref moves, and 404 once a writer without keys rewrites it', async () => {
    const repo = await tempRepo();
    await repo.useSigningKeys([server]);
    const { app: a } = await app(repo);
    const seen = new Set<string>();
    for (const v of ['one', 'two']) {
      await commitContent(repo, 'r/x', v);
      const summary = Buffer.from(await (await a.request('/repo/summary')).arrayBuffer());
      const sig = Buffer.from(await (await a.request('/repo/summary.sig')).arrayBuffer());
      expect((await verifySummary(summary, sig, trust(server))).valid).toEqual([server.id]);
      // The top-level file (for static servers) is the same signature.
      expect(readFileSync(join(repo.location, 'summary.sig')).equals(sig)).toBe(true);
      seen.add(sig.toString('hex'));
    }
    expect(seen.size).toBe(2);
    const keyless = await Repository.open(repo.location);
    await commitContent(keyless, 'r/x', 'three');
    keyless.close();
    expect((await a.request('/repo/summary.sig')).status).toBe(404);
    expect(readFileSync(join(repo.location, 'summary.sig')).length).toBe(0);
    repo.close();
  });
});

describe('commits arriving at the server', () => {
  it("merges the pusher's signature with the server's when the pack arrives", async () => {
    const src = await tempRepo();
    await src.useSigningKeys([pusher]);
    const c = await commitContent(src, 'r/x', 'release');
    const repo = await tempRepo();
    await repo.useSigningKeys([server]);
    const { app: a, token } = await app(repo);
    const res = await a.request('/api/v1/packs', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: new Uint8Array(await uploadPack(src)),
    });
    expect(res.status, await res.clone().text()).toBe(200);
    const bytes = readFileSync(join(repo.location, objectPath(c, 'commit')));
    const meta = readFileSync(join(repo.location, objectPath(c, 'commitmeta')));
    expect(readSignatures(meta, 'm').ed25519).toHaveLength(2);
    expect((await verifyCommit(c, bytes, meta, trust(server))).valid).toEqual([server.id]);
    expect((await verifyCommit(c, bytes, meta, trust(pusher))).valid).toEqual([pusher.id]);
  });

  it('takes detached metadata only together with its commit', async () => {
    const repo = await tempRepo();
    await repo.useSigningKeys([server]);
    const { app: a, token } = await app(repo);
    const orphan = 'ab'.repeat(32);
    const chunks: Buffer[] = [];
    const w = new PackWriter(async (b) => void chunks.push(b), { threads: false });
    await w.add(KIND.commitmeta, orphan, encodeSignatures({ ed25519: [Buffer.alloc(64, 1)], gpg: [] }));
    await w.finish();
    const res = await a.request('/api/v1/packs', {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
      body: new Uint8Array(Buffer.concat(chunks)),
    });
    expect(res.status).toBe(400);
    expect(((await res.json()) as { error: { code: string } }).error.code).toBe('E_USAGE');
    const c = await commitContent(repo, 'r/x', 'stored');
    const put = await a.request(`/api/v1/objects/${c}.commitmeta`, {
      method: 'PUT',
      headers: { authorization: `Bearer ${token}` },
      body: new Uint8Array(encodeSignatures({ ed25519: [Buffer.alloc(64, 2)], gpg: [] })),
    });
    // A push token may not send detached metadata on its own (admin would get 409: it exists).
    expect(put.status).toBe(403);
    // The stored commitmeta is still the server's own, made when the commit was created.
    const meta = readFileSync(join(repo.location, objectPath(c, 'commitmeta')));
    const bytes = readFileSync(join(repo.location, objectPath(c, 'commit')));
    expect((await verifyCommit(c, bytes, meta, trust(server))).total).toBe(1);
  });
});

describe('sysroot commit --sign-key', () => {
  it('signs the local commit, the summary and the ref log record, and publishes the public key', async () => {
    const dir = tempDir();
    const repoDir = join(dir, 'repo');
    const secret = join(dir, 'k');
    writeFileSync(
      secret,
      Buffer.concat([
        createHash('sha256').update('local').digest(),
        Buffer.from(key('local').public, 'base64'),
      ]).toString('base64'),
    );
    sysrootOk(['init', '--repo', repoDir]);
    const tree = join(dir, 'tree');
    mkdirSync(tree);
    writeFileSync(join(tree, 'file'), 'x');
    const c = sysrootOk(['commit', '--repo', repoDir, '--ref', 'r/x', '--sign-key', `local=${secret}`, tree]);
    const bytes = readFileSync(join(repoDir, objectPath(c, 'commit')));
    const meta = readFileSync(join(repoDir, objectPath(c, 'commitmeta')));
    expect((await verifyCommit(c, bytes, meta, trust(key('local')))).valid).toEqual([key('local').id]);
    const v = sysroot(['log', '--repo', repoDir, '--verify', '--json', 'r/x']);
    expect(v.status, v.stderr).toBe(0);
    expect(JSON.parse(v.stdout)).toMatchObject({ ok: true, records: 1, signed: 1, head: [key('local').id] });
    expect(sysrootOk(['key', 'list', '--repo', repoDir])).toContain(key('local').id);
  });
});
