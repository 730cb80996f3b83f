/*
 * memory.node: glibc malloc settings for the process, set once at start-up (src/malloc-tuning.ts
 * says which and why).
 *
 *   tune(mmapThreshold, trimThreshold) -> boolean
 *       mallopt(M_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD), both in bytes; true if both were
 *       taken, false if refused or if this is not glibc (musl has no mallopt: nothing to tune).
 *
 * No dependencies beyond libc and Node's headers, so it builds wherever npm can build
 * better-sqlite3; if it does not, the process keeps glibc's defaults and works the same, slower.
 */
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

static napi_value tune(napi_env env, napi_callback_info info) {
  size_t argc = 2;
  napi_value argv[2];
  int64_t mmap_threshold = 0, trim_threshold = 0;
  bool ok = false;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc == 2 &&
      napi_get_value_int64(env, argv[0], &mmap_threshold) == napi_ok &&
      napi_get_value_int64(env, argv[1], &trim_threshold) == napi_ok && mmap_threshold > 0 &&
      mmap_threshold <= INT32_MAX && trim_threshold > 0 && trim_threshold <= INT32_MAX) {
#ifdef __GLIBC__
    ok = mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold) == 1 &&
         mallopt(M_TRIM_THRESHOLD, (int)trim_threshold) == 1;
#endif
  }
  napi_value result;
  napi_get_boolean(env, ok, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"tune", NULL, tune, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
