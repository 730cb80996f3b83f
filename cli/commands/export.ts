import { once } from 'node:events';
import { createWriteStream } from 'node:fs';
import { rename, rm } from 'node:fs/promises';
import { exportCommit } from '../../src/checkout/export.js';
import { note } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(spec: string, opts: { repo: string; output: string }): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const { commit } = await repo.resolve(spec);
    const toStdout = opts.output === '-';
    const compression = !toStdout && opts.output.endsWith('.zst') ? 'zstd' : 'none';
    // Written beside the target and renamed: a failed export never leaves a truncated tarball behind.
    const tmp = `${opts.output}.sysroot-tmp-${process.pid}`;
    const stream = toStdout ? process.stdout : createWriteStream(tmp);
    const sink = async (chunk: Buffer) => {
      if (!stream.write(chunk)) await once(stream, 'drain');
    };
    try {
      const r = await exportCommit(repo.objects, commit, sink, { compression });
      if (!toStdout) {
        await new Promise<void>((resolve, reject) =>
          (stream as ReturnType<typeof createWriteStream>).end((e?: Error | null) =>
            e ? reject(e) : resolve(),
          ),
        );
        await rename(tmp, opts.output);
      }
      note(
        `exported ${commit}: ${r.entries} entries, ${r.bytes} bytes${toStdout ? '' : ` to ${opts.output}`}`,
      );
    } catch (e) {
      if (!toStdout) {
        (stream as ReturnType<typeof createWriteStream>).destroy();
        await rm(tmp, { force: true });
      }
      throw e;
    }
    return 0;
  } finally {
    repo.close();
  }
}
