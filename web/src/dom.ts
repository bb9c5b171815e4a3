// Small DOM helpers. Text always goes in through text nodes, never innerHTML, so server data cannot inject markup.

type Child = Node | string | number | null | undefined | false;
type Attrs = Record<string, string | number | boolean | EventListener | null | undefined>;

/** h('div', {class: 'x', onclick: fn}, 'text', child): an element with attributes, listeners and children. */
export function h<K extends keyof HTMLElementTagNameMap>(tag: K, attrs: Attrs = {}, ...children: Child[]):
    HTMLElementTagNameMap[K] {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (name.startsWith('on') && typeof value === 'function') {
      el.addEventListener(name.slice(2), value as EventListener);
    } else if (value === true) {
      el.setAttribute(name, '');
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, ...children);
  return el;
}

export function append(parent: Node, ...children: Child[]): void {
  for (const c of children) {
    if (c === null || c === undefined || c === false) continue;
    parent.appendChild(typeof c === 'string' || typeof c === 'number' ? document.createTextNode(String(c)) : c);
  }
}

export function clear(el: Element): void {
  while (el.firstChild) el.removeChild(el.firstChild);
}

export function formatBytes(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) return '–';
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let v = n;
  let i = 0;
  while (Math.abs(v) >= 1024 && i < units.length - 1) {
    v /= 1024;
    i++;
  }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

export function formatNumber(n: number | null | undefined): string {
  if (n === null || n === undefined || !isFinite(n)) return '–';
  return n.toLocaleString('en-US');
}

export function formatSeconds(s: number | null | undefined): string {
  if (s === null || s === undefined || !isFinite(s)) return '–';
  return s < 1 ? `${Math.round(s * 1000)} ms` : `${s.toFixed(2)} s`;
}

/** "2026-01-10T12:00:00.000Z" -> "2026-01-10 12:00:00 UTC". */
export function formatTime(iso: string | null | undefined): string {
  if (!iso) return '–';
  return iso.replace('T', ' ').replace(/\.\d+Z$/, '').replace(/Z$/, '') + ' UTC';
}

/** Saves a blob as a file through a temporary blob: URL. */
export function downloadBlob(blob: Blob, filename: string): void {
  const url = URL.createObjectURL(blob);
  const a = h('a', { href: url, download: filename });
  document.body.appendChild(a);
  a.click();
  a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10000);
}

/** A message box: kind 'error' | 'info' | 'warn'. */
export function notice(kind: 'error' | 'info' | 'warn', ...children: Child[]): HTMLElement {
  return h('div', { class: `notice notice-${kind}`, role: kind === 'error' ? 'alert' : 'status' }, ...children);
}

/** A table from column names and rows; cells are shown as text. */
export function dataTable(columns: string[], rows: unknown[][], opts: { testid?: string; maxRows?: number } = {}):
    HTMLElement {
  const max = opts.maxRows ?? rows.length;
  // A column is numeric (right-aligned, header too) when its first non-empty cell is a number.
  const numeric = columns.map((_, i) => {
    const first = rows.find((r) => r[i] !== null && r[i] !== undefined && r[i] !== '');
    return first !== undefined && typeof first[i] === 'number';
  });
  const table = h('table', { class: 'data', 'data-testid': opts.testid },
    h('thead', {}, h('tr', {}, ...columns.map((c, i) => h('th', { class: numeric[i] ? 'num' : null }, c)))),
    h('tbody', {}, ...rows.slice(0, max).map((row) =>
      h('tr', {}, ...row.map((cell) => h('td', { class: typeof cell === 'number' ? 'num' : null },
        cellText(cell)))))));
  return h('div', { class: 'table-wrap' }, table);
}

export function cellText(v: unknown): string {
  if (v === null || v === undefined) return '';
  if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(Math.round(v * 1e6) / 1e6);
  return String(v);
}
