// SQL console: run one read-only statement (POST /v1/query), see a table and a chart of two chosen columns,
// download the result as CSV; the warehouse's views listed with a CSV export each.
import { QueryResult } from '../api';
import { drawChart } from '../charts';
import { clear, dataTable, downloadBlob, h } from '../dom';
import { viewListSql, viewSql } from '../queries';
import { Session } from '../session';
import { errorNotice, needsAnalyst, num } from './common';

const sqlKey = 'imgpipe.dashboard.sql';
const defaultSql = `SELECT format, count(*) AS images, sum(bytes) AS bytes
FROM images
GROUP BY format
ORDER BY images DESC`;
const maxShownRows = 1000;

let last: { sql: string; result: QueryResult } | null = null;

function stamp(): string {
  return new Date().toISOString().slice(0, 19).replace(/[-:]/g, '').replace('T', '-');
}

export function renderConsole(root: HTMLElement, s: Session): void {
  clear(root);
  root.append(h('div', { class: 'page-head' }, h('h1', {}, 'SQL console')));
  if (!s.caps.query) {
    root.append(needsAnalyst(s, 'The SQL console'));
    return;
  }
  const editor = h('textarea', { class: 'sql', spellcheck: 'false', rows: 8, 'data-testid': 'sql-input',
    'aria-label': 'SQL' });
  editor.value = sessionStorage.getItem(sqlKey) ?? defaultSql;
  editor.addEventListener('input', () => sessionStorage.setItem(sqlKey, editor.value));
  editor.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && (e.ctrlKey || e.metaKey)) {
      e.preventDefault();
      run();
    }
  });
  const runBtn = h('button', { class: 'btn btn-primary', type: 'button', 'data-testid': 'sql-run', onclick: () => run() },
    'Run');
  const csvBtn = h('button', { class: 'btn', type: 'button', 'data-testid': 'sql-csv', onclick: () => csv() },
    'Download CSV');
  const status = h('span', { class: 'muted small', 'data-testid': 'sql-status' });
  const out = h('div', { class: 'sql-out' });
  const views = h('div', { class: 'views', 'data-testid': 'view-list' }, h('p', { class: 'muted small' }, 'loading…'));

  root.append(h('div', { class: 'console' },
    h('div', { class: 'console-main' },
      editor,
      h('div', { class: 'toolbar' }, runBtn, csvBtn, status, h('span', { class: 'spacer' }),
        h('span', { class: 'muted small' }, 'One SELECT or WITH statement, read-only. Ctrl+Enter runs it.')),
      out),
    h('aside', { class: 'console-side panel' },
      h('header', { class: 'panel-head' }, h('h2', {}, 'Warehouse views')),
      h('div', { class: 'panel-body' },
        h('p', { class: 'muted small' }, 'Every view as CSV, for Excel and Power BI. Tables and columns: ' +
          'docs/WAREHOUSE.md.'),
        views))));

  async function run(): Promise<void> {
    const sql = editor.value.trim();
    if (!sql) return;
    runBtn.disabled = true;
    status.textContent = 'running…';
    const t0 = performance.now();
    try {
      const result = await s.api.query(sql);
      last = { sql, result };
      status.textContent = `${result.rows.length} row${result.rows.length === 1 ? '' : 's'}` +
        `${result.truncated ? ' (truncated at the row cap)' : ''} in ${Math.round(performance.now() - t0)} ms`;
      showResult(result);
    } catch (e) {
      status.textContent = '';
      clear(out);
      out.append(errorNotice(e));
    } finally {
      runBtn.disabled = false;
    }
  }

  async function csv(): Promise<void> {
    const sql = editor.value.trim();
    if (!sql) return;
    csvBtn.disabled = true;
    try {
      downloadBlob(await s.api.queryCsv(sql), `imgpipe-query-${stamp()}.csv`);
    } catch (e) {
      clear(out);
      out.append(errorNotice(e));
    } finally {
      csvBtn.disabled = false;
    }
  }

  function showResult(result: QueryResult): void {
    clear(out);
    const { columns, rows } = result;
    const numeric = columns.filter((_, i) => rows.some((r) => typeof r[i] === 'number'));
    const chartArea = h('div', {});
    if (rows.length && columns.length >= 2 && numeric.length) {
      const xSel = h('select', { 'data-testid': 'chart-x', 'aria-label': 'x column' },
        ...columns.map((c, i) => h('option', { value: c, selected: i === 0 }, c)));
      const ySel = h('select', { 'data-testid': 'chart-y', 'aria-label': 'y column' },
        ...numeric.map((c) => h('option', { value: c, selected: c === numeric.find((n) => n !== columns[0]) }, c)));
      const kindSel = h('select', { 'data-testid': 'chart-kind', 'aria-label': 'chart type' },
        h('option', { value: 'bar' }, 'bar'), h('option', { value: 'line' }, 'line'));
      const canvas = h('canvas', { 'data-testid': 'sql-chart' });
      const draw = () => {
        const xi = columns.indexOf(xSel.value);
        const yi = columns.indexOf(ySel.value);
        const shown = rows.slice(0, maxShownRows);
        drawChart(canvas, kindSel.value as 'bar' | 'line', shown.map((r) => String(r[xi] ?? '')),
          [{ label: ySel.value, data: shown.map((r) => (r[yi] === null ? null : num(r[yi]))) }]);
      };
      for (const sel of [xSel, ySel, kindSel]) sel.addEventListener('change', draw);
      chartArea.append(h('div', { class: 'toolbar chart-tools' },
        h('label', { class: 'field' }, h('span', {}, 'x'), xSel),
        h('label', { class: 'field' }, h('span', {}, 'y'), ySel),
        h('label', { class: 'field' }, h('span', {}, 'chart'), kindSel)),
      h('div', { class: 'chart chart-tall' }, canvas));
      out.append(chartArea);
      draw();
    }
    if (rows.length > maxShownRows) {
      out.append(h('p', { class: 'muted small' }, `Showing the first ${maxShownRows} of ${rows.length} rows; the CSV ` +
        'has them all.'));
    }
    out.append(dataTable(columns, rows, { testid: 'sql-result', maxRows: maxShownRows }));
  }

  async function listViews(): Promise<void> {
    let names: string[] | null = null;
    let lastError: unknown = null;
    for (const sql of viewListSql) {
      try {
        names = (await s.api.query(sql)).rows.map((r) => String(r[0]));
        break;
      } catch (e) {
        lastError = e;
      }
    }
    clear(views);
    if (!names) {
      views.append(errorNotice(lastError));
      return;
    }
    if (!names.length) views.append(h('p', { class: 'muted small' }, 'No views.'));
    for (const name of names) {
      views.append(h('div', { class: 'view-row', 'data-testid': 'view-row', 'data-view': name },
        h('span', { class: 'mono' }, name),
        h('span', { class: 'spacer' }),
        h('button', { class: 'btn btn-small', type: 'button', title: `SELECT * FROM ${name}`,
          onclick: () => {
            editor.value = viewSql(name);
            sessionStorage.setItem(sqlKey, editor.value);
            run();
          } }, 'Open'),
        h('button', { class: 'btn btn-small', type: 'button', 'data-testid': 'view-csv', title: 'Download as CSV',
          onclick: async () => downloadBlob(await s.api.queryCsv(viewSql(name)), `imgpipe-${name}-${stamp()}.csv`) },
        'CSV')));
    }
  }

  listViews();
  if (last && last.sql === editor.value.trim()) {
    showResult(last.result);
  }
}
