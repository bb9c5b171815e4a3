// The dashboard in a real browser: Debian's chromium (never a downloaded one) driven by playwright-core, against a
// real `imgpipe serve` seeded with uploads from the image corpora. Screenshots go to build/browser-artifacts/.
import assert from 'node:assert/strict';
import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { chromium } from 'playwright-core';
import { artifactsDir, corporaDir, Server } from './imgpipe.mjs';

const chromiumBin = process.env.CHROMIUM_BIN ?? '/usr/bin/chromium';

// Uploaded before the browser starts. Formats: png (4), jpeg (3, two with GPS), webp, gif.
const seedFiles = [
  'valid/kodak/kodim01.png',
  'valid/kodak/kodim02.png',
  'valid/pngsuite/basi0g08.png',
  'valid/pngsuite/basn2c08.png',
  'exif/metadata-extractor-images/jpg/HTC Desire.jpg',
  'exif/metadata-extractor-images/jpg/Nikon D5000.jpg',
  'exif/exif-orientation-examples/Landscape_6.jpg',
  'valid/libwebp-examples/test.webp',
  'valid/metadata-extractor-images/gif/mspaint-10x10.gif',
];
const droppedFile = 'valid/kodak/kodim03.png';
const uiTimeout = 60_000;

/** RFC 4180 CSV (quotes, doubled quotes, CRLF) into rows of strings. */
function parseCsv(text) {
  const rows = [];
  let row = [];
  let cell = '';
  let quoted = false;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (quoted) {
      if (c === '"' && text[i + 1] === '"') { cell += '"'; i++; } else if (c === '"') quoted = false; else cell += c;
    } else if (c === '"') quoted = true;
    else if (c === ',') { row.push(cell); cell = ''; }
    else if (c === '\n') { row.push(cell.replace(/\r$/, '')); rows.push(row); row = []; cell = ''; }
    else cell += c;
  }
  if (cell || row.length) { row.push(cell); rows.push(row); }
  return rows;
}

function countBy(items, key) {
  const m = new Map();
  for (const it of items) m.set(it[key], (m.get(it[key]) ?? 0) + 1);
  return m;
}

describe('dashboard', { timeout: 600_000 }, () => {
  let server;
  let context;
  let page;
  let seeded = [];       // settled image JSON of every seed upload
  let userDataDir;
  const consoleErrors = [];

  async function shot(name) {
    await page.screenshot({ path: join(artifactsDir, `${name}.png`), fullPage: true });
  }

  async function signIn(key) {
    await page.getByTestId('signin-key').fill(key);
    await page.getByTestId('signin-submit').click();
  }

  async function waitDownload(action) {
    const [download] = await Promise.all([page.waitForEvent('download', { timeout: uiTimeout }), action()]);
    const path = join(userDataDir, `dl-${Date.now()}-${download.suggestedFilename()}`);
    await download.saveAs(path);
    return { name: download.suggestedFilename(), text: readFileSync(path, 'utf8') };
  }

  before(async () => {
    mkdirSync(artifactsDir, { recursive: true });
    server = await Server.start({ logFile: join(artifactsDir, 'serve.log') });
    const accepted = [];
    for (const f of seedFiles) accepted.push(await server.upload(f));
    for (const a of accepted) seeded.push({ ...(await server.settle(a.id)), file: a.file });

    userDataDir = mkdtempSync(join(tmpdir(), 'imgpipe-chromium-'));
    context = await chromium.launchPersistentContext(join(userDataDir, 'profile'), {
      executablePath: chromiumBin,
      headless: true,
      args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
        '--disable-background-networking', '--disable-component-update', '--disable-sync'],
      viewport: { width: 1440, height: 900 },
      acceptDownloads: true,
    });
    page = context.pages()[0] ?? await context.newPage();
    page.setDefaultTimeout(uiTimeout);
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
    page.on('pageerror', (e) => consoleErrors.push(String(e)));
  });

  after(async () => {
    await context?.close();
    if (userDataDir) rmSync(userDataDir, { recursive: true, force: true });
    if (server) {
      const code = await server.stop();
      assert.equal(code, 0, `imgpipe serve exited ${code} after SIGTERM:\n${server.tail()}`);
    }
  });

  it('serves the app with its security and cache headers, without a key', async () => {
    const res = await fetch(`${server.base}/dashboard`);
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type'), /^text\/html/);
    const csp = res.headers.get('content-security-policy');
    assert.match(csp, /default-src 'self'/);
    assert.match(csp, /frame-ancestors 'none'/);
    assert.equal(res.headers.get('x-content-type-options'), 'nosniff');
    assert.equal(res.headers.get('referrer-policy'), 'no-referrer');
    const html = await res.text();
    const script = /src="(\/dashboard\/app-[A-Z0-9]{8}\.js)"/.exec(html);
    assert.ok(script, `index.html names no hashed script:\n${html}`);
    const js = await fetch(server.base + script[1]);
    assert.equal(js.status, 200);
    assert.match(js.headers.get('content-type'), /^text\/javascript/);
    assert.match(js.headers.get('cache-control'), /immutable/);
    const again = await fetch(server.base + script[1], { headers: { 'If-None-Match': js.headers.get('etag') } });
    assert.equal(again.status, 304);
    const missing = await fetch(`${server.base}/dashboard/no-such-file.js`);
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).error.code, 'not_found');
    // The API itself still needs the key.
    assert.equal((await fetch(`${server.base}/v1/images`)).status, 401);
  });

  it('refuses a wrong key and signs in with the admin key', async () => {
    await page.goto(`${server.base}/dashboard`);
    await signIn('imgp_' + 'x'.repeat(43));
    await page.getByTestId('signin-message').getByText('not accepted').waitFor();
    await shot('01-signin-refused');
    await signIn(server.adminKey);
    await page.getByTestId('role').getByText('admin').waitFor();
    assert.equal(await page.evaluate(() => Object.keys(localStorage).length), 0, 'the key must not reach localStorage');
    assert.equal(await page.evaluate(() => sessionStorage.getItem('imgpipe.dashboard.key')), server.adminKey);
  });

  it('shows the seeded counts on the overview, and exports a panel as CSV', async () => {
    await page.getByTestId('nav-overview').click();
    const processed = seeded.filter((i) => i.status === 'processed').length;
    const failed = seeded.filter((i) => i.status === 'failed').length;
    await page.getByTestId('kpi-images-value').getByText(String(seeded.length), { exact: true }).waitFor();
    assert.equal(await page.getByTestId('kpi-processed-value').textContent(), String(processed));
    assert.equal(await page.getByTestId('kpi-failed-value').textContent(), String(failed));
    assert.equal(await page.getByTestId('kpi-in-progress-value').textContent(), '0');
    assert.notEqual(await page.getByTestId('kpi-p95-value').textContent(), '–', 'p95 latency of the seeded runs');
    const bySource = page.getByTestId('ingest-by-source').locator('tbody tr');
    assert.equal(await bySource.count(), 1);
    assert.equal(await bySource.locator('td').nth(0).textContent(), 'upload');
    assert.equal(await bySource.locator('td').nth(1).textContent(), String(seeded.length));
    // Every chart drew on its canvas.
    for (const panel of ['panel-ingest', 'panel-outcome', 'panel-latency', 'panel-expirations']) {
      const drawn = await page.getByTestId(panel).locator('canvas').evaluate((c) => c.width > 0 && c.height > 0);
      assert.ok(drawn, `${panel} has no drawn chart`);
    }
    const expiring = await page.getByTestId('expirations-table').locator('tbody td.num').first().textContent();
    assert.equal(Number(expiring), seeded.length, 'all seeded images expire on the same day (7-day retention)');
    await shot('02-overview-24h');

    await page.getByTestId('range-7d').click();
    await page.getByTestId('range-text').getByText('per hour').waitFor();
    await page.getByTestId('kpi-images-value').getByText(String(seeded.length), { exact: true }).waitFor();
    await page.getByTestId('range-30d').click();
    await page.getByTestId('range-text').getByText('per day').waitFor();
    await page.getByTestId('kpi-images-value').getByText(String(seeded.length), { exact: true }).waitFor();
    const csv = await waitDownload(() => page.getByTestId('panel-ingest-csv').click());
    assert.match(csv.name, /^imgpipe-ingest-per-day-.*\.csv$/);
    const rows = parseCsv(csv.text);
    assert.deepEqual(rows[0], ['day', 'source', 'images', 'bytes']);
    assert.equal(rows.length, 2, csv.text);
    assert.equal(rows[1][1], 'upload');
    assert.equal(Number(rows[1][2]), seeded.length);
    assert.equal(Number(rows[1][3]), seeded.reduce((a, i) => a + i.bytes, 0));

    // A custom range that ends before the uploads holds none of them.
    await page.getByTestId('range-custom').click();
    await page.getByTestId('range-from').fill('2020-01-01T00:00');
    await page.getByTestId('range-to').fill('2020-01-02T00:00');
    await page.getByTestId('range-apply').click();
    await page.getByTestId('kpi-images-value').getByText('0', { exact: true }).waitFor();
    await page.getByTestId('range-24h').click();
    await page.getByTestId('kpi-images-value').getByText(String(seeded.length), { exact: true }).waitFor();
  });

  it('tells a key without query rights why there is no overview', async () => {
    const uploader = await server.json('POST', '/v1/keys', { body: JSON.stringify({ role: 'uploader',
      name: 'browser-test' }), headers: { 'Content-Type': 'application/json' } });
    await page.getByTestId('signout').click();
    await page.getByTestId('signin-form').waitFor();
    assert.equal(await page.evaluate(() => sessionStorage.getItem('imgpipe.dashboard.key')), null);
    await signIn(uploader.key);
    await page.getByTestId('role').getByText('uploader').waitFor();
    await page.getByTestId('nav-overview').click();
    await page.getByText('The overview needs an admin or analyst key').waitFor();
    await page.getByTestId('nav-sql').click();
    await page.getByText('The SQL console needs an admin or analyst key').waitFor();
    await shot('03-uploader-no-overview');
    await page.getByTestId('signout').click();
    await signIn(server.adminKey);
    await page.getByTestId('role').getByText('admin').waitFor();
  });

  it('filters the thumbnail grid and opens a detail view', async () => {
    await page.getByTestId('nav-images').click();
    const cards = page.getByTestId('image-card');
    await page.getByTestId('grid-count').getByText(`${seeded.length} shown`).waitFor();
    assert.equal(await cards.count(), seeded.length);
    // Thumbnails come through blob: URLs fetched with the key.
    await page.waitForFunction(() => [...document.querySelectorAll('[data-testid=image-card] img')]
      .filter((img) => img.complete && img.naturalWidth > 0 && img.src.startsWith('blob:')).length >= 3);
    await shot('04-images-grid');

    const byFormat = countBy(seeded, 'format');
    await page.getByTestId('filter-format').selectOption('png');
    await page.getByTestId('grid-count').getByText(`${byFormat.get('png')} shown (format png)`).waitFor();
    assert.deepEqual(new Set(await cards.evaluateAll((els) => els.map((e) => e.dataset.format))), new Set(['png']));
    await page.getByTestId('filter-format').selectOption('jpeg');
    await page.getByTestId('grid-count').getByText(`${byFormat.get('jpeg')} shown (format jpeg)`).waitFor();
    await shot('05-images-filtered-jpeg');
    await page.getByTestId('filter-format').selectOption('');

    // Server-side filters: status (all processed), then a source nobody uses.
    await page.getByTestId('filter-status').selectOption('processed');
    const processed = seeded.filter((i) => i.status === 'processed').length;
    await page.getByTestId('grid-count').getByText(`${processed} shown of ${processed} loaded`).waitFor();
    await page.getByTestId('filter-status').selectOption('queued');
    await page.getByText('No images match these filters.').waitFor();
    await page.getByTestId('filter-status').selectOption('');
    await page.getByTestId('filter-source').fill('kafka-nobody');
    await page.getByTestId('filter-source').press('Enter');
    await page.getByText('No images match these filters.').waitFor();
    await page.getByTestId('filter-source').fill('');
    await page.getByTestId('filter-source').press('Enter');
    await page.getByTestId('grid-count').getByText(`${seeded.length} shown`).waitFor();

    // The detail of an image with GPS.
    const gpsImage = seeded.find((i) => i.exif.gps);
    assert.ok(gpsImage, 'a seed image with GPS');
    await page.locator(`[data-testid=image-card][data-id="${gpsImage.id}"]`).click();
    const detail = page.getByTestId('image-detail');
    await detail.getByTestId('detail-status').getByText('processed').waitFor();
    const gpsText = await detail.getByTestId('detail-gps').textContent();
    assert.ok(gpsText.includes(gpsImage.exif.gps.lat.toFixed(6)), `GPS latitude shown: ${gpsText}`);
    assert.ok(gpsText.includes(gpsImage.exif.gps.lon.toFixed(6)), `GPS longitude shown: ${gpsText}`);
    assert.equal(await detail.locator('.gps-plot circle').count(), 1);
    const exifText = await detail.getByTestId('detail-exif').textContent();
    assert.ok(exifText.includes(gpsImage.exif.make), `EXIF make shown: ${exifText}`);
    const renditions = await detail.getByTestId('detail-renditions').locator('tbody tr td:first-child').allTextContents();
    assert.deepEqual(renditions.sort(), gpsImage.renditions.map((r) => r.name).sort());
    const runs = detail.getByTestId('detail-runs').locator('tbody tr');
    await runs.first().waitFor();
    assert.equal(await runs.count(), 1);
    assert.ok((await runs.first().textContent()).includes('processed'));
    await page.waitForFunction(() => {
      const img = document.querySelector('.preview img');
      return img && img.complete && img.naturalWidth > 0;
    });
    await shot('06-image-detail');
  });

  it('uploads a dropped file with progress and follows it until processed', async () => {
    await page.getByTestId('nav-upload').click();
    const bytes = readFileSync(join(corporaDir, droppedFile));
    const dataTransfer = await page.evaluateHandle(({ b64, name }) => {
      const raw = atob(b64);
      const buf = new Uint8Array(raw.length);
      for (let i = 0; i < raw.length; i++) buf[i] = raw.charCodeAt(i);
      const dt = new DataTransfer();
      dt.items.add(new File([buf], name, { type: 'image/png' }));
      return dt;
    }, { b64: bytes.toString('base64'), name: 'dropped-kodim03.png' });
    const zone = page.getByTestId('dropzone');
    await zone.dispatchEvent('dragenter', { dataTransfer });
    await zone.dispatchEvent('dragover', { dataTransfer });
    await zone.dispatchEvent('drop', { dataTransfer });
    const row = page.locator('[data-testid=upload-row][data-name="dropped-kodim03.png"]');
    await row.waitFor();
    await page.locator('[data-testid=upload-row][data-name="dropped-kodim03.png"][data-state="processed"]')
      .waitFor({ timeout: 120_000 });
    assert.equal(await row.getByTestId('upload-status').textContent(), 'processed');
    const id = await row.locator('a').textContent();
    const image = await server.json('GET', `/v1/images/${id}`);
    assert.equal(image.status, 'processed');
    assert.equal(image.bytes, bytes.length);
    assert.equal(image.metadata.filename, 'dropped-kodim03.png');
    await shot('07-upload-processed');

    // A file that is not an image is refused, with the server's reason on its row.
    const junk = await page.evaluateHandle(() => {
      const dt = new DataTransfer();
      dt.items.add(new File(['just some text'], 'notes.txt', { type: 'text/plain' }));
      return dt;
    });
    await zone.dispatchEvent('drop', { dataTransfer: junk });
    const refused = page.locator('[data-testid=upload-row][data-name="notes.txt"][data-state="refused"]');
    await refused.waitFor();
    assert.match(await refused.getByTestId('upload-status').textContent(), /refused \(4\d\d /);
    await shot('08-upload-refused');
  });

  it('runs SQL, charts it and downloads its CSV; every view exports as CSV', async () => {
    await page.getByTestId('nav-sql').click();
    const sql = 'SELECT format, count(*) AS images, sum(bytes) AS bytes FROM images GROUP BY format ORDER BY format';
    await page.getByTestId('sql-input').fill(sql);
    await page.getByTestId('sql-run').click();
    const table = page.getByTestId('sql-result');
    await table.waitFor();
    const expected = await server.query(sql);
    const shown = await table.locator('tbody tr').evaluateAll((trs) =>
      trs.map((tr) => [...tr.querySelectorAll('td')].map((td) => td.textContent)));
    assert.deepEqual(shown, expected.rows.map((r) => r.map(String)));
    assert.ok(expected.rows.some((r) => r[0] === 'png'), 'the dropped PNG is counted too');
    await page.getByTestId('chart-y').selectOption('images');
    assert.ok(await page.getByTestId('sql-chart').evaluate((c) => c.width > 0 && c.height > 0));
    await page.getByTestId('view-list').getByTestId('view-row').first().waitFor();
    await shot('09-sql-console');

    const csv = await waitDownload(() => page.getByTestId('sql-csv').click());
    assert.match(csv.name, /^imgpipe-query-.*\.csv$/);
    const rows = parseCsv(csv.text);
    assert.deepEqual(rows[0], ['format', 'images', 'bytes']);
    assert.deepEqual(rows.slice(1), expected.rows.map((r) => r.map(String)));

    const views = await page.getByTestId('view-row').evaluateAll((els) => els.map((e) => e.dataset.view));
    assert.ok(views.includes('daily_ingest'), `views listed: ${views}`);
    const view = await waitDownload(() =>
      page.locator('[data-testid=view-row][data-view="daily_ingest"]').getByTestId('view-csv').click());
    const viewRows = parseCsv(view.text);
    assert.deepEqual(viewRows[0], ['day', 'source', 'images', 'bytes']);
    assert.equal(viewRows.slice(1).reduce((a, r) => a + Number(r[2]), 0), seeded.length + 1);

    // A query the database refuses shows its message.
    await page.getByTestId('sql-input').fill('DELETE FROM images');
    await page.getByTestId('sql-run').click();
    await page.locator('.notice-error').waitFor();
    assert.equal(await server.query('SELECT count(*) AS n FROM images').then((r) => r.rows[0][0]), seeded.length + 1);
  });

  it('logged no browser errors', () => {
    // 4xx answers the tests provoke on purpose (wrong key, role probes, a refused upload and query) show up as failed
    // resource loads; anything else (a 5xx, a script error, a CSP violation) is a defect.
    const unexpected = consoleErrors.filter((e) => !/Failed to load resource: .*status of 4\d\d/.test(e));
    assert.deepEqual(unexpected, []);
  });
});
