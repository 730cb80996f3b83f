/*
 * files.node: create a batch of new files and symlinks on one of libuv's pool threads, while the
 * JavaScript thread goes on decompressing and verifying the next ones (src/checkout/file-batch.ts
 * says when it is used, and what it saves).
 *
 *   writeFiles(paths, specs, payloads, time) -> Promise<undefined>
 *     paths     Buffer: one NUL-terminated path per entry, in order
 *     specs     Int32Array, 3 per entry: kind (0 regular file, 1 symlink), the mode to create the
 *               file with, and the mode to fchmod(2) it to afterwards (-1: none)
 *     payloads  Array of Buffers, one per entry: a file's bytes, or a symlink's target (no NUL)
 *     time      seconds since the epoch: every entry's atime and mtime
 *
 *   A regular file is open(O_CREAT | O_EXCL | O_NOFOLLOW), written, fchmod'ed if asked, given its
 *   times with futimens(2) and closed; a symlink is symlink(2)ed and given its times with
 *   utimensat(AT_SYMLINK_NOFOLLOW). The batch stops at the first failure, which rejects the promise
 *   with { index, errno, syscall } (errno positive, as the kernel gives it); entries before it are
 *   complete, the one that failed and those after it are in any state.
 *
 * The payloads are read on the pool thread: the caller must not change them until the promise
 * settles. They are kept alive until then by a reference to the array.
 *
 *   scanDir(dir, xattrs) -> { names, stats, xattrs, xattrEnds } | { errno, syscall, name }
 *     The entries of one directory, for an import's walk (src/import/directory.ts): readdir(3),
 *     then per entry fstatat(AT_SYMLINK_NOFOLLOW) and, with `xattrs`, for a directory, regular file
 *     or symlink llistxattr(2) and lgetxattr(2), all in one call from JavaScript.
 *     names      Buffer: each entry's name as the kernel gives it, NUL-terminated, in readdir order
 *                ("." and ".." left out)
 *     stats      Float64Array, 5 per entry: st_mode, st_uid, st_gid, st_size, st_nlink
 *     xattrs     Buffer: for each attribute of each entry, in llistxattr's order: u32 name length,
 *                the name, u32 value length, the value (lengths little-endian)
 *     xattrEnds  Uint32Array, one more than entries: entry i's attributes are
 *                xattrs[xattrEnds[i], xattrEnds[i + 1])
 *     A filesystem without extended attributes (ENOTSUP) gives none. On the first failure the
 *     result is { errno (positive), syscall, name } instead: `name` is the entry's ('' for the
 *     directory itself). Synchronous: the walk needs each directory before it goes on, and a
 *     round trip to libuv's pool per directory would cost more than the calls.
 *
 *   writeOnce(root, tmpPrefix, keys, ends, bytes, results) -> undefined
 *     A batch of write-once blobs for the store's write worker (src/store/fs-write-worker.js),
 *     its JavaScript loop's steps without a JavaScript call per system call, and one system call (the
 *     rename) where that loop makes two (link, unlink): blob i is
 *     bytes[ends[i-1] .. ends[i]) (Float64Array ends), stored at root/key i (keys: a Buffer of
 *     NUL-terminated keys). Each is written to tmpPrefix + a counter (open(O_CREAT | O_EXCL),
 *     write, close), then renameat2(RENAME_NOREPLACE) to its key; a missing parent directory is
 *     made and the rename tried again; EEXIST means the key existed (nothing is replaced, the
 *     temp file is unlinked); where the filesystem lacks RENAME_NOREPLACE (EINVAL, ENOSYS),
 *     link(2) and unlink(2). results (Int32Array, 2 per blob) gets [1, 0] created, [0, 0] existed,
 *     or [errno (positive), the failing call: 1 open, 2 write, 3 close, 4 rename, 5 mkdir, 6 link].
 *     Synchronous, for that worker's thread. A push of v1 stores ~6,100 small .filez this way.
 *
 * No dependencies beyond libc and Node's headers; without this addon the checkout makes the same
 * calls itself, on its own thread, the import walks with Node's fs and @napi-rs/xattr, and the
 * store links and unlinks.
 */
#define _GNU_SOURCE
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/xattr.h>
#include <time.h>
#include <unistd.h>

enum { KIND_FILE = 0, KIND_SYMLINK = 1 };

typedef struct {
  const char *path;
  const uint8_t *data;
  size_t length;
  int32_t kind;
  int32_t create_mode;
  int32_t final_mode;
} entry_t;

typedef struct {
  napi_async_work work;
  napi_deferred deferred;
  /* The JavaScript values whose memory the pool thread reads. */
  napi_ref paths_ref;
  napi_ref payloads_ref;
  entry_t *entries;
  size_t count;
  struct timespec times[2];
  /* The outcome: failed_index < 0 if every entry was written. */
  ssize_t failed_index;
  int failed_errno;
  const char *failed_syscall;
} batch_t;

static int write_all(int fd, const uint8_t *data, size_t length) {
  while (length > 0) {
    ssize_t n = write(fd, data, length);
    if (n < 0) {
      if (errno == EINTR) continue;
      return -1;
    }
    data += n;
    length -= (size_t)n;
  }
  return 0;
}

/* Returns the failing syscall's name with errno set, or NULL. */
static const char *write_file(const entry_t *e, const struct timespec times[2]) {
  int fd = open(e->path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, (mode_t)e->create_mode);
  if (fd < 0) return "open";
  const char *failed = NULL;
  if (write_all(fd, e->data, e->length) != 0) failed = "write";
  else if (e->final_mode >= 0 && fchmod(fd, (mode_t)e->final_mode) != 0) failed = "fchmod";
  else if (futimens(fd, times) != 0) failed = "futimens";
  int saved = errno;
  if (close(fd) != 0 && !failed) return "close";
  errno = saved;
  return failed;
}

static const char *write_symlink(const entry_t *e, const struct timespec times[2]) {
  /* The target arrives without its NUL: copy it (targets are short, at most PATH_MAX in practice). */
  char stack[256];
  char *target = e->length < sizeof stack ? stack : malloc(e->length + 1);
  if (!target) {
    errno = ENOMEM;
    return "symlink";
  }
  memcpy(target, e->data, e->length);
  target[e->length] = '\0';
  const char *failed = NULL;
  if (symlink(target, e->path) != 0) failed = "symlink";
  else if (utimensat(AT_FDCWD, e->path, times, AT_SYMLINK_NOFOLLOW) != 0) failed = "utimensat";
  int saved = errno;
  if (target != stack) free(target);
  errno = saved;
  return failed;
}

static void execute(napi_env env, void *data) {
  (void)env;
  batch_t *b = data;
  for (size_t i = 0; i < b->count; i++) {
    const entry_t *e = &b->entries[i];
    const char *failed = e->kind == KIND_SYMLINK ? write_symlink(e, b->times) : write_file(e, b->times);
    if (failed) {
      b->failed_index = (ssize_t)i;
      b->failed_errno = errno;
      b->failed_syscall = failed;
      return;
    }
  }
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
    napi_create_string_utf8(env, status == napi_ok ? b->failed_syscall : "queue", NAPI_AUTO_LENGTH, &v);
    napi_set_named_property(env, err, "syscall", v);
    napi_reject_deferred(env, b->deferred, err);
  }
  napi_delete_reference(env, b->paths_ref);
  napi_delete_reference(env, b->payloads_ref);
  napi_delete_async_work(env, b->work);
  free(b->entries);
  free(b);
}

static napi_value fail(napi_env env, batch_t *b, const char *message) {
  if (b) {
    free(b->entries);
    free(b);
  }
  napi_throw_type_error(env, NULL, message);
  return NULL;
}

static napi_value write_files(napi_env env, napi_callback_info info) {
  size_t argc = 4;
  napi_value argv[4];
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 4)
    return fail(env, NULL, "writeFiles(paths, specs, payloads, time)");

  char *paths;
  size_t paths_length;
  if (napi_get_buffer_info(env, argv[0], (void **)&paths, &paths_length) != napi_ok)
    return fail(env, NULL, "paths must be a Buffer");
  napi_typedarray_type specs_type;
  size_t specs_length;
  void *specs_data;
  if (napi_get_typedarray_info(env, argv[1], &specs_type, &specs_length, &specs_data, NULL, NULL) !=
          napi_ok ||
      specs_type != napi_int32_array || specs_length % 3 != 0)
    return fail(env, NULL, "specs must be an Int32Array of 3 per entry");
  const int32_t *specs = specs_data;
  uint32_t count;
  bool is_array;
  if (napi_is_array(env, argv[2], &is_array) != napi_ok || !is_array ||
      napi_get_array_length(env, argv[2], &count) != napi_ok || count != specs_length / 3)
    return fail(env, NULL, "payloads must be an Array with one Buffer per entry");
  double time;
  if (napi_get_value_double(env, argv[3], &time) != napi_ok) return fail(env, NULL, "time must be a number");

  batch_t *b = calloc(1, sizeof *b);
  if (!b) return fail(env, NULL, "out of memory");
  b->entries = calloc(count ? count : 1, sizeof *b->entries);
  if (!b->entries) return fail(env, b, "out of memory");
  b->count = count;
  b->failed_index = -1;
  b->times[0].tv_sec = (time_t)time;
  b->times[0].tv_nsec = 0;
  b->times[1] = b->times[0];

  /* Each path must end inside `paths`: a missing NUL would send the pool thread past its end. */
  size_t at = 0;
  for (uint32_t i = 0; i < count; i++) {
    const char *nul = at < paths_length ? memchr(paths + at, '\0', paths_length - at) : NULL;
    if (!nul) return fail(env, b, "paths must hold one NUL-terminated path per entry");
    entry_t *e = &b->entries[i];
    e->path = paths + at;
    at = (size_t)(nul - paths) + 1;
    e->kind = specs[3 * i];
    e->create_mode = specs[3 * i + 1];
    e->final_mode = specs[3 * i + 2];
    if (e->kind != KIND_FILE && e->kind != KIND_SYMLINK) return fail(env, b, "kind must be 0 or 1");
    napi_value payload;
    void *data;
    if (napi_get_element(env, argv[2], i, &payload) != napi_ok ||
        napi_get_buffer_info(env, payload, &data, &e->length) != napi_ok)
      return fail(env, b, "each payload must be a Buffer");
    e->data = data;
  }

  napi_value promise, name;
  if (napi_create_reference(env, argv[0], 1, &b->paths_ref) != napi_ok) return fail(env, b, "out of memory");
  if (napi_create_reference(env, argv[2], 1, &b->payloads_ref) != napi_ok) {
    napi_delete_reference(env, b->paths_ref);
    return fail(env, b, "out of memory");
  }
  if (napi_create_string_utf8(env, "sysroot:writeFiles", NAPI_AUTO_LENGTH, &name) != napi_ok ||
      napi_create_async_work(env, NULL, name, execute, complete, b, &b->work) != napi_ok) {
    napi_delete_reference(env, b->paths_ref);
    napi_delete_reference(env, b->payloads_ref);
    return fail(env, b, "cannot create the work");
  }
  /* Once queued, complete() frees the batch, whether the work ran or was cancelled. */
  if (napi_create_promise(env, &b->deferred, &promise) != napi_ok ||
      napi_queue_async_work(env, b->work) != napi_ok) {
    napi_delete_reference(env, b->paths_ref);
    napi_delete_reference(env, b->payloads_ref);
    napi_delete_async_work(env, b->work);
    return fail(env, b, "cannot queue the batch");
  }
  return promise;
}

/* A growable byte buffer; `failed` once an allocation failed (the scan then reports ENOMEM). */
typedef struct {
  uint8_t *data;
  size_t length;
  size_t capacity;
  bool failed;
} bytes_t;

static void *bytes_room(bytes_t *b, size_t n) {
  if (b->failed) return NULL;
  if (b->length + n > b->capacity) {
    size_t cap = b->capacity ? b->capacity : 4096;
    while (cap < b->length + n) cap *= 2;
    uint8_t *d = realloc(b->data, cap);
    if (!d) {
      b->failed = true;
      return NULL;
    }
    b->data = d;
    b->capacity = cap;
  }
  void *at = b->data + b->length;
  b->length += n;
  return at;
}

static void bytes_put(bytes_t *b, const void *p, size_t n) {
  void *at = bytes_room(b, n);
  if (at && n) memcpy(at, p, n);
}

static void bytes_put_u32(bytes_t *b, uint32_t v) {
  uint8_t le[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
  bytes_put(b, le, 4);
}

/* A size query, then the call, again while the answer grew in between (ERANGE). */
static ssize_t list_xattrs(const char *path, bytes_t *scratch) {
  for (;;) {
    ssize_t n = llistxattr(path, NULL, 0);
    if (n <= 0) return n;
    scratch->length = 0;
    if (!bytes_room(scratch, (size_t)n)) {
      errno = ENOMEM;
      return -1;
    }
    ssize_t got = llistxattr(path, (char *)scratch->data, (size_t)n);
    if (got >= 0 || errno != ERANGE) return got;
  }
}

/* Appends one attribute; 0, or -1 with errno (ENODATA: removed since it was listed, skipped). */
static int put_xattr(const char *path, const char *name, bytes_t *out) {
  for (;;) {
    ssize_t n = lgetxattr(path, name, NULL, 0);
    if (n < 0) return errno == ENODATA ? 0 : -1;
    size_t name_length = strlen(name);
    size_t start = out->length;
    bytes_put_u32(out, (uint32_t)name_length);
    bytes_put(out, name, name_length);
    bytes_put_u32(out, (uint32_t)n);
    uint8_t *value = bytes_room(out, (size_t)n);
    if (out->failed) {
      errno = ENOMEM;
      return -1;
    }
    ssize_t got = lgetxattr(path, name, value, (size_t)n);
    if (got == n) return 0;
    out->length = start;
    if (got >= 0 || errno == ERANGE) continue; /* changed in between: ask again */
    return errno == ENODATA ? 0 : -1;
  }
}

static napi_value scan_result(napi_env env, bytes_t *names, bytes_t *stats, bytes_t *xattrs,
                              bytes_t *ends) {
  napi_value result, v, ab;
  void *data;
  napi_create_object(env, &result);
  napi_create_buffer_copy(env, names->length, names->length ? (const void *)names->data : "", NULL, &v);
  napi_set_named_property(env, result, "names", v);
  napi_create_arraybuffer(env, stats->length, &data, &ab);
  if (stats->length) memcpy(data, stats->data, stats->length);
  napi_create_typedarray(env, napi_float64_array, stats->length / 8, ab, 0, &v);
  napi_set_named_property(env, result, "stats", v);
  napi_create_buffer_copy(env, xattrs->length, xattrs->length ? (const void *)xattrs->data : "", NULL, &v);
  napi_set_named_property(env, result, "xattrs", v);
  napi_create_arraybuffer(env, ends->length, &data, &ab);
  memcpy(data, ends->data, ends->length);
  napi_create_typedarray(env, napi_uint32_array, ends->length / 4, ab, 0, &v);
  napi_set_named_property(env, result, "xattrEnds", v);
  return result;
}

static napi_value scan_failure(napi_env env, int err, const char *syscall, const char *name) {
  napi_value result, v;
  napi_create_object(env, &result);
  napi_create_int32(env, err, &v);
  napi_set_named_property(env, result, "errno", v);
  napi_create_string_utf8(env, syscall, NAPI_AUTO_LENGTH, &v);
  napi_set_named_property(env, result, "syscall", v);
  napi_create_buffer_copy(env, strlen(name), name[0] ? name : "", NULL, &v);
  napi_set_named_property(env, result, "name", v);
  return result;
}

static napi_value scan_dir(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  char dir[PATH_MAX];
  size_t dir_length;
  bool want_xattrs;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 2 ||
      napi_get_value_string_utf8(env, argv[0], dir, sizeof dir, &dir_length) != napi_ok ||
      napi_get_value_bool(env, argv[1], &want_xattrs) != napi_ok) {
    napi_throw_type_error(env, NULL, "scanDir(dir: string, xattrs: boolean)");
    return NULL;
  }
  if (dir_length >= sizeof dir - 1) return scan_failure(env, ENAMETOOLONG, "opendir", "");
  DIR *d = opendir(dir);
  if (!d) return scan_failure(env, errno, "opendir", "");

  bytes_t names = {0}, stats = {0}, xattrs = {0}, ends = {0}, scratch = {0};
  char path[PATH_MAX];
  memcpy(path, dir, dir_length);
  path[dir_length] = '/';
  int err = 0;
  const char *syscall = NULL;
  const char *failed_name = "";
  bytes_put_u32(&ends, 0);
  for (;;) {
    errno = 0;
    struct dirent *e = readdir(d);
    if (!e) {
      if (errno) err = errno, syscall = "readdir";
      break;
    }
    const char *name = e->d_name;
    if (name[0] == '.' && (name[1] == '\0' || (name[1] == '.' && name[2] == '\0'))) continue;
    struct stat st;
    if (fstatat(dirfd(d), name, &st, AT_SYMLINK_NOFOLLOW) != 0) {
      err = errno, syscall = "lstat", failed_name = name;
      break;
    }
    bytes_put(&names, name, strlen(name) + 1);
    double fields[5] = {st.st_mode, st.st_uid, st.st_gid, (double)st.st_size, (double)st.st_nlink};
    bytes_put(&stats, fields, sizeof fields);
    if (want_xattrs && (S_ISDIR(st.st_mode) || S_ISREG(st.st_mode) || S_ISLNK(st.st_mode))) {
      size_t name_length = strlen(name);
      if (dir_length + 1 + name_length >= sizeof path) {
        err = ENAMETOOLONG, syscall = "llistxattr", failed_name = name;
        break;
      }
      memcpy(path + dir_length + 1, name, name_length + 1);
      ssize_t n = list_xattrs(path, &scratch);
      if (n < 0 && errno != ENOTSUP) {
        err = errno, syscall = "llistxattr", failed_name = name;
        break;
      }
      for (ssize_t at = 0; at < n;) {
        const char *attr = (const char *)scratch.data + at;
        size_t attr_length = strnlen(attr, (size_t)(n - at));
        if (put_xattr(path, attr, &xattrs) != 0) {
          err = errno, syscall = "lgetxattr", failed_name = name;
          break;
        }
        at += (ssize_t)attr_length + 1;
      }
      if (err) break;
    }
    bytes_put_u32(&ends, (uint32_t)xattrs.length);
  }
  napi_value result;
  if (!err && (names.failed || stats.failed || xattrs.failed || ends.failed || scratch.failed))
    err = ENOMEM, syscall = "malloc";
  /* failed_name points into the DIR's buffer: the failure is built before closedir. */
  result = err ? scan_failure(env, err, syscall, failed_name) : scan_result(env, &names, &stats, &xattrs, &ends);
  closedir(d);
  free(names.data);
  free(stats.data);
  free(xattrs.data);
  free(ends.data);
  free(scratch.data);
  return result;
}

enum { CALL_OPEN = 1, CALL_WRITE, CALL_CLOSE, CALL_RENAME, CALL_MKDIR, CALL_LINK };

/* mkdir(2) each missing directory above `path`'s last component (mode 0777 less the umask). */
static int make_parents(char *path) {
  for (char *slash = strchr(path + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
    *slash = '\0';
    int r = mkdir(path, 0777);
    int err = errno;
    *slash = '/';
    if (r != 0 && err != EEXIST) {
      errno = err;
      return -1;
    }
  }
  return 0;
}

/* Put tmp in place at dest unless dest exists: 1 placed, 0 existed, -1 failed (errno, *call). */
static int place_once(const char *tmp, char *dest, int *call) {
  static int no_rename2 = 0;
  for (int attempt = 0; attempt < 2; attempt++) {
    int r;
    if (!no_rename2) {
      r = renameat2(AT_FDCWD, tmp, AT_FDCWD, dest, RENAME_NOREPLACE);
      if (r != 0 && (errno == EINVAL || errno == ENOSYS)) no_rename2 = 1;
    }
    if (no_rename2) {
      r = link(tmp, dest);
      if (r == 0) unlink(tmp);
    }
    if (r == 0) return 1;
    if (errno == EEXIST) return 0;
    if (errno != ENOENT || attempt > 0) {
      *call = no_rename2 ? CALL_LINK : CALL_RENAME;
      return -1;
    }
    if (make_parents(dest) != 0) {
      *call = CALL_MKDIR;
      return -1;
    }
  }
  return -1;
}

static napi_value write_once(napi_env env, napi_callback_info info) {
  size_t argc = 6;
  napi_value argv[6];
  char root[PATH_MAX], prefix[PATH_MAX];
  size_t root_length, prefix_length, keys_length, bytes_length, ends_count, results_count;
  void *keys_data, *bytes_data, *ends_data, *results_data;
  napi_typedarray_type ends_type, results_type;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok || argc != 6 ||
      napi_get_value_string_utf8(env, argv[0], root, sizeof root, &root_length) != napi_ok ||
      root_length >= sizeof root - 1 ||
      napi_get_value_string_utf8(env, argv[1], prefix, sizeof prefix, &prefix_length) != napi_ok ||
      prefix_length >= sizeof prefix - 32 ||
      napi_get_buffer_info(env, argv[2], &keys_data, &keys_length) != napi_ok ||
      napi_get_typedarray_info(env, argv[3], &ends_type, &ends_count, &ends_data, NULL, NULL) != napi_ok ||
      ends_type != napi_float64_array ||
      napi_get_typedarray_info(env, argv[4], &(napi_typedarray_type){0}, &bytes_length, &bytes_data, NULL,
                               NULL) != napi_ok ||
      napi_get_typedarray_info(env, argv[5], &results_type, &results_count, &results_data, NULL, NULL) !=
          napi_ok ||
      results_type != napi_int32_array || results_count < 2 * ends_count) {
    napi_throw_type_error(env, NULL,
                          "writeOnce(root: string, tmpPrefix: string, keys: Buffer, ends: Float64Array, "
                          "bytes: Uint8Array, results: Int32Array of 2 per blob)");
    return NULL;
  }
  static uint64_t counter = 0;
  const char *key = keys_data;
  const char *keys_end = (const char *)keys_data + keys_length;
  const double *ends = ends_data;
  int32_t *results = results_data;
  const uint8_t *bytes = bytes_data;
  size_t start = 0;
  char tmp[PATH_MAX], dest[PATH_MAX];
  for (size_t i = 0; i < ends_count; i++) {
    size_t left = key < keys_end ? (size_t)(keys_end - key) : 0;
    size_t key_length = strnlen(key, left);
    double end_value = ends[i];
    size_t end = end_value >= 0 ? (size_t)end_value : 0;
    if (key_length == left || end_value < (double)start || end > bytes_length ||
        root_length + 1 + key_length >= sizeof dest) {
      napi_throw_range_error(env, NULL, "writeOnce: keys, ends and bytes do not agree");
      return NULL;
    }
    memcpy(dest, root, root_length);
    dest[root_length] = '/';
    memcpy(dest + root_length + 1, key, key_length + 1);
    int call = 0, placed = -1;
    /* Cannot be cut short: prefix_length leaves 32 bytes for the counter's at most 20 digits. */
    if (snprintf(tmp, sizeof tmp, "%s%llu", prefix, (unsigned long long)++counter) >= (int)sizeof tmp) {
      napi_throw_range_error(env, NULL, "writeOnce: tmpPrefix too long");
      return NULL;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0666);
    if (fd < 0) call = CALL_OPEN;
    else {
      if (write_all(fd, bytes + start, end - start) != 0) call = CALL_WRITE;
      int saved = errno;
      if (close(fd) != 0 && !call) call = CALL_CLOSE, saved = errno;
      errno = saved;
      if (!call) placed = place_once(tmp, dest, &call);
      saved = errno;
      if (placed != 1) unlink(tmp);
      errno = saved;
    }
    results[2 * i] = placed >= 0 ? placed : errno;
    results[2 * i + 1] = placed >= 0 ? 0 : call;
    start = end;
    key += key_length + 1;
  }
  return NULL;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"writeFiles", NULL, write_files, NULL, NULL, NULL, napi_enumerable, NULL},
      {"scanDir", NULL, scan_dir, NULL, NULL, NULL, napi_enumerable, NULL},
      {"writeOnce", NULL, write_once, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
