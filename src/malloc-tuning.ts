/**
 * glibc malloc settings for this process, through the small native/memory addon (mallopt(3)).
 *
 * Why: Node hands every Buffer of 128 KiB or more (a pack's 1 MiB frames, file payloads, socket
 * reads) to malloc, and glibc serves those with a fresh mmap(2) and gives them back with munmap(2)
 * when they are freed. It also returns free memory at the top of its heap to the kernel once more
 * than 128 KiB is free there. Every page of memory that comes back that way is a new page fault
 * when it is used again. A pull of the Debian sysroot took ~29,000 page faults, though its peak RSS
 * is ~125 MB (~32,000 pages): most of its memory was faulted in, given back and faulted in again.
 * A fault costs ~0.1-0.3 µs on bare metal but 10.4 µs on the Firecracker VMs we measure on
 * (2026-12-06, one write per 4 KiB page of a fresh 256 MiB mapping), where those faults were ~0.3 s
 * of a ~1.4 s pull.
 *
 * So allocations of up to 32 MiB come from malloc's heap and are reused there, and the heap is
 * trimmed only when more than 256 MiB is free at its top (SETTINGS). Measured on that VM (medians of 4
 * alternating runs, the same settings given as MALLOC_MMAP_THRESHOLD_ / MALLOC_TRIM_THRESHOLD_):
 * cold pull of v1 1.40 → 1.22 s and ~29,000 → ~21,500 faults at the same peak RSS; push of v1
 * 2.47 → 2.36 s.
 *
 * The server keeps a lower trim threshold: it runs for days, and memory it used for one big push
 * should mostly go back. A push streams its whole tree through two worker threads, whose malloc
 * arenas held ~30 MB each at the 1 GiB push's peak (smaps, 2026-12-07): its buffers of 1 MiB and
 * more (frames, the workers' .filez arenas, read buffers) are reused where it matters, so a push
 * maps those fresh and gives them back when they are freed (M_MMAP_THRESHOLD 1 MiB), and trims at
 * 32 MiB. 1 GiB push: peak RSS 189 → 172 MB, ~4,000 more page faults in its ~11 s (2 runs each);
 * push v1 128 → 121 MB, same faults and time within the noise (5 runs each).
 *
 * A fresh 4 KiB page costs ~11 µs on those VMs however often the guest has used that memory
 * before, but a transparent huge page (2 MiB) that the guest has used before costs ~0.13 ms: 256
 * MiB touched once per page took 730-930 ms in 4 KiB pages and 17 ms in huge pages (a C loop,
 * 2026-12-07; the first run after boot took 660 ms, the host backing the memory). The kernel gives
 * huge pages only where asked (transparent_hugepage "madvise", Debian's default) and glibc asks only
 * with GLIBC_TUNABLES=glibc.malloc.hugetlb=1, read before any of our code runs. So the addon grows
 * the heap by SETTINGS' `hugeHeap` bytes at start-up and advises that part for huge pages
 * (native/memory/memory.c draws it); below the trim threshold, it stays. Medians of 6 alternating
 * runs (2026-12-07): `sysroot serve` took 6,100 page faults instead of 14,300 over a push of v1,
 * 1.375 s of CPU instead of 1.535 s, and the push 1.835 s instead of 1.93 s; a cold pull of v1
 * 16,200 → 11,200 faults at about the same peak RSS (104 → 106 MB), its time within the noise
 * (1.12 → 1.035 s in one A/B, 1.07 → 1.06 s in another). A push's own process gained little
 * (21,600 → 20,300 faults): its faults are in V8's heap and its workers' buffers.
 *
 * The server also faults its huge-page heap in before it listens (`populate`, MADV_POPULATE_WRITE):
 * the kernel zeroed those 2 MiB pages under the first push's allocations otherwise, ~2.4 ms each on
 * these VMs. `perf record -a` of pushes of v1 into a fresh `sysroot serve` (2026-12-07, 2 pairs):
 * `clear_page_erms` under malloc took 125-304 samples (60-150 ms) of the server's main thread, the
 * thread a push waits on at its end; populated at start-up, the main thread took 2,836 → 2,560 and
 * 2,642 → 2,158 samples and the pushes 2.26 → 2.08 s and 2.01 → 1.81 s. The server starts ~50-100
 * ms later and holds its 48 MiB from the start, as it does after its first push anyway.
 *
 * Settings the user gives glibc (GLIBC_TUNABLES, MALLOC_*_) win: nothing is changed then. Without the addon (not built, or not glibc) the defaults stay; only speed differs.
 */
import { loadAddon } from './native-addon.js';

const MiB = 1024 * 1024;
/**
 * M_MMAP_THRESHOLD and M_TRIM_THRESHOLD per kind of process; 32 MiB is glibc's largest mmap
 * threshold on 64-bit (HEAP_MAX_SIZE / 2). `hugeHeap`: bytes of heap advised for huge pages, below
 * the trim threshold so that it is not given back (a cold pull of v1 ran the same with 64 and 160
 * MiB).
 */
const SETTINGS = {
  command: { mmap: 32 * MiB, trim: 256 * MiB, hugeHeap: 128 * MiB, populate: false },
  push: { mmap: 1 * MiB, trim: 32 * MiB, hugeHeap: 24 * MiB, populate: false },
  server: { mmap: 32 * MiB, trim: 64 * MiB, hugeHeap: 48 * MiB, populate: true },
} as const;

interface MemoryAddon {
  tune(mmapThreshold: number, trimThreshold: number): boolean;
  /** Absent from an addon built before it existed (a stale native/memory/build). */
  hugeHeap?(bytes: number, mmapThreshold: number, populate?: boolean): number;
}

/** The user's own malloc settings, which are left alone. */
function userSettings(env: NodeJS.ProcessEnv): boolean {
  return (
    /glibc\.malloc\./.test(env.GLIBC_TUNABLES ?? '') ||
    env.MALLOC_MMAP_THRESHOLD_ !== undefined ||
    env.MALLOC_TRIM_THRESHOLD_ !== undefined
  );
}

/**
 * Set malloc up for a short command, a push, or a long-running server. Returns whether the settings were
 * applied (false: the user's own settings, no addon, or not glibc).
 */
export function tuneMalloc(kind: keyof typeof SETTINGS, env: NodeJS.ProcessEnv = process.env): boolean {
  if (userSettings(env)) return false;
  const addon = loadAddon('memory').addon as MemoryAddon | null;
  if (!addon) return false;
  const s = SETTINGS[kind];
  if (!addon.tune(s.mmap, s.trim)) return false;
  addon.hugeHeap?.(s.hugeHeap, s.mmap, s.populate);
  return true;
}
