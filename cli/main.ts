/**
 * The `sysroot` command: declares commands and options, then hands each to a module in
 * cli/commands/ that is loaded only when that command runs (so `sysroot refs` does not pay for
 * loading the importer). Commands parse and print; the work lives in src/.
 */
import { readFileSync } from 'node:fs';
import { setFlagsFromString } from 'node:v8';
import { Command, CommanderError, Option } from 'commander';
import { tuneMalloc } from '../src/malloc-tuning.js';
import { EXIT } from './exit-codes.js';
import { reportError } from './output.js';

/** package.json is two levels up from dist/cli/main.js and one from cli/main.ts (tests). */
function readVersion(): string {
  for (const rel of ['../../package.json', '../package.json']) {
    try {
      const p = JSON.parse(readFileSync(new URL(rel, import.meta.url), 'utf8')) as {
        name?: string;
        version: string;
      };
      if (p.name === 'sysroot-registry') return p.version;
    } catch {
      // try the next candidate
    }
  }
  return '0.0.0';
}

/**
 * V8 hands a function to its optimising compiler (TurboFan) each time it uses up an interrupt budget
 * of 67,584 bytes of bytecode. A push or pull of a sysroot is over in under a second, and perf
 * showed compiling a third of its CPU: of 1.44 s for a push of v2, 0.33 s on V8's background
 * threads and 0.2 s on the main thread and the workers, on the same 2 cores as the work. With 8x
 * the budget only the really hot functions are optimised, later (medians of 8 alternating runs,
 * 2026-11-25): cold pull 0.78 → 0.75 s and 0.99 → 0.88 s of CPU, a pull served from the cache
 * 0.685 → 0.66 s and 0.92 → 0.80 s, push v2 0.69 → 0.675 s and 0.91 → 0.80 s. A pull of the
 * 1 GiB tree (~4.4 s) took the same time and CPU: its loops still get optimised. `sysroot serve`
 * too (2026-12-06): a fresh server spent ~0.5 s of CPU compiling on its first push of a sysroot, on
 * the cores the push needs; with 8x the budget it used 1.94 s of CPU instead of 2.11 s for a push of
 * v1 (medians of 5 alternating runs). The budget only delays optimisation: a server that runs for
 * days optimises the same hot functions, a little later.
 */
const SHORT_RUN_INTERRUPT_BUDGET = 8 * 67_584;

/**
 * And a client command turns TurboFan on only after its first second. With 8x the budget, a cold
 * pull of a sysroot still had 32 functions optimised, ~200 ms of compiling on V8's background
 * threads (`--trace-opt`; the pack reader twice, 32 ms each, as content records followed the trees
 * it was first optimised on), on the 2 cores that decode, verify and write the pack; and the code
 * was ready only for the pull's last half. Off for the first 1,000 ms (2026-12-07, medians of 6-8
 * alternating runs): cold pull of v1 0.97 → 0.94 s and 1.275 → 1.15 s of CPU, push v1 1.62 → 1.54 s
 * and 1.425 → 1.33 s of CPU, pull of v2 with v1 cached 0.85 → 0.825 s, push v2 the same
 * (0.785 → 0.775 s). A long run still gets its hot loops optimised, a second late: the 1 GiB tree's
 * pull 6.29 → 5.81 s and push 10.9 → 10.1 s (3 runs each, within the noise). `--max-opt=2` for
 * the whole run, measured on 2026-11-25, made that pull ~15% slower. The flag is V8's, read each
 * time it decides to optimise, so it can be turned on again at run time.
 */
const TURBOFAN_AFTER_MS = 1000;

function deferTurbofan(): void {
  setFlagsFromString('--no-turbofan');
  setTimeout(() => setFlagsFromString('--turbofan'), TURBOFAN_AFTER_MS).unref();
}

function collect(value: string, previous: string[]): string[] {
  return [...previous, value];
}

/** Every command that opens a repository takes a directory or a bucket prefix (src/store/open.ts). */
const REPO_FLAG = '--repo <dir|s3://bucket/prefix>';
const REPO_HELP = 'repository: a directory or s3://BUCKET/PREFIX';

const repoOption = () =>
  new Option(REPO_FLAG, `${REPO_HELP} (default: $SYSROOT_REPO)`).env('SYSROOT_REPO').makeOptionMandatory();
const jsonOption = () => new Option('--json', 'print machine-readable JSON on stdout');

function examples(lines: string[]): string {
  return `\nExamples:\n${lines.map((l) => `  $ ${l}`).join('\n')}\n`;
}

/** Commit options shared by `commit` and (later) `push`. */
export function addCommitOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--ref <ref>', 'the ref to move to the new commit, e.g. stage3-sysroot/x86_64')
    .option('--subject <text>', 'one-line subject', '')
    .option('--body <text>', 'longer description', '')
    .option('--timestamp <@epoch>', 'commit time as @SECONDS since 1970 (default: now)')
    .option('--owner <uid:gid>', 'record every file, directory and symlink as owned by UID:GID')
    .option('--canonical-permissions', 'as ostree: owner 0:0, modes masked to 0755, xattrs dropped')
    .option('--meta <key=value>', 'add metadata; KEY:TYPE=VALUE for other types (docs/cli.md)', collect, [])
    .option('--bind-ref', 'record the ref in the commit (ostree.ref-binding), as `ostree commit --branch`')
    .option(
      '--skip-special',
      'drop device nodes, fifos and sockets (recorded in the commit) instead of failing',
    )
    .option('--actor <name>', 'who is recorded in the ref log (default: $SYSROOT_ACTOR or user@host)');
}

export function buildProgram(): Command {
  const program = new Command('sysroot')
    .description(
      'An immutable, content-addressed release registry for build sysroots, compatible with OSTree.',
    )
    .version(readVersion())
    .showHelpAfterError('(run with --help for usage)')
    .exitOverride();

  const lazy =
    (name: string) =>
    async (...args: unknown[]) => {
      setFlagsFromString(`--interrupt-budget=${SHORT_RUN_INTERRUPT_BUDGET}`);
      if (name !== 'serve') deferTurbofan();
      tuneMalloc(name === 'serve' ? 'server' : name === 'push' ? 'push' : 'command');
      // A push without native/hashfiles hashes a tree on worker threads: started now, they come up
      // while the command loads.
      if (name === 'push') (await import('../src/import/native-pool.js')).prestartHashers();
      const mod = (await import(`./commands/${name}.js`)) as {
        run: (...a: unknown[]) => Promise<number | undefined>;
      };
      const code = await mod.run(...args);
      if (code) process.exitCode = code;
    };

  program
    .command('init')
    .description('create an empty repository (an OSTree archive-z2 repository)')
    .addOption(repoOption())
    .addHelpText(
      'after',
      examples(['sysroot init --repo /srv/sysroots', 'sysroot init --repo s3://releases/sysroots']),
    )
    .action(lazy('init'));

  addCommitOptions(
    program
      .command('commit')
      .description(
        'commit a directory or tarball (.tar, .tar.gz, .tar.zst) to a ref; prints the commit checksum',
      )
      .addOption(repoOption())
      .option(
        '--max-expansion <ratio>',
        'a compressed tarball may expand at most RATIO times past its first 64 MiB (default 100; 0: no limit)',
      )
      .argument('<source>', 'directory or tarball')
      .option(
        '--sign-key <[name=]file>',
        'sign the commit, the summary and the ref log record with this secret key file; repeatable',
        collect,
        [],
      ),
  )
    .addHelpText(
      'after',
      examples([
        'sysroot commit --repo R --ref stage3-sysroot/x86_64 --subject "stage3 2026.1" ./rootfs',
        'sysroot commit --repo R --ref stage3-sysroot/armv8l64 --owner 0:0 --meta version=2026.1 rootfs.tar.zst',
      ]),
    )
    .action(lazy('commit'));

  program
    .command('checkout')
    .description('write a commit out as a directory, atomically (built beside DEST, then renamed)')
    .addOption(repoOption())
    .argument('<commit>', 'REF, REF@SHA256 (a pin) or SHA256')
    .argument('<dest>', 'a directory that does not exist yet or is empty')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples([
        'sysroot checkout --repo R stage3-sysroot/x86_64 ./sysroot',
        'sysroot checkout --repo R stage3-sysroot/x86_64@4c0d…(64 hex) ./sysroot',
      ]),
    )
    .action(lazy('checkout'));

  program
    .command('export')
    .description('write a commit as a deterministic tarball (same commit, same bytes)')
    .addOption(repoOption())
    .argument('<commit>', 'REF, REF@SHA256 or SHA256')
    .requiredOption('-o, --output <file>', 'FILE.tar, FILE.tar.zst, or - for stdout (plain tar)')
    .addHelpText('after', examples(['sysroot export --repo R stage3-sysroot/x86_64 -o sysroot.tar.zst']))
    .action(lazy('export'));

  program
    .command('log')
    .description("a ref's history from the ref log, newest first, each entry with its pin")
    .addOption(new Option(REPO_FLAG, `${REPO_HELP} (default: $SYSROOT_REPO)`).env('SYSROOT_REPO'))
    .option('--url <url>', 'ask a registry server instead of a local repository')
    .option('--records <file>', 'read an export (--export) instead of a repository or server')
    .argument('<ref>')
    .option('--verify', 'prove the history: hash chain intact, head signed by a trusted key (exit 9 if not)')
    .option('--export', 'print the records exactly as stored, oldest first, one JSON line each')
    .option('--verify-key <key>', 'a key to trust: ed25519 base64, or a key file; repeatable', collect, [])
    .option(
      '--revoked-key <key>',
      'a key no longer trusted (ed25519 base64 or file); repeatable',
      collect,
      [],
    )
    .option('--since <file>', 'with --verify: an earlier export, which must be a prefix of the history')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples([
        'sysroot log --repo R stage3-sysroot/x86_64',
        'sysroot log --url https://sysroots.example.org x86_64',
        'sysroot log --url https://sysroots.example.org --export x86_64 > x86_64.jsonl',
        'sysroot log --records x86_64.jsonl --verify --verify-key release.pub x86_64',
        'sysroot log --url https://sysroots.example.org --verify --verify-key release.pub --since x86_64.jsonl x86_64',
      ]),
    )
    .action(lazy('log'));

  program
    .command('refs')
    .description('list refs and their heads')
    .addOption(repoOption())
    .addOption(jsonOption())
    .action(lazy('refs'));

  program
    .command('show')
    .description('show a commit: subject, body, time, parent, metadata, size, file count')
    .addOption(repoOption())
    .argument('<commit>', 'REF, REF@SHA256 or SHA256')
    .addOption(jsonOption())
    .action(lazy('show'));

  program
    .command('ls')
    .description('list a directory of a commit')
    .addOption(repoOption())
    .argument('<commit>', 'REF, REF@SHA256 or SHA256')
    .argument('[path]', 'directory inside the commit', '/')
    .addOption(jsonOption())
    .addHelpText('after', examples(['sysroot ls --repo R stage3-sysroot/x86_64 /usr/lib']))
    .action(lazy('ls'));

  program
    .command('cat')
    .description('print a file of a commit to stdout')
    .addOption(repoOption())
    .argument('<commit>', 'REF, REF@SHA256 or SHA256')
    .argument('<path>', 'file inside the commit')
    .addHelpText('after', examples(['sysroot cat --repo R stage3-sysroot/x86_64 /etc/os-release']))
    .action(lazy('cat'));

  program
    .command('fsck')
    .description('verify every object, every commit closure, refs, the summary and the ref log')
    .addOption(repoOption())
    .option(
      '--verify-key <key>',
      'check signatures against this key instead of the published ones; repeatable',
      collect,
      [],
    )
    .addOption(jsonOption())
    .action(lazy('fsck'));

  program
    .command('reindex')
    .description('rebuild the SQLite index from the repository')
    .addOption(repoOption())
    .addOption(jsonOption())
    .action(lazy('reindex'));

  program
    .command('pack')
    .description("generate and store a commit's pack, or the update pack from --from, as the server does")
    .argument('<commit>', 'REF, REF@SHA or SHA')
    .option('--from <sha>', 'an update pack: leave out the closure of this commit')
    .addOption(repoOption())
    .addOption(jsonOption())
    .action(lazy('pack'));

  program
    .command('reset')
    .description('audited rollback: point REF back at a commit already in its history')
    .addOption(repoOption())
    .argument('<ref>')
    .argument('<commit>', 'SHA256 of a commit the ref pointed at before')
    .requiredOption('--reason <text>', 'why (recorded in the ref log)')
    .option('--actor <name>', 'who is recorded in the ref log (default: $SYSROOT_ACTOR or user@host)')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples([
        'sysroot reset --repo R stage3-sysroot/x86_64 4c0d…(64 hex) --reason "2026.2 breaks gcc bootstrap"',
      ]),
    )
    .action(lazy('reset'));

  program
    .command('serve')
    .description('serve a repository over HTTP: OSTree routes under /repo/, JSON API under /api/v1/')
    .addOption(new Option(REPO_FLAG, `${REPO_HELP} (default: $SYSROOT_REPO, or "repo" in --config)`))
    .option('--listen <host:port>', 'address to listen on (default 127.0.0.1:8080)')
    .option('--config <file>', 'JSON configuration file (docs/configuration.md)')
    .option('--no-anonymous-pull', 'require a token with the pull scope for reads')
    .option(
      '--redirect-objects',
      'answer object GETs with a redirect to a presigned S3 URL (S3 repositories)',
    )
    .option(
      '--sign-key <[name=]file>',
      'sign arriving commits, the summary and the ref log with this secret key file; repeatable (docs/signing.md)',
      collect,
      [],
    )
    .addHelpText(
      'after',
      examples([
        'sysroot serve --repo /srv/sysroots --listen 0.0.0.0:8080',
        'sysroot serve --repo /srv/sysroots --sign-key release-2026=/etc/sysroot/release-2026.key',
        'sysroot serve --repo s3://releases/sysroots --listen 0.0.0.0:8080 --redirect-objects',
      ]),
    )
    .action(lazy('serve'));

  const token = program.command('token').description('manage push/pull/admin tokens of a repository');
  token
    .command('create')
    .description('create a token; prints it once (last line of stdout)')
    .addOption(repoOption())
    .requiredOption('--name <name>', 'a label, e.g. the release job')
    .requiredOption('--scope <scope>', 'pull | admin | push:<ref glob>; repeatable', collect, [])
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples(['sysroot token create --repo R --name release-ci --scope "push:stage3-sysroot/*"']),
    )
    .action(lazy('token-create'));
  token
    .command('list')
    .description('list tokens (never the secrets)')
    .addOption(repoOption())
    .addOption(jsonOption())
    .action(lazy('token-list'));
  token
    .command('revoke')
    .description('revoke a token by its id')
    .addOption(repoOption())
    .argument('<id>')
    .action(lazy('token-revoke'));

  addCommitOptions(
    program
      .command('push')
      .description('commit a directory or tarball on top of the server head and upload what the server lacks')
      .argument('<remote-or-source>', 'REMOTE then SOURCE, or just SOURCE (directory or tarball) with --url')
      .argument('[source]', 'directory or tarball, when a REMOTE name comes first')
      .option('--url <url>', 'registry URL')
      .addOption(new Option('--token <token>', 'push token (default: $SYSROOT_TOKEN)').env('SYSROOT_TOKEN'))
      .option(
        '--sign-key <[name=]file>',
        'sign the commit with this secret key file (the server adds its own signatures); repeatable',
        collect,
        [],
      )
      .addOption(jsonOption()),
  )
    .addHelpText(
      'after',
      examples([
        'SYSROOT_TOKEN=… sysroot push --url https://sysroots.example.org --ref stage3-sysroot/x86_64 ./rootfs',
      ]),
    )
    .action(lazy('push'));

  program
    .command('pull')
    .description('download a commit, verify every object, and check it out atomically')
    .argument('<remote-or-commit>', 'REMOTE then COMMIT, or COMMIT (REF, REF@SHA256 or SHA256) with --url')
    .argument('<commit-or-dest>', 'COMMIT after a REMOTE, else DEST')
    .argument('[dest]', 'a directory that does not exist yet or is empty, when a REMOTE name comes first')
    .option('--url <url>', 'registry URL')
    .addOption(
      new Option('--token <token>', 'pull token, if the server requires one (default: $SYSROOT_TOKEN)').env(
        'SYSROOT_TOKEN',
      ),
    )
    .option(
      '--verify-key <key>',
      'trust this key: ed25519 base64, or a file (ed25519 lines, OpenPGP public key); repeatable',
      collect,
      [],
    )
    .option('--revoked-key <key>', 'refuse signatures by this key; repeatable', collect, [])
    .option('--verify', "also check signatures of a pinned pull (REF@SHA, SHA) with the remote's keys")
    .option('--no-verify', "do not check signatures, even with the remote's keys configured")
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples([
        'sysroot pull --url https://sysroots.example.org stage3-sysroot/x86_64@4c0d…(64 hex) ./sysroot',
        'sysroot pull --url https://sysroots.example.org --verify-key release.pub stage3-sysroot/x86_64 ./sysroot',
      ]),
    )
    .action(lazy('pull'));

  const key = program.command('key').description('signing keys: generate, list, revoke (docs/signing.md)');
  key
    .command('generate')
    .description('make a signing key: writes FILE (secret, mode 0600) and FILE.pub; prints the public key')
    .requiredOption('--type <type>', "ed25519 (ostree signapi) or gpg (what Debian's ostree verifies)")
    .requiredOption('--name <name>', 'a label, e.g. release-2026 (the OpenPGP user id for gpg)')
    .requiredOption('-o, --output <file>', 'the secret key file to create (never overwritten)')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples([
        'sysroot key generate --type ed25519 --name release-2026 -o /etc/sysroot/release-2026.key',
        'sysroot key generate --type gpg --name "Example sysroots 2026" -o release-2026.gpg',
      ]),
    )
    .action(lazy('key-generate'));
  key
    .command('list')
    .description('the public keys a repository or server publishes, and which are revoked')
    .addOption(new Option(REPO_FLAG, `${REPO_HELP} (default: $SYSROOT_REPO)`).env('SYSROOT_REPO'))
    .option('--url <url>', 'ask a registry server (GET /api/v1/keys)')
    .addOption(jsonOption())
    .action(lazy('key-list'));
  key
    .command('revoke')
    .description('publish the revocation of a key (verification then refuses its signatures)')
    .addOption(repoOption())
    .argument('<id>', 'ed25519:<base64> or gpg:<fingerprint> (see sysroot key list)')
    .requiredOption('--reason <text>', 'why, e.g. "key file leaked from CI runner"')
    .action(lazy('key-revoke'));

  const remote = program.command('remote').description('named registry URLs for push and pull');
  remote
    .command('add')
    .description('add or replace a remote')
    .argument('<name>')
    .argument('<url>')
    .option(
      '--verify-key <key>',
      'pulls that follow a ref from this remote must be signed by one of these keys; repeatable',
      collect,
      [],
    )
    .option('--revoked-key <key>', 'refuse signatures by this key from this remote; repeatable', collect, [])
    .action(lazy('remote-add'));
  remote.command('list').description('list remotes').addOption(jsonOption()).action(lazy('remote-list'));

  return program;
}

export async function main(argv: string[]): Promise<void> {
  // A reader that stops early (`sysroot --help | head -1`) made the next write fail with EPIPE, an
  // 'error' event nothing handled: a stack trace and exit code 1. Stop quietly instead, as a
  // command killed by SIGPIPE does; nothing more can be written anyway.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
    process.exit(EXIT.PIPE);
  });
  const program = buildProgram();
  const asJson = argv.includes('--json');
  try {
    await program.parseAsync(argv);
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version "fail" with exit code 0; real usage errors exit 2, documented.
      process.exitCode = e.exitCode === 0 ? EXIT.OK : EXIT.USAGE;
      return;
    }
    process.exitCode = reportError(e, asJson);
  }
}
