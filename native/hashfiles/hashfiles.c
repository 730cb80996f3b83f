/*
 * hashfiles.node: a push's files read, hashed and deflated on libuv's thread pool, in batches
 * (src/import/native-pool.ts drives it).
 *
 * Why: a push hashed and deflated its files in two worker threads. Each worker is an isolate that
 * costs ~60-75 ms of CPU to start, and its JavaScript around the work (messages, garbage collection,
 * page faults of its heap) cost about as much again as the sha256 it does; on 2 cores a push is
 * bound by CPU, so that CPU was time. The work itself is three calls: read(2), SHA-256 and one
 * igzip deflate, which need no JavaScript.
 *
 *   hashFiles(paths, sizes, parts, sums, check, spans, scratch, arena, level) -> Promise
 *       paths    Buffer: one NUL-terminated path per file
 *       sizes    Int32Array: each file's size from lstat (read again and checked), -1 for a symlink
 *                (nothing is read: its checksum covers its prefix alone)
 *       parts    Array of 2 Buffers per file: the content hash prefix, then the .filez header
 *       sums     Buffer of 32 bytes per file: written (check false), or the checksums the files must
 *                still have (check true: a file that changed since it was hashed is refused)
 *       spans    Int32Array of 2 per file: the .filez's offset and length in `arena`; length -1
 *                for none (level -1, or a file larger than `scratch`, which is hashed in pieces)
 *       scratch  Buffer each file is read into: whole when it fits, else piece by piece
 *       arena    Buffer the .filez are written into, back to back (header, then the deflate stream)
 *       level    ISA-L level 0-3, or -1 to hash only
 *   Resolves with nothing, or rejects with { index, errno, reason }: reason is the syscall that
 *   failed, "changed" (size, type or checksum not what the caller said), "arena", "deflate",
 *   "sha256" or "malloc" (the last four are the caller's or the library's fault: E_INTERNAL).
 *   The first failure stops the batch. The caller owns every buffer until the promise settles.
 *
 * SHA-256 is OpenSSL's, from the node binary, which exports it for addons (the headers come with
 * node's); deflate is ISA-L's, as in native/igzip.
 */
#include <errno.h>
#include <fcntl.h>
#include <isa-l/igzip_lib.h>
#include <node_api.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
  const char *path;
  int32_t size;
  const uint8_t *prefix;
  size_t prefix_length;
  const uint8_t *header;
  size_t header_length;
} item_t;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  napi_ref refs[6];
  item_t *items;
  size_t count;
  uint8_t *sums;
  bool check;
  int32_t *spans;
  uint8_t *scratch;
  size_t scratch_length;
  uint8_t *arena;
  size_t arena_length;
  int level;
  ssize_t failed_index;
  int failed_errno;
  const char *reason;
} batch_t;

static uint32_t level_buf_size(int level) {
  switch (level) {
    case 1: return ISAL_DEF_LVL1_DEFAULT;
    case 2: return ISAL_DEF_LVL2_DEFAULT;
    case 3: return ISAL_DEF_LVL3_DEFAULT;
    default: return 0;
  }
}

/* Hashes the regular file at `path` into `md`, `size` bytes of it (and checks that nothing
   follows: a file being written to now reads as "changed"), read through `scratch`: when it holds
   the whole file, the file's bytes are left there. Returns the failing syscall or reason. */
static const char *hash_file(EVP_MD_CTX *md, const char *path, int32_t size, uint8_t *scratch,
                             size_t scratch_length) {
  int fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) return "open";
  struct stat st;
  const char *failed = NULL;
  if (fstat(fd, &st) != 0) failed = "fstat";
  else if (!S_ISREG(st.st_mode) || st.st_size != size) {
    failed = "changed";
    errno = 0;
  }
  size_t got = 0;
  while (!failed && got < (size_t)size) {
    size_t want = (size_t)size - got < scratch_length ? (size_t)size - got : scratch_length;
    size_t filled = 0;
    while (!failed && filled < want) {
      ssize_t n = pread(fd, scratch + filled, want - filled, (off_t)(got + filled));
      if (n < 0 && errno == EINTR) continue;
      if (n < 0) failed = "read";
      else if (n == 0) {
        failed = "changed";
        errno = 0;
      } else filled += (size_t)n;
    }
    if (!failed && EVP_DigestUpdate(md, scratch, filled) != 1) failed = "sha256";
    got += filled;
  }
  if (!failed) {
    uint8_t one;
    ssize_t n;
    do n = pread(fd, &one, 1, (off_t)got);
    while (n < 0 && errno == EINTR);
    if (n < 0) failed = "read";
    else if (n > 0) {
      failed = "changed";
      errno = 0;
    }
  }
  int saved = errno;
  close(fd);
  errno = saved;
  return failed;
}

static void execute(napi_env env, void *data) {
  (void)env;
  batch_t *b = data;
  EVP_MD_CTX *md = EVP_MD_CTX_new();
  uint32_t need = level_buf_size(b->level);
  uint8_t *level_buf = need ? malloc(need) : NULL;
  struct isal_zstream *zs = malloc(sizeof *zs);
  size_t at = 0;
  if (!md || !zs || (need && !level_buf)) {
    b->failed_index = 0;
    b->failed_errno = ENOMEM;
    b->reason = "malloc";
    goto out;
  }
  for (size_t i = 0; i < b->count; i++) {
    const item_t *it = &b->items[i];
    const char *failed = NULL;
    errno = 0;
    uint8_t sum[32];
    unsigned int sum_length = 0;
    if (EVP_DigestInit_ex(md, EVP_sha256(), NULL) != 1 ||
        EVP_DigestUpdate(md, it->prefix, it->prefix_length) != 1)
      failed = "sha256";
    else if (it->size >= 0)
      failed = hash_file(md, it->path, it->size, b->scratch, b->scratch_length);
    if (!failed && (EVP_DigestFinal_ex(md, sum, &sum_length) != 1 || sum_length != 32)) failed = "sha256";
    if (!failed) {
      if (!b->check) memcpy(b->sums + 32 * i, sum, 32);
      else if (memcmp(b->sums + 32 * i, sum, 32) != 0) failed = "changed";
    }
    b->spans[2 * i] = 0;
    b->spans[2 * i + 1] = -1;
    /* A file larger than `scratch` was hashed in pieces and is not deflated here (span -1). */
    if (!failed && b->level >= 0 && (size_t)(it->size > 0 ? it->size : 0) <= b->scratch_length) {
      if (b->arena_length - at < it->header_length) failed = "arena";
      else {
        memcpy(b->arena + at, it->header, it->header_length);
        size_t n = it->header_length;
        /* A regular file's deflate stream follows its header (an empty file has one too); a
           symlink's .filez is its header alone. */
        if (it->size >= 0) {
          isal_deflate_stateless_init(zs);
          zs->level = (uint32_t)b->level;
          zs->level_buf = level_buf;
          zs->level_buf_size = need;
          zs->next_in = b->scratch;
          zs->avail_in = (uint32_t)it->size;
          zs->next_out = b->arena + at + n;
          size_t room = b->arena_length - at - n;
          zs->avail_out = (uint32_t)(room > UINT32_MAX ? UINT32_MAX : room);
          zs->end_of_stream = 1;
          zs->flush = NO_FLUSH;
          int rc = isal_deflate_stateless(zs);
          if (rc == STATELESS_OVERFLOW) failed = "arena";
          else if (rc != COMP_OK || zs->avail_in != 0) failed = "deflate";
          else n += zs->total_out;
        }
        if (!failed) {
          b->spans[2 * i] = (int32_t)at;
          b->spans[2 * i + 1] = (int32_t)n;
          at += n;
        }
      }
    }
    if (failed) {
      b->failed_index = (ssize_t)i;
      b->failed_errno = errno;
      b->reason = failed;
      break;
    }
  }
out:
  EVP_MD_CTX_free(md);
  free(level_buf);
  free(zs);
}

static void complete(napi_env env, napi_status status, void *data) {
  batch_t *b = data;
  if (status == napi_ok && b->failed_index < 0) {
    napi_value undefined;
    napi_get_undefined(env, &undefined);
    napi_resolve_deferred(env, b->deferred, undefined);
  } else {
    napi_value err, v;
    napi_create_object(env, &err);
    napi_create_int64(env, status == napi_ok ? b->failed_index : -1, &v);
    napi_set_named_property(env, err, "index", v);
    napi_create_int32(env, status == napi_ok ? b->failed_errno : ECANCELED, &v);
    napi_set_named_property(env, err, "errno", v);
    napi_create_string_utf8(env, status == napi_ok ? b->reason : "queue", NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, err, "reason", v);
    napi_reject_deferred(env, b->deferred, err);
  }
  for (size_t i = 0; i < sizeof b->refs / sizeof b->refs[0]; i++)
    if (b->refs[i]) napi_delete_reference(env, b->refs[i]);
  napi_delete_async_work(env, b->work);
  free(b->items);
  free(b);
}

static napi_value fail(napi_env env, batch_t *b, const char *message) {
  if (b) {
    for (size_t i = 0; i < sizeof b->refs / sizeof b->refs[0]; i++)
      if (b->refs[i]) napi_delete_reference(env, b->refs[i]);
    free(b->items);
    free(b);
  }
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

static bool typed(napi_env env, napi_value v, napi_typedarray_type want, void **data, size_t *length) {
  napi_typedarray_type type;
  return napi_get_typedarray_info(env, v, &type, length, data, NULL, NULL) == napi_ok && type == want;
}

static napi_value hash_files(napi_env env, napi_callback_info info) {
  size_t argc = 9;
  napi_value argv[9];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 9)
    return fail(env, NULL, "hashFiles(paths, sizes, parts, sums, check, spans, scratch, arena, level)");
  batch_t *b = calloc(1, sizeof *b);
  if (!b) return fail(env, NULL, "out of memory");
  b->failed_index = -1;

  char *paths;
  size_t paths_length, count, n;
  void *p;
  if (napi_get_buffer_info(env, argv[0], (void **)&paths, &paths_length) != napi_ok)
    return fail(env, b, "paths must be a Buffer");
  if (!typed(env, argv[1], napi_int32_array, &p, &count)) return fail(env, b, "sizes must be an Int32Array");
  const int32_t *sizes = p;
  uint32_t parts_length;
  bool is_array;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &parts_length) != napi_ok || parts_length != 2 * count)
    return fail(env, b, "parts must be an Array of 2 Buffers per file");
  if (!typed(env, argv[3], napi_uint8_array, &p, &n) || n != 32 * count)
    return fail(env, b, "sums must be a Buffer of 32 bytes per file");
  b->sums = p;
  if (napi_get_value_bool(env, argv[4], &b->check) != napi_ok) return fail(env, b, "check must be a boolean");
  if (!typed(env, argv[5], napi_int32_array, &p, &n) || n != 2 * count)
    return fail(env, b, "spans must be an Int32Array of 2 per file");
  b->spans = p;
  if (!typed(env, argv[6], napi_uint8_array, &p, &b->scratch_length)) return fail(env, b, "scratch must be a Buffer");
  b->scratch = p;
  if (!typed(env, argv[7], napi_uint8_array, &p, &b->arena_length)) return fail(env, b, "arena must be a Buffer");
  b->arena = p;
  int32_t level;
  if (napi_get_value_int32(env, argv[8], &level) != napi_ok || level < -1 || level > 3)
    return fail(env, b, "level must be -1 (no deflate) or 0-3");
  b->level = level;
  if (b->arena_length > INT32_MAX) return fail(env, b, "arena over 2 GiB");

  b->items = calloc(count ? count : 1, sizeof *b->items);
  if (!b->items) return fail(env, b, "out of memory");
  b->count = count;
  /* Each path must end inside `paths`: a missing NUL would send the pool thread past its end. */
  size_t at = 0;
  for (size_t i = 0; i < count; i++) {
    const char *nul = at < paths_length ? memchr(paths + at, '\0', paths_length - at) : NULL;
    if (!nul) return fail(env, b, "paths must hold one NUL-terminated path per file");
    item_t *it = &b->items[i];
    it->path = paths + at;
    at = (size_t)(nul - paths) + 1;
    it->size = sizes[i];
    if (it->size < -1) return fail(env, b, "a size must be -1 (symlink) or more");
    napi_value v;
    void *d;
    if (napi_get_element(env, argv[2], (uint32_t)(2 * i), &v) != napi_ok ||
        !typed(env, v, napi_uint8_array, &d, &it->prefix_length))
      return fail(env, b, "each prefix must be a Buffer");
    it->prefix = d;
    if (napi_get_element(env, argv[2], (uint32_t)(2 * i + 1), &v) != napi_ok ||
        !typed(env, v, napi_uint8_array, &d, &it->header_length))
      return fail(env, b, "each header must be a Buffer");
    it->header = d;
  }

  /* The buffers stay alive (and unmoved: backing stores never move) until complete(). */
  const int held[] = {0, 2, 3, 5, 6, 7};
  for (size_t i = 0; i < 6; i++)
    if (napi_create_reference(env, argv[held[i]], 1, &b->refs[i]) != napi_ok)
      return fail(env, b, "out of memory");
  napi_value promise, name;
  if (napi_create_string_utf8(env, "sysroot:hashFiles", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, b, &b->work) != napi_ok)
    return fail(env, b, "cannot create the work");
  if (napi_create_promise(env, &b->deferred, &promise) != napi_ok ||
      napi_queue_async_work(env, b->work) != napi_ok) {
    napi_delete_async_work(env, b->work);
    return fail(env, b, "cannot queue the batch");
  }
  return promise;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"hashFiles", NULL, hash_files, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
