// Builds the dashboard into dist/: one content-hashed script and stylesheet (immutable once served), index.html
// pointing at them by absolute /dashboard/ paths, and the icon. imgpipe embeds dist/ at its own build
// (cmake/EmbedAssets.cmake) and serves it at /dashboard; nothing is loaded from anywhere else.
import * as esbuild from 'esbuild';
import { copyFile, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const here = dirname(fileURLToPath(import.meta.url));
const dist = join(here, 'dist');
const base = '/dashboard/';

await rm(dist, { recursive: true, force: true });
await mkdir(dist, { recursive: true });

const result = await esbuild.build({
  absWorkingDir: here,
  entryPoints: { app: 'src/main.ts' },
  bundle: true,
  minify: true,
  format: 'iife',
  target: ['es2020', 'chrome100', 'firefox100', 'safari15'],
  outdir: dist,
  entryNames: '[name]-[hash]',
  metafile: true,
  logLevel: 'warning',
});

let js = null;
let css = null;
for (const [file, output] of Object.entries(result.metafile.outputs)) {
  if (output.entryPoint === 'src/main.ts') {
    js = basename(file);
    if (output.cssBundle) css = basename(output.cssBundle);
  }
}
if (!js || !css) throw new Error(`esbuild produced no app script or stylesheet: ${Object.keys(result.metafile.outputs)}`);

const template = await readFile(join(here, 'src/index.html'), 'utf8');
const html = template.replaceAll('{{APP_JS}}', base + js).replaceAll('{{APP_CSS}}', base + css);
if (html.includes('{{')) throw new Error('src/index.html has a placeholder the build does not know');
await writeFile(join(dist, 'index.html'), html);
await copyFile(join(here, 'src/favicon.svg'), join(dist, 'favicon.svg'));
console.log(`dashboard: built dist/ (${js}, ${css})`);
