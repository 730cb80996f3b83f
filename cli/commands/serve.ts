import { createApp } from '../../server/app.js';
import { type ConfigLayer, layerFromEnv, layerFromFile, resolveConfig } from '../../server/config.js';
import { listen } from '../../server/listen.js';
import { stderrLogger } from '../../server/logger.js';
import { TokenStore } from '../../src/auth/tokens.js';
import { startWriteWorker } from '../../src/store/fs-batch-writer.js';
import { FsBlobStore } from '../../src/store/fs-blob-store.js';
import { note } from '../output.js';
import { openRepo } from './_repo.js';

interface ServeFlags {
  repo?: string;
  listen?: string;
  config?: string;
  anonymousPull?: boolean;
  redirectObjects?: boolean;
  signKey?: string[];
}

/** Commander's Command, as far as we need it: where did an option's value come from? */
interface OptionSources {
  getOptionValueSource(key: string): string | undefined;
}

/** Only what was typed on the command line; commander also fills in env values and defaults. */
function flagLayer(opts: ServeFlags, cmd: OptionSources | undefined): ConfigLayer {
  const fromCli = (key: string) => (cmd ? cmd.getOptionValueSource(key) === 'cli' : true);
  const layer: ConfigLayer = {};
  if (opts.repo && fromCli('repo')) layer.repo = opts.repo;
  if (opts.listen) layer.listen = opts.listen;
  if (opts.anonymousPull === false && fromCli('anonymousPull')) layer.anonymousPull = false;
  if (opts.redirectObjects && fromCli('redirectObjects')) layer.redirectObjects = true;
  if (opts.signKey?.length) layer.signingKeys = opts.signKey;
  return layer;
}

function waitForSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const on = (sig: NodeJS.Signals) => {
      process.off('SIGTERM', on);
      process.off('SIGINT', on);
      resolve(sig);
    };
    process.on('SIGTERM', on);
    process.on('SIGINT', on);
  });
}

export async function run(opts: ServeFlags, cmd?: OptionSources): Promise<number> {
  const file = opts.config ? await layerFromFile(opts.config) : {};
  const config = resolveConfig(file, layerFromEnv(process.env), flagLayer(opts, cmd));
  const repo = await openRepo(config.repo);
  const tokens = TokenStore.forRepo(repo);
  try {
    const logger = stderrLogger();
    if (config.signingKeys.length) {
      const { loadSigningKey } = await import('../../src/sign/keys.js');
      const keys = [];
      for (const spec of config.signingKeys) keys.push(await loadSigningKey(spec));
      await repo.useSigningKeys(keys);
      for (const k of keys) note(`signing with ${k.name ? `${k.name} ` : ''}${k.id}`);
    }
    // Before the first client (and after the signing keys: a rewritten summary is signed too): a ref
    // move this or another node was killed in the middle of.
    const repaired = await repo.finishInterruptedMoves();
    for (const r of repaired.refs)
      note(`finished an interrupted move of ${r.ref} to ${r.to} (refs/heads was behind its ref log)`);
    if (repaired.summary) note('rewrote the summary from refs/heads (it was stale)');
    // What the first client would otherwise wait for (~50 ms): the index (rebuilt first if it is
    // stale, as the first request would have), the token checks' first use, and the write worker
    // of a directory store.
    await repo.index().catch(() => {});
    tokens.warm();
    if (repo.blobs instanceof FsBlobStore) startWriteWorker();
    const app = createApp({
      repo,
      tokens,
      anonymousPull: config.anonymousPull,
      logger,
      limits: { maxFileBytes: config.maxUploadBytes, maxMetadataBytes: config.maxMetadataBytes },
      redirectObjects: config.redirectObjects,
    });
    const server = await listen(app, config.listen.host, config.listen.port, { logger });
    const signalled = waitForSignal();
    if (config.redirectObjects && !repo.blobs.presignGet)
      note(`note: redirectObjects is on, but ${repo.location} cannot presign URLs: objects are streamed`);
    note(`listening on ${server.url}`);
    const sig = await signalled;
    note(`${sig}: closing (requests in flight may finish)`);
    await server.close();
    return 0;
  } finally {
    tokens.close();
    repo.close();
  }
}
