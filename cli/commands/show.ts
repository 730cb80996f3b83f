import { variantToJson } from '../../src/objects/index.js';
import { formatBytes, formatTime, json, out } from '../output.js';
import { openRepo } from './_repo.js';

export async function run(spec: string, opts: { repo: string; json?: boolean }): Promise<number> {
  const repo = await openRepo(opts.repo);
  try {
    const { commit } = await repo.resolve(spec);
    const c = await repo.readCommit(commit);
    const db = await repo.index();
    let row = db.getCommit(commit);
    if (!row) {
      await repo.reindex();
      row = db.getCommit(commit);
    }
    const metadata = Object.fromEntries(c.metadata.map(([k, v]) => [k, variantToJson(v)]));
    const info = {
      commit,
      parent: c.parent,
      subject: c.subject,
      body: c.body,
      timestamp: c.timestamp,
      time: formatTime(c.timestamp),
      rootTree: c.rootTree,
      rootMeta: c.rootMeta,
      metadata,
      totalSize: row?.totalSize ?? null,
      fileCount: row?.fileCount ?? null,
      refs: db.refsOf(commit),
    };
    if (opts.json) {
      json(info);
      return 0;
    }
    out(`commit ${commit}`);
    if (c.parent) out(`parent ${c.parent}`);
    out(`date   ${info.time}`);
    if (info.refs.length) out(`refs   ${info.refs.join(', ')}`);
    if (row) out(`size   ${formatBytes(row.totalSize)} in ${row.fileCount} files`);
    for (const [k, v] of Object.entries(metadata)) out(`meta   ${k} = ${JSON.stringify(v)}`);
    out();
    out(`    ${c.subject}`);
    if (c.body) for (const line of c.body.split('\n')) out(`    ${line}`);
    return 0;
  } finally {
    repo.close();
  }
}
