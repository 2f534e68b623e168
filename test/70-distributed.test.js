'use strict';
// Distributed (MPI, docs/distributed.md). Without the MPI addon initDistributed
// throws ERR_NO_MPI saying why (always tested, in this process). With mpirun
// and the addon, test/mpi/worker.js runs under `mpirun -np 2` / `-np 3` on
// loopback and as a singleton; each rank checks the collectives' results
// against values it derives for every rank, and the failure cases (a rank
// that throws, hangs or is killed) must end the whole job in bounded time
// with a clear error on the surviving ranks. This process never starts MPI.
// NEGATIVE_CACHE_REQUIRE_MPI=1 (CI) turns the skip into a failure.
const assert = require('assert');
const fs = require('fs');
const os = require('os');
const path = require('path');
const { spawn } = require('child_process');
const nc = require('..');
const { mpiAddonPath } = require('../dist/distributed/addon');

const root = path.resolve(__dirname, '..');
const worker = path.join(__dirname, 'mpi', 'worker.js');

function onPath(name) {
  return (process.env.PATH || '').split(path.delimiter).some((d) => d && fs.existsSync(path.join(d, name)));
}

/** Runs a command; resolves { code, signal, out, ms, results } (RESULT lines parsed), killing it after limitMs. */
function run(argv, { env = {}, limitMs = 40000 } = {}) {
  return new Promise((resolve) => {
    const t0 = Date.now();
    const child = spawn(argv[0], argv.slice(1), {
      cwd: root,
      detached: true,  // its own process group, so a stuck job can be killed whole
      env: {
        ...process.env,
        // Loopback TCP, as between machines; no shared-memory transport (containers often forbid its single-copy mode).
        OMPI_MCA_btl: 'self,tcp',
        OMPI_MCA_btl_tcp_if_include: 'lo',
        OMPI_MCA_oob_tcp_if_include: 'lo',
        NEGATIVE_CACHE_MPI_TIMEOUT_MS: '20000',
        ...env,
      },
    });
    let out = '';
    child.stdout.on('data', (d) => { out += d; });
    child.stderr.on('data', (d) => { out += d; });
    let killed = false;
    const timer = setTimeout(() => {
      killed = true;
      try { process.kill(-child.pid, 'SIGKILL'); } catch (e) { /* already gone */ }
    }, limitMs);
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const results = out.split('\n').filter((l) => l.startsWith('RESULT ')).map((l) => JSON.parse(l.slice(7)));
      resolve({ code, signal, out, ms: Date.now() - t0, results, killed });
    });
  });
}

const mpirun = (np, scenario, opts) =>
  run(['mpirun', '--allow-run-as-root', '--oversubscribe', '-np', String(np), process.execPath, worker, scenario], opts);
const singleton = (scenario, opts) => run([process.execPath, worker, scenario], opts);

/** Asserts a clean run: exit 0 and one ok result per rank. */
function assertAllOk(r, np) {
  assert.strictEqual(r.code, 0, r.out);
  assert.deepStrictEqual(r.results.map((x) => x.rank).sort(), [...Array(np).keys()], r.out);
  for (const x of r.results) {
    assert.strictEqual(x.ok, true, r.out);
    assert.strictEqual(x.size, np);
  }
}

describe('distributed: without the MPI addon', () => {
  let saved;
  let dir;
  beforeEach(() => {
    saved = process.env.NEGATIVE_CACHE_MPI_ADDON;
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'nc-mpi-'));
  });
  afterEach(() => {
    if (saved === undefined) delete process.env.NEGATIVE_CACHE_MPI_ADDON;
    else process.env.NEGATIVE_CACHE_MPI_ADDON = saved;
    fs.rmSync(dir, { recursive: true, force: true });
  });

  function expectNoMpi(...texts) {
    assert.throws(() => nc.initDistributed(), (e) => {
      assert.ok(e instanceof nc.NegativeCacheError, e.stack);
      assert.strictEqual(e.code, 'ERR_NO_MPI');
      for (const t of texts) assert.ok(e.message.includes(t), `"${t}" missing from: ${e.message}`);
      return true;
    });
  }

  it('says the addon is not part of the installation, and how to get it', () => {
    process.env.NEGATIVE_CACHE_MPI_ADDON = path.join(dir, 'negative_cache_mpi.node');
    expectNoMpi('not part of this installation', process.env.NEGATIVE_CACHE_MPI_ADDON, 'apt-get install openmpi-bin libopenmpi-dev',
      'NEGATIVE_CACHE_BUILD_FROM_SOURCE=1 npm rebuild negative-cache');
  });

  it('says why the build left it out (build-info.json)', () => {
    process.env.NEGATIVE_CACHE_MPI_ADDON = path.join(dir, 'negative_cache_mpi.node');
    fs.writeFileSync(path.join(dir, 'build-info.json'), JSON.stringify({ built: false, reason: "CMake's find_package(MPI) found no MPI library" }));
    expectNoMpi('the MPI addon was not built', "find_package(MPI) found no MPI library", 'openmpi');
  });

  it('gives the loader error of an addon that does not load', () => {
    process.env.NEGATIVE_CACHE_MPI_ADDON = path.join(dir, 'negative_cache_mpi.node');
    fs.writeFileSync(process.env.NEGATIVE_CACHE_MPI_ADDON, 'not an ELF file');
    expectNoMpi('does not load', 'negative_cache_mpi.node');
  });

  it('the build records whether it made the addon', function () {
    const info = path.join(root, 'build', 'Release', 'mpi', 'build-info.json');
    if (!fs.existsSync(info)) this.skip();
    const { built, reason } = JSON.parse(fs.readFileSync(info, 'utf8'));
    assert.strictEqual(built, fs.existsSync(path.join(path.dirname(info), 'negative_cache_mpi.node')));
    if (!built) assert.ok(typeof reason === 'string' && reason.length > 0);
  });

  it('rejects bad options before loading anything', () => {
    assert.throws(() => nc.initDistributed({ timeoutMs: -5 }), (e) => e instanceof RangeError && /timeoutMs/.test(e.message));
    process.env.NEGATIVE_CACHE_MPI_TIMEOUT_MS = 'soon';
    try {
      assert.throws(() => nc.initDistributed(), (e) => e instanceof RangeError && e.message.includes('NEGATIVE_CACHE_MPI_TIMEOUT_MS'));
    } finally {
      delete process.env.NEGATIVE_CACHE_MPI_TIMEOUT_MS;
    }
  });
});

const skipWhy = !onPath('mpirun') ? 'mpirun is not on PATH (apt-get install openmpi-bin libopenmpi-dev)'
  : !fs.existsSync(mpiAddonPath()) ? `the MPI addon is not built (${mpiAddonPath()} is missing)` : null;

if (skipWhy && process.env.NEGATIVE_CACHE_REQUIRE_MPI === '1') {
  describe('distributed: under MPI', () => {
    it('is required here (NEGATIVE_CACHE_REQUIRE_MPI=1)', () => assert.fail(`cannot run the MPI tests: ${skipWhy}`));
  });
} else if (skipWhy) {
  describe('distributed: under MPI', () => {
    it.skip(`skipped: ${skipWhy}`);
  });
} else {
  describe('distributed: under MPI', function () {
    this.timeout(60000);

    for (const np of [2, 3]) {
      it(`collectives, allReduceMean and broadcastVariables are exact under mpirun -np ${np}`, async () => {
        const r = await mpirun(np, 'collectives');
        assertAllOk(r, np);
        assert.ok(r.results.every((x) => x.threadLevel === 'MPI_THREAD_MULTIPLE'), r.out);
      });
    }

    it('data-parallel SGD (examples/distributed/linear.js, -np 2) equals one process on the global batch', async () => {
      const r = await run(['mpirun', '--allow-run-as-root', '--oversubscribe', '-np', '2', process.execPath,
        path.join(root, 'examples', 'distributed', 'linear.js'), '--check']);
      assert.strictEqual(r.code, 0, r.out);
      assert.deepStrictEqual(r.results.map((x) => x.rank).sort(), [0, 1], r.out);
      for (const x of r.results) {
        assert.strictEqual(x.sameOnAllRanks, true);
        assert.ok(x.maxDiffFromOneProcess <= 1e-5, `differs from one process by ${x.maxDiffFromOneProcess}`);
        [1, -2, 0.5, 3].forEach((want, i) => assert.ok(Math.abs(x.w[i] - want) < 1e-3, `w[${i}] = ${x.w[i]}`));
      }
    });

    // DistributedCacheClassificationLoss (test/mpi/sharded.js): rank 0 recomputes every step in one process over the
    // concatenated shards and batches and compares query by query, and the refreshed rows.
    const sharded = (np, scenario, cfg) => run(['mpirun', '--allow-run-as-root', '--oversubscribe', '-np', String(np), process.execPath,
      path.join(__dirname, 'mpi', 'sharded.js'), scenario, JSON.stringify(cfg)]);
    const shardedCases = [
      [2, {}], [3, { numNegatives: 3, sources: 2 }], [2, { topK: 7, numNegatives: 2 }], [3, { topK: 5, sources: 2, transform: 'function' }],
      [3, { transform: 'function', numNegatives: 2, scoreEmptyRows: true }], [2, { retrieval: 'max', numNegatives: 2, sources: 2 }],
      [3, { backend: 'native', numNegatives: 2, sources: 2 }], [2, { backend: 'native', topK: 6 }],
    ];
    for (const [np, cfg] of shardedCases) {
      it(`the sharded loss equals one process over the concatenation (-np ${np}, ${JSON.stringify(cfg)})`, async () => {
        const r = await sharded(np, 'exact', cfg);
        assertAllOk(r, np);
        const r0 = r.results.find((x) => x.rank === 0);
        assert.ok(r0.compared >= 3 * 3 * 9, r.out);
        assert.ok(r0.refreshedRows > 0, r.out);
      });
    }

    it('CacheLossHandler with the sharded loss trains data-parallel and refreshes across ranks (-np 2)', async () => {
      const r = await sharded(2, 'handler', { backend: 'native', numNegatives: 2 });
      assertAllOk(r, 2);
      assert.ok(r.results.every((x) => x.totalRefreshed > 0 && x.gradNorm > 0), r.out);
    });

    it('the sharded loss: mismatched configurations and one rank\'s errors fail every rank coherently (-np 3)', async () => {
      const r = await sharded(3, 'mismatch', {});
      assertAllOk(r, 3);
      for (const x of r.results) {
        assert.ok(x.seed.includes('field "seed": ranks 0, 1: 1234567, rank 2: 99'), x.seed);
        assert.ok(x.numNegatives.includes('field "numNegatives": ranks 0, 2: 1, rank 1: 2'), x.numNegatives);
        assert.ok(x.dim.includes('dimension: 8, 9, 8'), x.dim);
      }
    });

    it('the sharded loss: a rank that exits makes the others fail with ERR_DISTRIBUTED_PEER_EXIT (-np 3)', async () => {
      const r = await sharded(3, 'die', {});
      assert.ok(!r.killed, `mpirun did not end by itself:\n${r.out}`);
      assert.notStrictEqual(r.code, 0, r.out);
      assert.deepStrictEqual(r.results.map((x) => x.rank).sort(), [0, 1], r.out);
      for (const x of r.results) assert.ok(x.ok && x.message.includes('rank 2 is exiting (exit code 3)'), x.message);
      assert.ok(r.ms < 20000, `took ${r.ms} ms`);
    });

    it('runs as a singleton without mpirun (rank 0 of 1)', async () => {
      const r = await singleton('collectives');
      assertAllOk(r, 1);
    });

    it('rejects bad arguments with TypeError/RangeError naming them, and stays usable', async () => {
      const r = await singleton('validation');
      assertAllOk(r, 1);
      assert.ok(r.results[0].checked >= 20);
    });

    it('detects mismatched configurations and collectives on every rank (-np 3)', async () => {
      const r = await mpirun(3, 'mismatch');
      assertAllOk(r, 3);
      for (const x of r.results) {
        assert.strictEqual(x.checkSame, `negative-cache: rank ${x.rank} of 3: "cache config" differs across ranks: field "seed": ranks 0, 1: 7, rank 2: 8`);
        assert.ok(x.allReduceMean.includes('field "w": ranks 0, 1: [3,2], rank 2: [2,3]'), x.allReduceMean);
      }
    });

    it('a rank that throws: the others fail with ERR_DISTRIBUTED_PEER_EXIT and the job ends (-np 3)', async () => {
      const r = await mpirun(3, 'throw');
      assert.ok(!r.killed, `mpirun did not end by itself:\n${r.out}`);
      assert.notStrictEqual(r.code, 0, r.out);
      assert.deepStrictEqual(r.results.map((x) => x.rank).sort(), [0, 1], r.out);
      for (const x of r.results) assert.ok(x.ok && x.message.includes('rank 2 is exiting (exit code 1: Error: boom on purpose)'), x.message);
      assert.ok(r.out.includes('Error: boom on purpose\n    at'), 'the thrower\'s stack is printed');
      assert.ok(r.ms < 20000, `took ${r.ms} ms, the collective deadline is 20000`);
    });

    it('a hung rank: the others time out naming it, and the job is aborted (-np 2, timeoutMs 2000)', async () => {
      const r = await mpirun(2, 'stuck', { env: { NEGATIVE_CACHE_MPI_TIMEOUT_MS: '2000' } });
      assert.ok(!r.killed, `mpirun did not end by itself:\n${r.out}`);
      assert.notStrictEqual(r.code, 0, r.out);
      assert.strictEqual(r.results.length, 1, r.out);
      const x = r.results[0];
      assert.strictEqual(x.rank, 0);
      assert.ok(x.message.includes('allReduceMean') && x.message.includes('timed out after 2000 ms: rank 1 did not reach'), x.message);
      assert.ok(x.waitedMs >= 1990 && x.waitedMs < 6000, `waited ${x.waitedMs} ms`);
      // The hung rank sleeps 30 s: ending well before means the job was aborted.
      assert.ok(r.ms < 20000, `took ${r.ms} ms`);
      assert.ok(r.out.includes('aborting the MPI job'), r.out);
    });

    it('a killed rank (SIGKILL): mpirun ends the job in bounded time (-np 3)', async () => {
      const r = await mpirun(3, 'kill');
      assert.ok(!r.killed, `mpirun did not end by itself:\n${r.out}`);
      assert.notStrictEqual(r.code, 0, r.out);
      assert.deepStrictEqual(r.results, [], r.out);  // no collective completed without the killed rank
      assert.ok(/rank 2 .*signal 9/.test(r.out), r.out);
      assert.ok(r.ms < 20000, `took ${r.ms} ms, the collective deadline is 20000`);
    });
  });
}
