/** Small repositories built directly from objects, for tests that need commits but not an importer. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { deflateRawSync } from 'node:zlib';
import {
  type Checksum,
  contentChecksum,
  encodeDirMeta,
  encodeDirTree,
  type FileMeta,
  filezHeader,
} from '../../src/objects/index.js';
import { Repository } from '../../src/repo/repository.js';

export function tempDir(prefix = 'sysroot-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function tempRepo(): Promise<Repository> {
  return Repository.init(join(tempDir(), 'repo'));
}

/** Store a root directory holding one file with `content`; returns the root dirtree and dirmeta. */
export async function storeTree(
  repo: Repository,
  content: string,
): Promise<{ rootTree: Checksum; rootMeta: Checksum }> {
  const meta: FileMeta = { uid: 0, gid: 0, mode: 0o100644, symlinkTarget: '', xattrs: [] };
  const payload = Buffer.from(content);
  const checksum = contentChecksum(meta, payload);
  await repo.objects.putFilez(
    checksum,
    Buffer.concat([filezHeader(meta, payload.length), deflateRawSync(payload)]),
  );
  const rootMeta = await repo.objects.putMetadata(
    'dirmeta',
    encodeDirMeta({ uid: 0, gid: 0, mode: 0o40755, xattrs: [] }),
  );
  const rootTree = await repo.objects.putMetadata(
    'dirtree',
    encodeDirTree({ files: [{ name: 'file.txt', checksum }], dirs: [] }),
  );
  return { rootTree, rootMeta };
}

export async function commitContent(
  repo: Repository,
  ref: string,
  content: string,
  subject = content,
): Promise<Checksum> {
  const root = await storeTree(repo, content);
  return repo.commit({ ref, ...root, subject, timestamp: 1704067200, actor: 'test' });
}
