/**
 * The `sysroot` command: declares commands and options, then hands each to a module in
 * cli/commands/ that is loaded only when that command runs (so `sysroot refs` does not pay for
 * loading the importer). Commands parse and print; the work lives in src/.
 */
import { readFileSync } from 'node:fs';
import { Command, CommanderError, Option } from 'commander';
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
      .argument('<source>', 'directory or tarball'),
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
    .argument('<ref>')
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples([
        'sysroot log --repo R stage3-sysroot/x86_64',
        'sysroot log --url https://sysroots.example.org x86_64',
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
    .addHelpText(
      'after',
      examples([
        'sysroot serve --repo /srv/sysroots --listen 0.0.0.0:8080',
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
    .addOption(jsonOption())
    .addHelpText(
      'after',
      examples([
        'sysroot pull --url https://sysroots.example.org stage3-sysroot/x86_64@4c0d…(64 hex) ./sysroot',
      ]),
    )
    .action(lazy('pull'));

  const remote = program.command('remote').description('named registry URLs for push and pull');
  remote
    .command('add')
    .description('add or replace a remote')
    .argument('<name>')
    .argument('<url>')
    .action(lazy('remote-add'));
  remote.command('list').description('list remotes').addOption(jsonOption()).action(lazy('remote-list'));

  return program;
}

export async function main(argv: string[]): Promise<void> {
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
