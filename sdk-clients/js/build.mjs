// Builds dist/: one minified IIFE for <script> tags (global `SluiceAnalytics`), an ES module for
// browser bundlers and one for Node. Prints the browser file's size, raw and gzipped.
import { build } from 'esbuild';
import { readFileSync } from 'node:fs';
import { gzipSync } from 'node:zlib';

const common = { bundle: true, logLevel: 'warning', legalComments: 'none' };
await Promise.all([
  build({ ...common, entryPoints: ['src/browser.js'], outfile: 'dist/sluice-analytics.min.js', format: 'iife', globalName: 'SluiceAnalytics', minify: true, target: 'es2018', platform: 'browser' }),
  build({ ...common, entryPoints: ['src/browser.js'], outfile: 'dist/browser.mjs', format: 'esm', target: 'es2018', platform: 'browser' }),
  build({ ...common, entryPoints: ['src/node.js'], outfile: 'dist/node.mjs', format: 'esm', target: 'node18', platform: 'node' }),
]);
const min = readFileSync('dist/sluice-analytics.min.js');
console.log(`dist/sluice-analytics.min.js: ${min.length} bytes, ${gzipSync(min, { level: 9 }).length} gzipped`);
