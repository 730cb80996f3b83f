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
 * No dependencies beyond libc and Node's headers; without this addon the checkout makes the same
 * calls itself, on its own thread.
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <node_api.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"writeFiles", NULL, write_files, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
