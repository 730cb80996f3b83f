/**
 * The OpenAPI 3.1 description of /api/v1, served at /api/v1/openapi.json. Written by hand from
 * docs/http-api.md (the contract); test/server.test.ts checks that every route it lists exists.
 */

const hex64 = { type: 'string', pattern: '^[0-9a-f]{64}$', description: 'SHA-256, 64 lower-case hex' };
const ref = {
  type: 'string',
  maxLength: 255,
  pattern: '^[A-Za-z0-9_][-._A-Za-z0-9]*(/[A-Za-z0-9_][-._A-Za-z0-9]*)*$',
  examples: ['stage3-sysroot/x86_64'],
};
const objectType = { type: 'string', enum: ['commit', 'commitmeta', 'dirtree', 'dirmeta', 'file'] };

const refParam = {
  name: 'ref',
  in: 'path',
  required: true,
  description: 'the ref name, slashes written as they are (/api/v1/refs/stage3-sysroot/x86_64)',
  schema: ref,
};

const json = (schema: unknown) => ({ 'application/json': { schema } });
const answer = (description: string, schema: unknown) => ({ description, content: json(schema) });
const err = (description: string) => ({ description, content: json({ $ref: '#/components/schemas/Error' }) });
const moved = answer('the ref moved', { $ref: '#/components/schemas/RefMove' });

export const OPENAPI = {
  openapi: '3.1.0',
  info: {
    title: 'sysroot-registry',
    version: '1',
    description:
      'JSON API of an immutable registry for build sysroots. The OSTree repository itself is served ' +
      'read-only under /repo/ (config, summary, refs/heads/…, objects/XX/…) for stock `ostree pull`.',
  },
  servers: [{ url: '/api/v1' }],
  security: [{}, { bearer: [] }],
  components: {
    securitySchemes: {
      bearer: {
        type: 'http',
        scheme: 'bearer',
        description: 'srt_<id>_<secret>, from `sysroot token create`; scopes pull, push:<ref glob>, admin',
      },
    },
    schemas: {
      Error: {
        type: 'object',
        required: ['error'],
        properties: {
          error: {
            type: 'object',
            required: ['code', 'message', 'details'],
            properties: {
              code: { type: 'string', examples: ['E_REF_CONFLICT'] },
              message: { type: 'string' },
              hint: { type: 'string' },
              details: {
                type: 'object',
                description: 'evidence: expected, found, ref, object, …',
                additionalProperties: true,
              },
            },
          },
        },
      },
      RefHead: {
        type: 'object',
        required: ['ref', 'commit'],
        properties: { ref, commit: hex64 },
      },
      RefLogRecord: {
        type: 'object',
        required: ['version', 'ref', 'seq', 'from', 'to', 'time', 'actor', 'action', 'reason', 'prev', 'pin'],
        properties: {
          version: { enum: [1, 2], description: '2: signed (docs/signing.md)' },
          ref,
          seq: { type: 'integer', minimum: 1 },
          from: { oneOf: [hex64, { type: 'null' }] },
          to: hex64,
          time: { type: 'string', format: 'date-time' },
          actor: { type: 'string', examples: ['token:release-ci'] },
          action: { type: 'string', enum: ['commit', 'push', 'reset'] },
          reason: { type: 'string' },
          prev: { oneOf: [hex64, { type: 'null' }] },
          signatures: {
            type: 'array',
            description: 'version 2 only: each over the record line without this member',
            items: {
              type: 'object',
              required: ['key', 'sig'],
              properties: { key: { type: 'string' }, sig: { type: 'string', description: 'base64' } },
            },
          },
          pin: { type: 'string', description: 'REF@SHA256' },
        },
      },
      ObjectRef: {
        type: 'object',
        required: ['checksum', 'type'],
        properties: { checksum: hex64, type: objectType },
      },
      RefMove: {
        type: 'object',
        required: ['ref', 'commit', 'seq'],
        properties: { ref, commit: hex64, seq: { type: 'integer', description: 'ref log sequence number' } },
      },
    },
  },
  paths: {
    '/refs': {
      get: {
        summary: 'list refs and their heads',
        responses: {
          200: answer('the refs', {
            type: 'object',
            required: ['refs'],
            properties: { refs: { type: 'array', items: { $ref: '#/components/schemas/RefHead' } } },
          }),
        },
      },
    },
    '/refs/{ref}': {
      parameters: [refParam],
      get: {
        summary: "a ref's head",
        responses: {
          200: answer('the head', { $ref: '#/components/schemas/RefHead' }),
          404: err('E_REF_NOT_FOUND'),
        },
      },
      put: {
        summary: 'move a ref: compare-and-swap on `from`, fast-forward only (push:<glob> or admin)',
        security: [{ bearer: [] }],
        requestBody: {
          required: true,
          content: json({
            type: 'object',
            required: ['from', 'to'],
            properties: {
              from: { oneOf: [hex64, { type: 'null' }], description: 'the head the change is based on' },
              to: hex64,
              reason: { type: 'string', maxLength: 4096, description: "default: the commit's subject" },
            },
          }),
        },
        responses: {
          200: moved,
          400: err('E_USAGE, E_INVALID_REF, E_INVALID_CHECKSUM'),
          401: err('E_UNAUTHORIZED'),
          403: err('E_FORBIDDEN'),
          409: err('E_REF_CONFLICT (head is not `from`), E_NOT_FAST_FORWARD'),
          422: err("E_OBJECT_MISSING: the commit's closure is incomplete"),
        },
      },
    },
    '/keys': {
      get: {
        summary: 'the public keys the repository publishes, and their revocations (docs/signing.md)',
        responses: {
          200: answer('the keys', {
            type: 'object',
            required: ['keys'],
            properties: {
              keys: {
                type: 'array',
                items: {
                  type: 'object',
                  required: ['type', 'id', 'public', 'published', 'signing', 'revoked'],
                  properties: {
                    type: { type: 'string', enum: ['ed25519', 'gpg'] },
                    id: {
                      type: 'string',
                      examples: ['ed25519:8CtcRDvcfoNVM6lhogdI2IhoSVpWRy4vWq89go5tILo='],
                    },
                    name: { type: 'string' },
                    public: { type: 'string' },
                    published: { type: 'string', format: 'date-time' },
                    signing: { type: 'boolean' },
                    revoked: { oneOf: [{ type: 'null' }, { type: 'object' }] },
                  },
                },
              },
            },
          }),
        },
      },
    },
    '/log/{ref}': {
      parameters: [
        refParam,
        {
          name: 'format',
          in: 'query',
          required: false,
          schema: { type: 'string', enum: ['jsonl'] },
          description: 'jsonl: the records as stored, oldest first, one per line (application/x-ndjson)',
        },
      ],
      get: {
        summary: "a ref's history, newest first",
        responses: {
          200: answer('the history', {
            type: 'object',
            required: ['ref', 'history'],
            properties: {
              ref,
              history: { type: 'array', items: { $ref: '#/components/schemas/RefLogRecord' } },
            },
          }),
          404: err('E_REF_NOT_FOUND'),
        },
      },
    },
    '/commits/{sha}': {
      parameters: [{ name: 'sha', in: 'path', required: true, schema: hex64 }],
      get: {
        summary: 'a commit',
        responses: {
          200: answer('the commit', {
            type: 'object',
            required: [
              'commit',
              'parent',
              'subject',
              'body',
              'timestamp',
              'metadata',
              'totalSize',
              'fileCount',
              'refs',
            ],
            properties: {
              commit: hex64,
              parent: { oneOf: [hex64, { type: 'null' }] },
              subject: { type: 'string' },
              body: { type: 'string' },
              timestamp: { type: 'integer', description: 'seconds since 1970' },
              metadata: { type: 'object', additionalProperties: true },
              totalSize: {
                type: ['integer', 'null'],
                description: 'bytes of regular files; null if partial',
              },
              fileCount: { type: ['integer', 'null'] },
              refs: { type: 'array', items: ref, description: 'refs whose history includes this commit' },
            },
          }),
          404: err('E_NOT_FOUND'),
        },
      },
    },
    '/objects/missing': {
      post: {
        summary: 'which of these objects the server lacks',
        requestBody: {
          required: true,
          content: json({
            type: 'object',
            required: ['objects'],
            properties: {
              objects: { type: 'array', maxItems: 100000, items: { $ref: '#/components/schemas/ObjectRef' } },
            },
          }),
        },
        responses: {
          200: answer('the missing ones, in request order, each once', {
            type: 'object',
            required: ['missing'],
            properties: { missing: { type: 'array', items: { $ref: '#/components/schemas/ObjectRef' } } },
          }),
          400: err('E_USAGE, E_INVALID_CHECKSUM'),
          413: err('E_LIMIT'),
        },
      },
    },
    '/objects/{name}': {
      parameters: [
        {
          name: 'name',
          in: 'path',
          required: true,
          description: '<sha256>.<type>; type file takes the .filez bytes',
          schema: { type: 'string', pattern: '^[0-9a-f]{64}\\.(commit|commitmeta|dirtree|dirmeta|file)$' },
        },
      ],
      put: {
        summary:
          'upload one object, verified before it is stored write-once (any push scope or admin; .commitmeta: admin only)',
        security: [{ bearer: [] }],
        requestBody: { required: true, content: { 'application/octet-stream': { schema: {} } } },
        responses: {
          200: answer('already there (nothing written)', { $ref: '#/components/schemas/ObjectRef' }),
          201: answer('created', { $ref: '#/components/schemas/ObjectRef' }),
          400: err('E_CORRUPT_OBJECT (details.expected / details.found), E_NOT_NORMAL_FORM'),
          401: err('E_UNAUTHORIZED'),
          403: err('E_FORBIDDEN'),
          413: err('E_LIMIT: 2 GiB for file, 10 MiB for metadata (configurable)'),
          507: err("E_NO_SPACE: the server's filesystem is full; nothing partial was stored"),
        },
      },
    },
    '/packs': {
      post: {
        summary:
          'upload many objects in one pack (docs/format.md "Packs"): every record verified before it is ' +
          'stored write-once (any push scope or admin)',
        description:
          'Records of kind commit, dirtree, dirmeta, commitmeta and filez; content records are refused ' +
          '(E_USAGE); a commitmeta record needs admin (E_FORBIDDEN). A record that fails stops the request; ' +
          'records verified before it stay stored.',
        security: [{ bearer: [] }],
        requestBody: { required: true, content: { 'application/octet-stream': { schema: {} } } },
        responses: {
          200: answer('every record verified and stored (or already there)', {
            type: 'object',
            required: ['records', 'stored', 'existing', 'bytes'],
            properties: {
              records: { type: 'integer', description: 'records in the pack' },
              stored: { type: 'integer', description: 'objects created' },
              existing: { type: 'integer', description: 'objects already there (nothing written)' },
              bytes: { type: 'integer', description: 'payload bytes of every record' },
            },
          }),
          400: err(
            'E_CORRUPT_OBJECT naming the record (details.object / expected / found), E_NOT_NORMAL_FORM, ' +
              'E_BAD_PACK (not a well-formed pack), E_USAGE (a content record)',
          ),
          401: err('E_UNAUTHORIZED'),
          403: err('E_FORBIDDEN'),
          413: err('E_LIMIT: a record over 2 GiB (file) or 10 MiB (metadata), configurable'),
          507: err("E_NO_SPACE: the server's filesystem is full; records verified before it stay stored"),
        },
      },
    },
    '/packs/{spec}': {
      parameters: [
        {
          name: 'spec',
          in: 'path',
          required: true,
          description:
            '`<to>`: the whole closure of commit <to>; `<from>..<to>`: closure(to) less closure(from), an update',
          schema: { type: 'string', pattern: '^([0-9a-f]{64}\\.\\.)?[0-9a-f]{64}$' },
        },
      ],
      get: {
        summary: 'a commit, or the update between two commits, as one pack (docs/format.md "Commit packs")',
        description:
          'Generated on first request (or after the ref move that made <to> a head) and stored for good; ' +
          'the same bytes forever. Records: the commit (and commitmeta), then dirmeta and dirtree breadth ' +
          'first, then one content record (inflated) per distinct file, depth first. Every object is ' +
          'verified while the pack is generated; an error is JSON, never a cut 200. With redirectObjects on ' +
          'an S3 store: 307 to a presigned URL of the stored pack. HEAD, ETag / If-None-Match, Range.',
        responses: {
          200: {
            description: 'the pack (Cache-Control: public, max-age=31536000, immutable; strong ETag)',
            content: { 'application/vnd.sysroot.pack': { schema: {} } },
          },
          206: { description: 'a byte range of the pack' },
          304: { description: 'not modified (If-None-Match)' },
          307: { description: 'redirect to a presigned URL of the stored pack (redirectObjects, S3)' },
          400: err('E_INVALID_CHECKSUM: not <64 hex> or <64 hex>..<64 hex>'),
          401: err('E_UNAUTHORIZED (anonymous pulls off)'),
          404: err(
            'E_NOT_FOUND with details.commit: <to> is not a commit here, or <from> is not a commit whose ' +
              'closure is complete here (ask for the whole pack); E_OBJECT_MISSING: <to> is incomplete',
          ),
          500: err('E_CORRUPT_OBJECT naming an object of the closure that does not verify in the store'),
        },
      },
    },
    '/reset/{ref}': {
      parameters: [refParam],
      post: {
        summary: 'audited rollback to a commit already in the ref history (admin)',
        security: [{ bearer: [] }],
        requestBody: {
          required: true,
          content: json({
            type: 'object',
            required: ['to', 'reason'],
            properties: { to: hex64, reason: { type: 'string', minLength: 1, maxLength: 4096 } },
          }),
        },
        responses: {
          200: moved,
          401: err('E_UNAUTHORIZED'),
          403: err('E_FORBIDDEN'),
          404: err('E_REF_NOT_FOUND'),
          409: err('E_NOT_IN_HISTORY'),
        },
      },
    },
    '/openapi.json': {
      get: { summary: 'this document', security: [{}], responses: { 200: { description: 'OpenAPI 3.1' } } },
    },
  },
} as const;
