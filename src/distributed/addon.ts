/**
 * Loads the optional MPI addon (build/Release/mpi/negative_cache_mpi.node,
 * built by cmake/mpi.cmake only when CMake found MPI) on first use, or says
 * exactly why it is unavailable. Never re-exported.
 */
import * as fs from 'fs';
import * as path from 'path';
import { NegativeCacheError } from '../errors';

export type MpiArray = Float32Array | Float64Array | Int32Array | Uint8Array;

export interface MpiInitInfo {
  rank: number;
  size: number;
  threadLevel: string;   // what MPI_Init_thread provided (MPI_THREAD_MULTIPLE requested)
  ownsMpi: boolean;      // false when something else in the process initialized MPI
  library: string;       // "Open MPI v4.1.4"
  host: string;          // MPI_Get_processor_name
}

/** The binding (binding/mpi/mpi_binding.cc); `signature` is a layout hash all ranks must share. */
export interface MpiAddon {
  napiVersion: number;
  init(): MpiInitInfo;
  barrier(label: string, timeoutMs: number): void;
  allreduce(label: string, values: Float32Array | Float64Array | Int32Array, reduce: number, timeoutMs: number, signature?: bigint): void;
  broadcast(label: string, values: MpiArray, root: number, timeoutMs: number, signature?: bigint): void;
  allgatherv<T extends MpiArray>(label: string, values: T, timeoutMs: number, signature?: bigint): { data: T; counts: Int32Array };
  alltoallv<T extends MpiArray>(label: string, values: T, sendCounts: Int32Array, timeoutMs: number, signature?: bigint): { data: T; counts: Int32Array };
  finalize(exitCode: number, timeoutMs: number, reason: string, uncaught: string): void;
}

const packageRoot = path.resolve(__dirname, '..', '..');

const INSTALL_HINT =
  'Install Open MPI (Debian/Ubuntu: apt-get install openmpi-bin libopenmpi-dev; Fedora: dnf install openmpi-devel; ' +
  'macOS: brew install open-mpi) and rebuild negative-cache from source: NEGATIVE_CACHE_BUILD_FROM_SOURCE=1 npm rebuild negative-cache. ' +
  'See docs/distributed.md.';

/** Where the MPI addon is looked for (NEGATIVE_CACHE_MPI_ADDON overrides). */
export function mpiAddonPath(): string {
  return process.env.NEGATIVE_CACHE_MPI_ADDON ||
    path.join(packageRoot, 'build', 'Release', 'mpi', 'negative_cache_mpi.node');
}

/** Why `file` is missing, from the build-info.json that cmake/mpi.cmake writes beside it. */
function whyMissing(file: string): string {
  const infoFile = path.join(path.dirname(file), 'build-info.json');
  let info: { built?: unknown; reason?: unknown } | null = null;
  try {
    info = JSON.parse(fs.readFileSync(infoFile, 'utf8'));
  } catch {
    info = null;
  }
  const head = 'negative-cache: distributed training is unavailable: ';
  if (info && info.built === false) {
    return `${head}the MPI addon was not built: ${String(info.reason)}. ${INSTALL_HINT}`;
  }
  if (info && info.built === true) {
    return `${head}the build made an MPI addon but ${file} is missing (a partial or moved build). ${INSTALL_HINT}`;
  }
  const from = process.env.NEGATIVE_CACHE_MPI_ADDON ? ' (from NEGATIVE_CACHE_MPI_ADDON)' : '';
  return `${head}the MPI addon is not part of this installation: no ${file}${from}; ` +
    `prebuilt binaries ship without MPI, and a source build makes it only when CMake finds MPI. ${INSTALL_HINT}`;
}

let loaded: { file: string; addon: MpiAddon } | null = null;

/** The MPI addon, or NegativeCacheError ERR_NO_MPI saying why it cannot be had. */
export function loadMpiAddon(): MpiAddon {
  const file = mpiAddonPath();
  if (loaded && loaded.file === file) return loaded.addon;
  if (!fs.existsSync(file)) throw new NegativeCacheError('ERR_NO_MPI', whyMissing(file));
  let addon: MpiAddon;
  try {
    // eslint-disable-next-line @typescript-eslint/no-var-requires
    addon = require(file) as MpiAddon;
  } catch (e) {
    const text = String(e instanceof Error ? e.message : e).split('\n')[0].trim();
    throw new NegativeCacheError('ERR_NO_MPI',
      `negative-cache: distributed training is unavailable: ${file} does not load: ${text} ` +
      '(it needs the MPI library it was built against, e.g. libmpi.so.40 of Open MPI 4). ' + INSTALL_HINT);
  }
  loaded = { file, addon };
  return addon;
}
