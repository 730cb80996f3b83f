import { RegistryError } from '../../src/errors.js';
import { json, out } from '../output.js';
import { openRepo } from './_repo.js';

interface Listed {
  id: string;
  type: string;
  name?: string;
  published: string;
  signing?: boolean;
  revoked: { time: string; reason: string } | null;
}

/** `sysroot key list`: the public keys a repository (or a server) publishes, and their revocations. */
export async function run(opts: { repo?: string; url?: string; json?: boolean }): Promise<number> {
  let keys: Listed[];
  if (opts.url) {
    const { RegistryClient } = await import('../../src/transfer/client.js');
    keys = (await new RegistryClient(opts.url).keys()) as Listed[];
  } else if (opts.repo) {
    const { readRepoKeys } = await import('../../src/repo/keys.js');
    const repo = await openRepo(opts.repo);
    try {
      const { keys: published, revocations } = await readRepoKeys(repo.blobs);
      keys = published.map((k) => {
        const r = revocations.find((x) => x.id === k.id);
        return { ...k, revoked: r ? { time: r.revoked, reason: r.reason } : null };
      });
    } finally {
      repo.close();
    }
  } else throw new RegistryError('E_USAGE', 'sysroot key list needs --repo DIR or --url URL');
  if (opts.json) {
    json(keys);
    return 0;
  }
  for (const k of keys) {
    const state = k.revoked
      ? `revoked ${k.revoked.time}: ${k.revoked.reason}`
      : k.signing
        ? 'signing'
        : 'published';
    out(`${k.id}  ${k.name ?? '-'}  ${state}`);
  }
  return 0;
}
