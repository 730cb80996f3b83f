/**
 * The SQLite index beside the repository (sysroot/index.sqlite). It is derived data: every row
 * can be rebuilt from the objects, refs and ref log (`sysroot reindex`), so losing the file loses
 * nothing. It exists to answer "list refs", "history of a ref" and "commit details" without
 * walking trees.
 *
 * Pragmas are set once and statements prepared up front (as pnpm's store index does): with
 * WAL + synchronous=NORMAL a commit's ~6,000 object rows go in one transaction in a few ms.
 */
import { mkdirSync } from 'node:fs';
import { dirname } from 'node:path';
import Database from 'better-sqlite3';
import type { ObjectType } from '../objects/index.js';
import type { RefLogRecord } from '../repo/reflog.js';

export interface CommitRow {
  checksum: string;
  parent: string | null;
  subject: string;
  body: string;
  timestamp: number;
  rootTree: string;
  rootMeta: string;
  /** The metadata as JSON ({key: value}), values converted by the CLI's metadata rules. */
  metadata: Record<string, unknown>;
  totalSize: number;
  fileCount: number;
}

const SCHEMA_VERSION = 2;

const SCHEMA = `
CREATE TABLE IF NOT EXISTS commits (
  checksum TEXT PRIMARY KEY,
  parent TEXT,
  subject TEXT NOT NULL,
  body TEXT NOT NULL,
  timestamp INTEGER NOT NULL,
  root_tree TEXT NOT NULL,
  root_meta TEXT NOT NULL,
  metadata TEXT NOT NULL,
  total_size INTEGER NOT NULL,
  file_count INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS refs (
  name TEXT PRIMARY KEY,
  head TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS ref_log (
  ref TEXT NOT NULL,
  seq INTEGER NOT NULL,
  from_commit TEXT,
  to_commit TEXT NOT NULL,
  time TEXT NOT NULL,
  actor TEXT NOT NULL,
  action TEXT NOT NULL,
  reason TEXT NOT NULL,
  PRIMARY KEY (ref, seq)
) WITHOUT ROWID;
CREATE INDEX IF NOT EXISTS ref_log_to ON ref_log (to_commit);
CREATE TABLE IF NOT EXISTS objects (
  checksum TEXT NOT NULL,
  type TEXT NOT NULL,
  size INTEGER,
  PRIMARY KEY (checksum, type)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS trees (
  checksum TEXT PRIMARY KEY,
  file_count INTEGER NOT NULL,
  total_size INTEGER
) WITHOUT ROWID;
`;

/** An object known to be in the store; `size` is a file's uncompressed size, null when not known. */
export interface StoredObject {
  checksum: string;
  type: ObjectType;
  size?: number | null;
}

/** A dirtree whose whole closure is in the store, and its figures (totalSize null: sizes not read). */
export interface CompleteTree {
  checksum: string;
  fileCount: number;
  totalSize: number | null;
}

interface RawCommitRow {
  checksum: string;
  parent: string | null;
  subject: string;
  body: string;
  timestamp: number;
  root_tree: string;
  root_meta: string;
  metadata: string;
  total_size: number;
  file_count: number;
}

function toCommitRow(r: RawCommitRow): CommitRow {
  return {
    checksum: r.checksum,
    parent: r.parent,
    subject: r.subject,
    body: r.body,
    timestamp: r.timestamp,
    rootTree: r.root_tree,
    rootMeta: r.root_meta,
    metadata: JSON.parse(r.metadata),
    totalSize: r.total_size,
    fileCount: r.file_count,
  };
}

export class IndexDb {
  private readonly db: Database.Database;
  private readonly stmts;

  constructor(readonly file: string) {
    mkdirSync(dirname(file), { recursive: true });
    this.db = new Database(file);
    this.db.pragma('journal_mode = WAL');
    this.db.pragma('synchronous = NORMAL');
    this.db.pragma('busy_timeout = 10000');
    const version = this.db.pragma('user_version', { simple: true }) as number;
    if (version !== SCHEMA_VERSION) {
      // Derived data: an index from another schema version is dropped and rebuilt by the caller.
      this.db.exec('DROP TABLE IF EXISTS commits; DROP TABLE IF EXISTS refs; DROP TABLE IF EXISTS ref_log;');
      this.db.exec('DROP TABLE IF EXISTS objects; DROP TABLE IF EXISTS trees;');
    }
    this.db.exec(SCHEMA);
    this.db.pragma(`user_version = ${SCHEMA_VERSION}`);
    this.stmts = {
      putCommit: this.db.prepare(
        `INSERT OR REPLACE INTO commits VALUES
         (@checksum, @parent, @subject, @body, @timestamp, @rootTree, @rootMeta, @metadata, @totalSize, @fileCount)`,
      ),
      getCommit: this.db.prepare('SELECT * FROM commits WHERE checksum = ?'),
      putRef: this.db.prepare('INSERT OR REPLACE INTO refs (name, head) VALUES (?, ?)'),
      listRefs: this.db.prepare('SELECT name, head FROM refs ORDER BY name'),
      putLog: this.db.prepare(
        `INSERT OR REPLACE INTO ref_log VALUES (@ref, @seq, @from, @to, @time, @actor, @action, @reason)`,
      ),
      refsOf: this.db.prepare('SELECT DISTINCT ref FROM ref_log WHERE to_commit = ? ORDER BY ref'),
      // A known size is never replaced by NULL (a listing knows no sizes; an upload does).
      putObject: this.db.prepare(
        `INSERT INTO objects (checksum, type, size) VALUES (?, ?, ?)
         ON CONFLICT (checksum, type) DO UPDATE SET size = coalesce(excluded.size, size)`,
      ),
      getObject: this.db.prepare('SELECT size FROM objects WHERE checksum = ? AND type = ?'),
      countObjects: this.db.prepare('SELECT count(*) AS n FROM objects'),
      putTree: this.db.prepare(
        `INSERT INTO trees (checksum, file_count, total_size) VALUES (?, ?, ?)
         ON CONFLICT (checksum) DO UPDATE SET total_size = coalesce(excluded.total_size, total_size)`,
      ),
      getTree: this.db.prepare('SELECT file_count, total_size FROM trees WHERE checksum = ?'),
    };
  }

  close(): void {
    this.db.close();
  }

  putCommit(c: CommitRow): void {
    this.stmts.putCommit.run({ ...c, metadata: JSON.stringify(c.metadata) });
  }

  getCommit(checksum: string): CommitRow | undefined {
    const r = this.stmts.getCommit.get(checksum) as RawCommitRow | undefined;
    return r && toCommitRow(r);
  }

  /** The refs whose history ever pointed at this commit. */
  refsOf(checksum: string): string[] {
    return (this.stmts.refsOf.all(checksum) as { ref: string }[]).map((r) => r.ref);
  }

  recordRefMove(r: RefLogRecord): void {
    this.db.transaction(() => {
      this.stmts.putLog.run(r);
      this.stmts.putRef.run(r.ref, r.to);
    })();
  }

  putRef(name: string, head: string): void {
    this.stmts.putRef.run(name, head);
  }

  listRefs(): Array<{ name: string; head: string }> {
    return this.stmts.listRefs.all() as Array<{ name: string; head: string }>;
  }

  putObjects(objects: Iterable<StoredObject>): void {
    this.db.transaction(() => {
      for (const o of objects) this.stmts.putObject.run(o.checksum, o.type, o.size ?? null);
    })();
  }

  /**
   * `fn`'s lookups in one read transaction. Each statement outside one takes and drops SQLite's WAL
   * read lock (fcntl calls on the -shm file): ~11 us per lookup here, 67 ms for the 6,129 objects
   * a push of a sysroot asks about; inside one, the lock is taken once.
   */
  read<T>(fn: () => T): T {
    this.readTxn ??= this.db.transaction((f: () => unknown) => f());
    return this.readTxn(fn) as T;
  }

  private readTxn: ((f: () => unknown) => unknown) | undefined;

  /** An object known to be stored (with a file's size, null if not known); undefined: not known. */
  storedObject(checksum: string, type: ObjectType): { size: number | null } | undefined {
    return this.stmts.getObject.get(checksum, type) as { size: number | null } | undefined;
  }

  putTrees(trees: Iterable<CompleteTree>): void {
    this.db.transaction(() => {
      for (const t of trees) this.stmts.putTree.run(t.checksum, t.fileCount, t.totalSize);
    })();
  }

  /** A dirtree whose closure was found complete, with its figures; undefined: not known. */
  completeTree(checksum: string): { fileCount: number; totalSize: number | null } | undefined {
    const r = this.stmts.getTree.get(checksum) as
      | { file_count: number; total_size: number | null }
      | undefined;
    return r && { fileCount: r.file_count, totalSize: r.total_size };
  }

  objectCount(): number {
    return (this.stmts.countObjects.get() as { n: number }).n;
  }

  /** Empty every table inside one transaction; the caller refills them (reindex). */
  rebuild(fill: () => void): void {
    this.db.transaction(() => {
      this.db.exec(
        'DELETE FROM commits; DELETE FROM refs; DELETE FROM ref_log; DELETE FROM objects; DELETE FROM trees;',
      );
      fill();
    })();
  }
}
