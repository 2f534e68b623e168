'use strict';
// Child process of test/80-checkpoint.test.js (the SIGKILL test): saves a
// cache to one path over and over, generation g writing g into every row
// (v = g + 0.5, g = g), and prints "saved g" after each save. The parent
// kills it at random moments and checks that the file always loads intact
// and holds one whole generation.
//
//   node saver.js <backend> <path> <rows> <width> [async]
const nc = require('../..');

const [backend, file, rowsArg, widthArg, mode] = process.argv.slice(2);
const rows = Number(rowsArg), width = Number(widthArg);
const manager = new nc.CacheManager({ v: { shape: [width], dtype: 'float32' }, g: { shape: [1], dtype: 'int32' } }, rows, { backend });
const cache = manager.initCache();
const indices = Int32Array.from({ length: rows }, (_, i) => i);
const v = new Float32Array(rows * width), g = new Int32Array(rows);

async function main() {
  for (let gen = 1; ; gen++) {
    v.fill(gen + 0.5);
    g.fill(gen);
    manager.updateCache(cache, { updatedItemData: { v, g }, updatedItemIndices: indices });
    if (mode === 'async') await cache.saveAsync(file);
    else cache.save(file);
    process.stdout.write(`saved ${gen}\n`);
  }
}
main().catch((e) => { console.error(e); process.exit(1); });
