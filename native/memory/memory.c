/*
 * memory.node: glibc malloc settings for the process, set once at start-up (src/malloc-tuning.ts
 * says which and why).
 *
 *   tune(mmapThreshold, trimThreshold) -> boolean
 *       mallopt(M_MMAP_THRESHOLD) and mallopt(M_TRIM_THRESHOLD), both in bytes; true if both were
 *       taken, false if refused or if this is not glibc (musl has no mallopt: nothing to tune).
 *
 *   hugeHeap(bytes, mmapThreshold, populate = false) -> number
 *       Grows malloc's main heap by about `bytes` now, leaves it free, and asks for transparent
 *       huge pages there (madvise MADV_HUGEPAGE): the bytes of the heap so advised (0: nothing
 *       done). Call it after tune(), with tune's mmapThreshold, which it sets again at the end.
 *       Once per process; later calls return 0. With `populate`, the advised part is also faulted
 *       in at once (madvise MADV_POPULATE_WRITE, Linux 5.14+; on an older kernel it is left to be
 *       faulted in as it is used): the kernel zeroes those pages now, not under the first
 *       allocations that land there. For `sysroot serve`, which does it before it listens.
 *
 *         heap start           brk before        brk after (the next allocations land here)
 *         |   in use, 4 KiB pages  |  free, 2 MiB-aligned part advised  |
 *
 *       malloc(3) takes memory above brk with sbrk(2), M_TOP_PAD bytes more than it needs; so a
 *       top pad of `bytes` and one allocation larger than all the heap's free memory move brk up
 *       by about `bytes` in one step. The memory is freed at once and stays mapped as long as it is
 *       below M_TRIM_THRESHOLD, so the caller passes less than its trim threshold. Growth of the
 *       heap past it gets small pages again: brk(2) does not extend an advised mapping.
 *
 * No dependencies beyond libc and Node's headers, so it builds wherever npm can build
 * better-sqlite3; if it does not, the process keeps glibc's defaults and works the same, slower.
 */
#include <node_api.h>
#include <stdbool.h>
#include <stdint.h>
#ifdef __GLIBC__
#include <malloc.h>
#include <sys/mman.h>
#include <unistd.h>
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

static napi_value huge_heap(napi_env env, napi_callback_info info) {
  static bool done = false;
  size_t argc = 3;
  napi_value argv[3];
  int64_t bytes = 0, mmap_threshold = 0, advised = 0;
  bool populate = false;
  if (!done && napi_get_cb_info(env, info, &argc, argv, NULL, NULL) == napi_ok && argc >= 2 &&
      (argc < 3 || napi_get_value_bool(env, argv[2], &populate) == napi_ok) &&
      napi_get_value_int64(env, argv[0], &bytes) == napi_ok &&
      napi_get_value_int64(env, argv[1], &mmap_threshold) == napi_ok && bytes > 0 &&
      bytes <= INT32_MAX && mmap_threshold > 0 && mmap_threshold <= INT32_MAX) {
    done = true;
#if defined(__GLIBC__) && defined(MADV_HUGEPAGE)
    const uintptr_t huge = 2 * 1024 * 1024;
    const size_t heap_max = 32 * 1024 * 1024; /* glibc's largest mmap threshold on 64-bit */
    /* More than all the free memory of the heap together: no free chunk can serve it, so malloc
     * takes it from above brk, and with it the top pad. */
    struct mallinfo2 mi = mallinfo2();
    size_t ask = mi.fordblks + mi.fsmblks + 4096;
    char *before = sbrk(0);
    if (before != (char *)-1 && ask < heap_max && mallopt(M_MMAP_THRESHOLD, (int)heap_max) == 1 &&
        mallopt(M_TOP_PAD, (int)bytes) == 1) {
      /* volatile: the compiler may drop a malloc whose memory is never used. */
      void *volatile grown = malloc(ask);
      free(grown);
      mallopt(M_TOP_PAD, 128 * 1024); /* glibc's default again, for any later growth */
      char *after = sbrk(0);
      uintptr_t from = ((uintptr_t)before + huge - 1) & ~(huge - 1);
      uintptr_t to = (uintptr_t)after & ~(huge - 1);
      if (after != (char *)-1 && to > from && madvise((void *)from, to - from, MADV_HUGEPAGE) == 0) {
        advised = (int64_t)(to - from);
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23 /* Linux 5.14; glibc 2.36 headers lack it */
#endif
        if (populate) madvise((void *)from, to - from, MADV_POPULATE_WRITE);
      }
    }
    mallopt(M_MMAP_THRESHOLD, (int)mmap_threshold);
#endif
  }
  napi_value result;
  napi_create_int64(env, advised, &result);
  return result;
}

NAPI_MODULE_INIT() {
  napi_property_descriptor props[] = {
      {"tune", NULL, tune, NULL, NULL, NULL, napi_enumerable, NULL},
      {"hugeHeap", NULL, huge_heap, NULL, NULL, NULL, napi_enumerable, NULL},
  };
  napi_define_properties(env, exports, sizeof props / sizeof props[0], props);
  return exports;
}
