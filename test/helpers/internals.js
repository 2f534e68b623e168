'use strict';
// The tests' one door into the package's internals: whatever a test needs
// beyond the public API (require('..')) comes from here, so that moving an
// internal module means changing this file only.
const path = require('path');

const dist = path.join(__dirname, '..', '..', 'dist');
const internal = (name) => require(path.join(dist, name));

const { storeOf } = internal('cache');
const { loadAddon } = internal('native/addon');
const { createStore, kernelsFor, resolveBackend, availableBackends } = internal('backends');
const { jsKernels } = internal('js/kernels');
const { philoxBlock } = internal('js/philox');
const half = internal('js/half');

module.exports = {
  /** The StoreBackend behind a NegativeCache. */
  storeOf,
  /** The native addon, or null. */
  loadAddon,
  createStore,
  kernelsFor,
  resolveBackend,
  availableBackends,
  /** The pure-JS reference kernels. */
  jsKernels,
  /** The shipped Philox block (src/js/philox.ts). */
  philoxBlock,
  /** float16 / bfloat16 conversions (src/js/half.ts). */
  half,
  /** The CUDA StoreBackend class (loaded on use). */
  get CudaCacheStore() { return internal('cuda/cache_store').CudaCacheStore; },
};
