import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { createApp } from '../server/app.js';
import { PACK_MEDIA_TYPE } from '../server/pack-routes.js';
import { TokenStore } from '../src/auth/tokens.js';
import { importDirectory } from '../src/import/index.js';
import { readPack } from '../src/pack/index.js';
import { commitClosure } from '../src/repo/closure.js';
import { packKey } from '../src/repo/layout.js';
import { Repository } from '../src/repo/repository.js';
import { tempDir } from './helpers/repo.js';
import { type S3Server, s3Env, startS3 } from './helpers/s3-server.js';

let s3: S3Server;
const saved = { ...process.env };

beforeAll(async () => {
  s3 = await startS3({ bucket: 'packs' });
  Object.assign(process.env, s3Env(s3), { SYSROOT_INDEX_DIR: tempDir('sysroot-s3-index-') });
}, 120_000);

afterAll(async () => {
  for (const k of [...Object.keys(s3Env(s3)), 'SYSROOT_INDEX_DIR']) {
    if (saved[k] === undefined) delete process.env[k];
    else process.env[k] = saved[k];
  }
  await s3?.stop();
});

async function* chunks(b: Buffer): AsyncGenerator<Buffer> {
  yield b;
}

describe('commit packs on an S3 store', () => {
  it('stores the pack in the bucket, serves it, and redirects to it with redirectObjects', async () => {
    const repo = await Repository.init('s3://packs/reg');
    const dir = join(tempDir(), 'tree');
    for (let i = 0; i < 40; i++) {
      mkdirSync(join(dir, `d${i % 5}`), { recursive: true });
      writeFileSync(join(dir, `d${i % 5}`, `f${i}`), `file ${i}\n`.repeat(i * 100 + 1));
    }
    const r = await importDirectory(repo.objects, dir, { owner: { uid: 0, gid: 0 } });
    const commit = await repo.commit({ ref: 'a/b', ...r, subject: 's3', timestamp: 1704067200, actor: 't' });
    const tokens = TokenStore.forRepo(repo);

    const app = createApp({ repo, tokens, anonymousPull: true });
    const res = await app.request(`/api/v1/packs/${commit}`);
    expect(res.status).toBe(200);
    expect(res.headers.get('content-type')).toBe(PACK_MEDIA_TYPE);
    const bytes = Buffer.from(await res.arrayBuffer());
    expect(res.headers.get('content-length')).toBe(String(bytes.length));
    const ids: string[] = [];
    for await (const e of readPack(chunks(bytes))) if (e.type === 'record') ids.push(e.checksum);
    let closure = 0;
    for await (const _ of commitClosure(repo.objects, commit)) closure++;
    expect(ids).toHaveLength(closure);
    expect((await repo.blobs.stat(packKey(commit)))?.size).toBe(bytes.length);
    expect(await repo.blobs.read(packKey(commit))).toEqual(bytes);

    const redirecting = createApp({ repo, tokens, anonymousPull: true, redirectObjects: true });
    const moved = await redirecting.request(`/api/v1/packs/${commit}`);
    expect(moved.status).toBe(307);
    const location = moved.headers.get('location')!;
    expect(location.startsWith(`${s3.endpoint}/${s3.bucket}/reg/sysroot/packs/${commit}.pack`)).toBe(true);
    expect(Buffer.from(await (await fetch(location)).arrayBuffer())).toEqual(bytes);
    const head = await redirecting.request(`/api/v1/packs/${commit}`, { method: 'HEAD' });
    expect(head.status).toBe(200);
    expect(head.headers.get('content-length')).toBe(String(bytes.length));
    repo.close();
  });
});
