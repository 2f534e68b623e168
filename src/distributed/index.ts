/** Beyond one process: the communicator over MPI (optional part of the build; docs/distributed.md). */
export { initDistributed } from './communicator';
export type { Communicator, DistributedOptions, Gathered, CollectiveArray, ReducibleArray, ReduceOp } from './communicator';
export { DistributedCacheClassificationLoss } from './loss';
export type { DistributedCacheClassificationLossOptions } from './loss';
