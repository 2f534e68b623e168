'use strict';
// Command line: options, --help, and progress bars on stderr (plain lines
// when stderr is not a terminal).

const MODES = ['in-batch', 'in-batch-time', 'in-batch-4x', 'cache', 'reference'];
const DEFAULT_MODES = ['cache', 'in-batch', 'in-batch-time', 'in-batch-4x'];

const OPTIONS = [
  // name, type, default, help
  ['steps', 'int', 1200, 'training steps of the cache mode after its warm-up (in-batch at equal steps gets warmup+steps; the reference runs warmup+steps from scratch)'],
  ['warmup', 'int', 0, 'in-batch warm-up steps of the cache mode, shared with in-batch and in-batch-time (the cache is filled meanwhile); 0 = none'],
  ['batch', 'int', 64, 'batch size (queries and positive lemmas per step)'],
  ['cache-size', 'int', 4096, 'negative cache rows'],
  ['k', 'int', 1, 'negatives drawn per query by the cache mode (per-query: numNegatives, 0 = no sampled cache loss; shared: draws per query)'],
  ['scale', 'float', 20, 'score scale: logits = scale * cosine'],
  ['inv-temp', 'float', 1, 'inverse temperature of the cache draws (Gumbel-max)'],
  ['in-batch-weight', 'float', 0, 'cache recipe: weight of the in-batch cross-entropy added to the cache loss'],
  ['negatives', 'enum:per-query,shared', 'shared', 'cache mode: per-query = the library handler (k draws per query, CacheClassificationLoss); shared = every query scored against all B·k drawn rows re-embedded fresh plus the in-batch positives'],
  ['shared-max', 'int', 0, 'shared cache mode: re-embed at most this many distinct drawn rows per step, the hardest (highest score of any query that drew them); 0 = all'],
  ['detach-negatives', 'flag', false, 'shared cache mode: the re-embedded negatives give no gradient to the document tower (forward only; the query tower still learns from them)'],
  ['full-cache-weight', 'float', 0, 'cache mode: weight of the query-side log-sum-exp over the whole cache (0 = off)'],
  ['clock', 'enum:wall,cpu', 'cpu', 'clock of the timing phase and the time columns: wall, or this process\'s CPU time (steadier on a loaded machine)'],
  ['full-cache-when', 'enum:before,after', 'after', 'full-cache term on the cache before or after the step\'s cache update (refresh + insert)'],
  ['checkpoints', 'ints', '', 'in-batch: also evaluate after these step counts (e.g. 1500,3000; for recall curves)'],
  ['checkpoints4x', 'ints', '', 'in-batch-4x: also evaluate after these step counts'],
  ['timing-rounds', 'int', 8, 'rounds of the interleaved timing phase (per-step costs for equal wall time)'],
  ['dedupe', 'flag', false, 'cache recipe: store each lemma once (IsInCacheFilterFn on the ids)'],
  ['remove-accidental-hits', 'flag', false, 'per-query cache mode: leave cached copies of a query\'s own lemma out of its candidates (handler option removeAccidentalHits)'],
  ['lr', 'float', 0.003, 'Adam learning rate'],
  ['backend', 'enum:cpu,wasm', 'wasm', 'tfjs backend'],
  ['cache-backend', 'enum:auto,native,js', 'auto', 'negative-cache backend (cache, score kernels, evaluation)'],
  ['modes', 'list', DEFAULT_MODES.join(','), `comma-separated modes: ${MODES.join(', ')}`],
  ['buckets', 'int', 32768, 'hashed feature ids (embedding rows)'],
  ['dim', 'int', 64, 'embedding and output width'],
  ['synsets', 'int', 0, 'use only the first N synsets (0 = all; for smoke tests)'],
  ['eval-queries', 'int', 2000, 'evaluate on at most N queries of each test set (0 = all: 6,022 glosses, 2,472 usage examples)'],
  ['seed', 'int', 1, 'seed of the model, the batches and the cache draws'],
  ['out', 'string', 'demo-out', 'output folder (report.html, results.json, curves.json)'],
  ['json', 'flag', false, 'print one JSON object per mode on stdout at the end'],
  ['help', 'flag', false, 'this help'],
];

function helpText() {
  const lines = [
    'Usage: npm run demo -- [options]',
    '',
    'Trains a two-tower retrieval model on WordNet 3.1 (glosses -> lemmas) with',
    'in-batch negatives, the reference negative cache, and the recommended cache',
    'recipe (in-batch warm-up, then hard negatives from the cache), and reports',
    'held-out recall@1/10/100.',
    '',
    'Options:',
  ];
  for (const [name, type, def, help] of OPTIONS) {
    const arg = type === 'flag' ? '' : type.startsWith('enum:') ? ` <${type.slice(5).replace(/,/g, '|')}>` : ` <${type}>`;
    const d = type === 'flag' ? '' : ` (default ${def})`;
    lines.push(`  --${name}${arg}`.padEnd(34) + help + d);
  }
  return lines.join('\n');
}

function parseArgs(argv) {
  const out = {};
  for (const [name, , def] of OPTIONS) out[camel(name)] = def;
  for (let i = 0; i < argv.length; i++) {
    let arg = argv[i];
    if (!arg.startsWith('--')) throw new Error(`unexpected argument ${JSON.stringify(arg)} (see --help)`);
    arg = arg.slice(2);
    let value;
    const eq = arg.indexOf('=');
    if (eq >= 0) { value = arg.slice(eq + 1); arg = arg.slice(0, eq); }
    const opt = OPTIONS.find((o) => o[0] === arg);
    if (!opt) throw new Error(`unknown option --${arg} (see --help)`);
    const [name, type] = opt;
    if (type === 'flag') { out[camel(name)] = true; continue; }
    if (value === undefined) {
      if (i + 1 >= argv.length) throw new Error(`--${name} needs a value`);
      value = argv[++i];
    }
    out[camel(name)] = convert(name, type, value);
  }
  if (typeof out.modes === 'string') out.modes = convert('modes', 'list', out.modes);
  for (const k of ['checkpoints', 'checkpoints4x']) if (typeof out[k] === 'string') out[k] = out[k] === '' ? [] : convert(k, 'ints', out[k]);
  return out;
}

function convert(name, type, value) {
  if (type === 'int') {
    const v = Number(value);
    if (!Number.isInteger(v) || v < 0) throw new Error(`--${name} must be a non-negative integer; got ${value}`);
    return v;
  }
  if (type === 'float') {
    const v = Number(value);
    if (!Number.isFinite(v) || v < 0) throw new Error(`--${name} must be a non-negative number; got ${value}`);
    return v;
  }
  if (type.startsWith('enum:')) {
    const allowed = type.slice(5).split(',');
    if (!allowed.includes(value)) throw new Error(`--${name} must be one of ${allowed.join(', ')}; got ${value}`);
    return value;
  }
  if (type === 'ints') {
    const list = value.split(',').map((x) => x.trim()).filter(Boolean).map(Number);
    for (const v of list) if (!Number.isInteger(v) || v <= 0) throw new Error(`--${name} must be a comma-separated list of positive integers; got ${value}`);
    return list;
  }
  if (type === 'list') {
    const list = value.split(',').map((s) => s.trim()).filter(Boolean);
    for (const m of list) if (!MODES.includes(m)) throw new Error(`--modes: unknown mode ${m} (known: ${MODES.join(', ')})`);
    return list;
  }
  return value;
}

function camel(name) { return name.replace(/-([a-z])/g, (_, c) => c.toUpperCase()); }

/**
 * A progress bar on stderr: redrawn in place on a terminal (at most ~10 times
 * a second), otherwise a plain line at start, every 25% and at the end.
 */
class Progress {
  constructor(label, total, stream = process.stderr) {
    this.label = label;
    this.total = Math.max(total, 1);
    this.stream = stream;
    this.tty = !!stream.isTTY;
    this.start = Date.now();
    this.lastDraw = 0;
    this.lastQuarter = -1;
    this.extra = '';
    this.update(0);
  }

  update(done, extra) {
    if (extra !== undefined) this.extra = extra;
    const frac = Math.min(done / this.total, 1);
    const secs = (Date.now() - this.start) / 1000;
    if (this.tty) {
      const now = Date.now();
      if (now - this.lastDraw < 100 && done < this.total) return;
      this.lastDraw = now;
      const width = 28;
      const fill = Math.round(frac * width);
      const bar = '█'.repeat(fill) + '░'.repeat(width - fill);
      this.stream.write(`\r${this.label.padEnd(22)} ${bar} ${String(Math.round(frac * 100)).padStart(3)}% ${done}/${this.total} ${secs.toFixed(1)}s ${this.extra}\x1b[K`);
    } else {
      const quarter = Math.floor(frac * 4);
      if (quarter === this.lastQuarter) return;
      this.lastQuarter = quarter;
      this.stream.write(`${this.label}: ${done}/${this.total} (${Math.round(frac * 100)}%) ${secs.toFixed(1)}s ${this.extra}\n`);
    }
  }

  done(extra) {
    this.update(this.total, extra);
    if (this.tty) this.stream.write('\n');
  }
}

module.exports = { parseArgs, helpText, Progress, MODES };
