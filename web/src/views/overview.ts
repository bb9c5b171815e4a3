// Overview: ingest, outcomes, latency, stored bytes and upcoming expirations over a time range, all computed with
// POST /v1/query. Every table has a CSV button that runs the same SQL with format csv.
import { QueryResult } from '../api';
import { drawChart, palette } from '../charts';
import { clear, dataTable, downloadBlob, formatBytes, formatNumber, formatSeconds, h } from '../dom';
import * as q from '../queries';
import { Session } from '../session';
import { errorNotice, fromLocalInput, needsAnalyst, num, records, toLocalInput } from './common';

type Preset = '24h' | '7d' | '30d' | 'custom';

interface Range {
  preset: Preset;
  from: Date;
  to: Date;
}

const presetHours: Record<Exclude<Preset, 'custom'>, number> = { '24h': 24, '7d': 24 * 7, '30d': 24 * 30 };

let current: { preset: Preset; customFrom?: Date; customTo?: Date } = { preset: '24h' };

function resolveRange(): Range {
  if (current.preset === 'custom' && current.customFrom && current.customTo) {
    // The panels count whole hours (the warehouse's hourly rollups): widen the range to them.
    const from = new Date(current.customFrom);
    from.setUTCMinutes(0, 0, 0);
    const to = new Date(current.customTo);
    if (to.getUTCMinutes() || to.getUTCSeconds() || to.getUTCMilliseconds()) {
      to.setUTCMinutes(60, 0, 0);
    }
    return { preset: 'custom', from, to };
  }
  const preset = current.preset === 'custom' ? '24h' : current.preset;
  // "to" a minute ahead, so an upload of the last second is in; buckets start at whole hours.
  const to = new Date(Date.now() + 60_000);
  const from = new Date(to.getTime() - presetHours[preset] * 3600_000);
  from.setUTCMinutes(0, 0, 0);
  return { preset, from, to };
}

/** Bucket keys from..to as the SQL makes them ("2026-01-10T12" or "2026-01-10"). */
function bucketKeys(r: Range, bucket: q.Bucket): string[] {
  const keys: string[] = [];
  const step = bucket === 'hour' ? 3600_000 : 86400_000;
  const t = new Date(r.from);
  if (bucket === 'hour') t.setUTCMinutes(0, 0, 0); else t.setUTCHours(0, 0, 0, 0);
  for (let ms = t.getTime(); ms < r.to.getTime() && keys.length < 2000; ms += step) {
    keys.push(new Date(ms).toISOString().slice(0, bucket === 'hour' ? 13 : 10));
  }
  return keys;
}

/** "2026-01-10 12" (PostgreSQL) and "2026-01-10T12" (SQLite) are the same bucket. */
function bucketKey(v: unknown): string {
  return String(v ?? '').replace(' ', 'T');
}

function bucketLabel(key: string, bucket: q.Bucket): string {
  return bucket === 'hour' ? `${key.slice(5, 10)} ${key.slice(11, 13)}:00` : key.slice(5, 10);
}

interface PanelOpts {
  title: string;
  testid: string;
  sql: string;
  params: unknown[];
  csvName: string;
  wide?: boolean;
}

/** A panel: title, CSV export of its SQL, and a body filled later. */
function panel(s: Session, o: PanelOpts): { el: HTMLElement; body: HTMLElement } {
  const body = h('div', { class: 'panel-body' });
  const status = h('span', { class: 'muted small' });
  const csv = h('button', {
    class: 'btn btn-small', type: 'button', title: 'Download this panel\'s data as CSV (Excel, Power BI)',
    'data-testid': `${o.testid}-csv`,
    onclick: async () => {
      status.textContent = 'exporting…';
      try {
        downloadBlob(await s.api.queryCsv(o.sql, o.params), o.csvName);
        status.textContent = '';
      } catch (e) {
        status.textContent = `export failed: ${(e as Error).message}`;
      }
    },
  }, 'CSV');
  const el = h('section', { class: `panel${o.wide ? ' panel-wide' : ''}`, 'data-testid': o.testid },
    h('header', { class: 'panel-head' }, h('h2', {}, o.title), h('div', { class: 'panel-tools' }, status, csv)),
    body);
  return { el, body };
}

function chartBox(): { box: HTMLElement; canvas: HTMLCanvasElement } {
  const canvas = h('canvas', {});
  return { box: h('div', { class: 'chart' }, canvas), canvas };
}

function tableDetails(summary: string, table: HTMLElement, open = false): HTMLElement {
  return h('details', { class: 'table-details', open }, h('summary', {}, summary), table);
}

function kpi(label: string, value: string, testid: string, sub?: string): HTMLElement {
  return h('div', { class: 'kpi', 'data-testid': testid },
    h('div', { class: 'kpi-label' }, label),
    h('div', { class: 'kpi-value', 'data-testid': `${testid}-value` }, value),
    sub ? h('div', { class: 'kpi-sub' }, sub) : null);
}

function stamp(d: Date): string {
  return d.toISOString().slice(0, 16).replace(/[-:]/g, '').replace('T', '-');
}

export function renderOverview(root: HTMLElement, s: Session): void {
  clear(root);
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'Overview')));
  if (!s.caps.query) {
    root.append(needsAnalyst(s, 'The overview'));
    return;
  }

  const rangeBar = h('div', { class: 'range-bar', 'data-testid': 'range-picker' });
  const content = h('div', { class: 'overview' });
  root.append(rangeBar, content);

  const customFrom = h('input', { type: 'datetime-local', 'aria-label': 'from (UTC)', 'data-testid': 'range-from' });
  const customTo = h('input', { type: 'datetime-local', 'aria-label': 'to (UTC)', 'data-testid': 'range-to' });
  const customBox = h('span', { class: 'custom-range' }, customFrom, h('span', { class: 'muted' }, 'to'), customTo,
    h('button', {
      class: 'btn btn-small', type: 'button', 'data-testid': 'range-apply',
      onclick: () => {
        const f = fromLocalInput(customFrom.value);
        const t = fromLocalInput(customTo.value);
        if (!f || !t || t <= f) {
          customBox.classList.add('invalid');
          return;
        }
        customBox.classList.remove('invalid');
        current = { preset: 'custom', customFrom: f, customTo: t };
        load();
      },
    }, 'Apply'), h('span', { class: 'muted small' }, 'UTC'));

  const buttons = (['24h', '7d', '30d', 'custom'] as Preset[]).map((p) => h('button', {
    class: 'seg', type: 'button', 'data-preset': p, 'data-testid': `range-${p}`,
    onclick: () => {
      if (p === 'custom') {
        const r = resolveRange();
        customFrom.value = toLocalInput(current.customFrom ?? r.from);
        customTo.value = toLocalInput(current.customTo ?? r.to);
        current = { ...current, preset: 'custom' };
        sync();
        return;
      }
      current = { ...current, preset: p };
      load();
    },
  }, p === 'custom' ? 'Custom' : `Last ${p.replace('h', ' h').replace('d', ' d')}`));
  const rangeText = h('span', { class: 'muted small range-text', 'data-testid': 'range-text' });
  const refresh = h('button', { class: 'btn btn-small', type: 'button', onclick: () => load() }, 'Refresh');
  rangeBar.append(h('div', { class: 'segmented' }, ...buttons), customBox, h('span', { class: 'spacer' }),
    rangeText, refresh);

  function sync(): void {
    for (const b of buttons) b.classList.toggle('active', b.dataset.preset === current.preset);
    customBox.hidden = current.preset !== 'custom';
  }

  let generation = 0;
  async function load(): Promise<void> {
    sync();
    if (current.preset === 'custom' && !(current.customFrom && current.customTo)) return;
    const gen = ++generation;
    const d = s.caps.dialect;
    const r = resolveRange();
    // Per hour up to the 7-day preset (which starts at a whole hour, so spans up to 7 d 1 h), per day beyond.
    const bucket: q.Bucket = r.to.getTime() - r.from.getTime() <= 8 * 86400_000 ? 'hour' : 'day';
    const params = [r.from.toISOString(), r.to.toISOString()];
    const now = [new Date().toISOString()];
    const name = (what: string) => `imgpipe-${what}-${stamp(r.from)}-${stamp(r.to)}.csv`;
    rangeText.textContent = `${r.from.toISOString().slice(0, 16).replace('T', ' ')} – ` +
      `${r.to.toISOString().slice(0, 16).replace('T', ' ')} UTC, per ${bucket}`;
    clear(content);
    content.classList.add('loading');

    const kpis = h('div', { class: 'kpis', 'data-testid': 'kpis' });
    const ingest = panel(s, { title: `Ingest per ${bucket} by source`, testid: 'panel-ingest', sql: q.ingestSql(d, bucket),
      params, csvName: name(`ingest-per-${bucket}`) });
    const outcome = panel(s, { title: 'Processed vs failed', testid: 'panel-outcome', sql: q.outcomeSql(d, bucket),
      params, csvName: name(`outcome-per-${bucket}`) });
    const latency = panel(s, { title: 'Processing latency p95', testid: 'panel-latency', sql: q.latencySql(d, bucket),
      params, csvName: name(`latency-per-${bucket}`) });
    const expirations = panel(s, { title: 'Upcoming expirations', testid: 'panel-expirations',
      sql: q.expirationsSql(d), params: now, csvName: `imgpipe-expirations-${stamp(new Date())}.csv` });
    const stored = panel(s, { title: 'Stored bytes (now)', testid: 'panel-stored', sql: q.storedSql(d), params: [],
      csvName: `imgpipe-stored-${stamp(new Date())}.csv` });
    const failures = panel(s, { title: 'Latest failures', testid: 'panel-failures', sql: q.failuresSql(d), params,
      csvName: name('failures') });
    content.append(kpis, h('div', { class: 'panels' }, ingest.el, outcome.el, latency.el, expirations.el, stored.el,
      failures.el));

    const run = (sql: string, p: unknown[]) => s.api.query(sql, p);
    const jobs: [string, Promise<QueryResult>][] = [
      ['summary', run(q.summarySql(d), params)],
      ['latencyTotal', run(q.latencyTotalSql(d), params)],
      ['ingest', run(q.ingestSql(d, bucket), params)],
      ['outcome', run(q.outcomeSql(d, bucket), params)],
      ['latency', run(q.latencySql(d, bucket), params)],
      ['stored', run(q.storedSql(d), [])],
      ['expirations', run(q.expirationsSql(d), now)],
      ['failures', run(q.failuresSql(d), params)],
    ];
    const results: Record<string, QueryResult | Error> = {};
    await Promise.all(jobs.map(async ([k, p]) => {
      try {
        results[k] = await p;
      } catch (e) {
        results[k] = e as Error;
      }
    }));
    if (gen !== generation) return;
    content.classList.remove('loading');
    const ok = (k: string): QueryResult | null => (results[k] instanceof Error ? null : results[k] as QueryResult);
    const fail = (k: string, into: HTMLElement): boolean => {
      if (results[k] instanceof Error) {
        into.append(errorNotice(results[k]));
        return true;
      }
      return false;
    };

    // KPIs
    const sum = ok('summary') ? records(ok('summary')!)[0] ?? {} : {};
    const lat = ok('latencyTotal') ? records(ok('latencyTotal')!)[0] ?? {} : {};
    const storedRows = ok('stored') ? records(ok('stored')!) : [];
    const storedTotal = storedRows.reduce((a, row) => a + num(row.bytes), 0);
    if (fail('summary', kpis)) return;
    kpis.append(
      kpi('Images received', formatNumber(num(sum.images)), 'kpi-images', formatBytes(num(sum.bytes))),
      kpi('Processed', formatNumber(num(sum.processed)), 'kpi-processed'),
      kpi('Failed', formatNumber(num(sum.failed)), 'kpi-failed'),
      kpi('In progress', formatNumber(num(sum.in_progress)), 'kpi-in-progress'),
      kpi('Latency p95', lat.p95_seconds === null || lat.p95_seconds === undefined ? '–' :
        formatSeconds(num(lat.p95_seconds)), 'kpi-p95', `${formatNumber(num(lat.runs))} runs`),
      kpi('Stored now', formatBytes(storedTotal), 'kpi-stored',
        storedRows.map((row) => `${row.container} ${formatBytes(num(row.bytes))}`).join(' · ')));

    const keys = bucketKeys(r, bucket);
    const labels = keys.map((k) => bucketLabel(k, bucket));
    const index = new Map(keys.map((k, i) => [k, i]));

    // Ingest per bucket by source (stacked), with totals per source.
    if (!fail('ingest', ingest.body)) {
      const res = ok('ingest')!;
      const rows = records(res);
      const sources = [...new Set(rows.map((row) => String(row.source)))].sort();
      const series = sources.map((src, i) => ({ label: src, data: keys.map(() => 0), color: palette[i % palette.length] }));
      const totals = new Map<string, { images: number; bytes: number }>();
      for (const row of rows) {
        const i = index.get(bucketKey(row[bucket]));
        const si = sources.indexOf(String(row.source));
        if (i !== undefined) series[si].data[i] += num(row.images);
        const t = totals.get(String(row.source)) ?? { images: 0, bytes: 0 };
        t.images += num(row.images);
        t.bytes += num(row.bytes);
        totals.set(String(row.source), t);
      }
      const c = chartBox();
      ingest.body.append(c.box);
      drawChart(c.canvas, 'bar', labels, series.length ? series : [{ label: 'images', data: keys.map(() => 0) }],
        { stacked: true, yTitle: 'images' });
      ingest.body.append(dataTable(['source', 'images', 'bytes'],
        [...totals.entries()].map(([src, t]) => [src, t.images, formatBytes(t.bytes)]),
        { testid: 'ingest-by-source' }));
      ingest.body.append(tableDetails(`Rows (${rows.length})`, dataTable(res.columns, res.rows)));
    }

    // Processed vs failed per bucket of receipt.
    if (!fail('outcome', outcome.body)) {
      const res = ok('outcome')!;
      const processed = keys.map(() => 0);
      const failed = keys.map(() => 0);
      const pending = keys.map(() => 0);
      for (const row of records(res)) {
        const i = index.get(bucketKey(row[bucket]));
        if (i === undefined) continue;
        processed[i] += num(row.processed);
        failed[i] += num(row.failed);
        pending[i] += num(row.in_progress);
      }
      const c = chartBox();
      outcome.body.append(c.box);
      drawChart(c.canvas, 'bar', labels, [
        { label: 'processed', data: processed, color: '#3a9a5b' },
        { label: 'failed', data: failed, color: '#c2413b' },
        { label: 'in progress', data: pending, color: '#9aa5b1' },
      ], { stacked: true, yTitle: 'images (by time received)' });
      outcome.body.append(tableDetails(`Rows (${res.rows.length})`, dataTable(res.columns, res.rows)));
    }

    // Latency p50/p95 per bucket.
    if (!fail('latency', latency.body)) {
      const res = ok('latency')!;
      const p95: (number | null)[] = keys.map(() => null);
      const p50: (number | null)[] = keys.map(() => null);
      for (const row of records(res)) {
        const i = index.get(bucketKey(row[bucket]));
        if (i === undefined) continue;
        p95[i] = row.p95_seconds === null ? null : num(row.p95_seconds);
        p50[i] = row.p50_seconds === null ? null : num(row.p50_seconds);
      }
      const c = chartBox();
      latency.body.append(c.box);
      drawChart(c.canvas, 'line', labels, [
        { label: 'p95', data: p95, color: '#c2413b' },
        { label: 'p50', data: p50, color: '#1f6fb2' },
      ], { yTitle: 'seconds per image', yFormat: (v) => formatSeconds(v) });
      latency.body.append(tableDetails(`Rows (${res.rows.length})`, dataTable(res.columns, res.rows)));
    }

    // Upcoming expirations per day.
    if (!fail('expirations', expirations.body)) {
      const res = ok('expirations')!;
      const rows = records(res);
      const c = chartBox();
      expirations.body.append(c.box);
      drawChart(c.canvas, 'bar', rows.map((row) => String(row.day)), [
        { label: 'images', data: rows.map((row) => num(row.images)), color: '#e07b39' },
      ], { yTitle: 'images whose blobs expire' });
      expirations.body.append(dataTable(['day (UTC)', 'images', 'bytes'],
        rows.map((row) => [row.day, num(row.images), formatBytes(num(row.bytes))]), { testid: 'expirations-table' }));
    }

    if (!fail('stored', stored.body)) {
      stored.body.append(dataTable(['container', 'objects', 'bytes', 'bytes (exact)'],
        [...storedRows.map((row) => [row.container, num(row.objects), formatBytes(num(row.bytes)), num(row.bytes)]),
          ['total', storedRows.reduce((a, row) => a + num(row.objects), 0), formatBytes(storedTotal), storedTotal]],
        { testid: 'stored-table' }));
    }

    if (!fail('failures', failures.body)) {
      const res = ok('failures')!;
      if (res.rows.length === 0) {
        failures.body.append(h('p', { class: 'muted' }, 'No failed images in this range.'));
      } else {
        const rows = records(res);
        const table = dataTable(['image', 'received', 'format', 'error'],
          rows.map((row) => [row.id, String(row.received_at).slice(0, 19).replace('T', ' '), row.format, row.error]));
        // Ids link to the detail view.
        table.querySelectorAll('tbody tr').forEach((tr, i) => {
          const td = tr.firstElementChild as HTMLElement;
          td.textContent = '';
          td.append(h('a', { href: `#/images/${rows[i].id}` }, String(rows[i].id)));
        });
        failures.body.append(table);
      }
    }
  }

  load();
}
