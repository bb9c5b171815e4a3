// One image: preview, metadata, EXIF, GPS (as text and a plain latitude/longitude plot, no map service), renditions,
// processing runs (analyst SQL on processing_runs) and errors.
import { Image } from '../api';
import { cellText, clear, dataTable, downloadBlob, formatBytes, formatTime, h, notice } from '../dom';
import { runsSql } from '../queries';
import { Session } from '../session';
import { blobUrl, pickRendition } from '../thumbs';
import { errorNotice, needsAnalyst } from './common';

const svgNs = 'http://www.w3.org/2000/svg';

function svg(tag: string, attrs: Record<string, string | number>): SVGElement {
  const el = document.createElementNS(svgNs, tag);
  for (const [k, v] of Object.entries(attrs)) el.setAttribute(k, String(v));
  return el;
}

/** Degrees as degrees, minutes, seconds with the hemisphere: 48.858222 -> 48° 51′ 29.6″ N. */
function dms(value: number, pos: string, neg: string): string {
  const a = Math.abs(value);
  const d = Math.floor(a);
  const m = Math.floor((a - d) * 60);
  const sec = ((a - d) * 60 - m) * 60;
  return `${d}° ${m}′ ${sec.toFixed(1)}″ ${value >= 0 ? pos : neg}`;
}

/** An equirectangular graticule (every 30°) with the point marked: where on Earth, without any map data. */
function gpsPlot(lat: number, lon: number): SVGElement {
  const root = svg('svg', { viewBox: '-2 -2 364 184', class: 'gps-plot', role: 'img',
    'aria-label': `position ${lat.toFixed(4)}, ${lon.toFixed(4)} on a latitude/longitude grid` });
  root.append(svg('rect', { x: 0, y: 0, width: 360, height: 180, class: 'gps-bg' }));
  for (let x = 0; x <= 360; x += 30) {
    root.append(svg('line', { x1: x, y1: 0, x2: x, y2: 180, class: x === 180 ? 'gps-axis' : 'gps-line' }));
  }
  for (let y = 0; y <= 180; y += 30) {
    root.append(svg('line', { x1: 0, y1: y, x2: 360, y2: y, class: y === 90 ? 'gps-axis' : 'gps-line' }));
  }
  const x = lon + 180;
  const y = 90 - lat;
  root.append(svg('line', { x1: x, y1: 0, x2: x, y2: 180, class: 'gps-cross' }));
  root.append(svg('line', { x1: 0, y1: y, x2: 360, y2: y, class: 'gps-cross' }));
  root.append(svg('circle', { cx: x, cy: y, r: 4, class: 'gps-dot' }));
  return root;
}

function kv(rows: [string, unknown][], testid?: string): HTMLElement {
  return h('table', { class: 'kv', 'data-testid': testid },
    h('tbody', {}, ...rows.map(([k, v]) => h('tr', {}, h('th', {}, k),
      h('td', {}, v instanceof Node ? v : v === null || v === undefined || v === '' ? '–' : cellText(v))))));
}

function section(title: string, ...body: (Node | string | null)[]): HTMLElement {
  return h('section', { class: 'panel' }, h('header', { class: 'panel-head' }, h('h2', {}, title)),
    h('div', { class: 'panel-body' }, ...body));
}

export function renderDetail(root: HTMLElement, s: Session, id: string): void {
  clear(root);
  const back = h('a', { href: '#/images', class: 'back' }, '← Images');
  root.append(h('div', { class: 'page-head' }, back, h('h1', { class: 'mono' }, id)));
  const body = h('div', { class: 'detail', 'data-testid': 'image-detail' }, h('p', { class: 'muted' }, 'loading…'));
  root.append(body);
  s.api.getImage(id).then((image) => show(image), (e) => {
    clear(body);
    body.append(errorNotice(e));
  });

  function show(image: Image): void {
    clear(body);
    const preview = h('div', { class: 'preview' });
    const r = pickRendition(image, 800);
    if (r) {
      const img = h('img', { alt: `rendition ${r.name}` });
      preview.append(img);
      blobUrl(s.api, r.url).then((u) => { img.src = u; }, (e) => preview.replaceChildren(errorNotice(e)));
    } else {
      preview.append(h('div', { class: 'thumb-missing big' }, `no rendition (${image.status})`));
    }

    const colour = image.dominant_colour
      ? h('span', {}, (() => {
        const sw = h('span', { class: 'swatch' });
        sw.style.background = image.dominant_colour!;  // CSSOM, allowed by the CSP
        return sw;
      })(), ` ${image.dominant_colour}`)
      : null;
    const meta = kv([
      ['status', h('span', { class: `badge badge-${image.status}`, 'data-testid': 'detail-status' }, image.status)],
      ['format', `${image.format} (${image.content_type})`],
      ['size', `${image.width}×${image.height} px, ${image.frames} frame${image.frames === 1 ? '' : 's'}`],
      ['bytes', `${formatBytes(image.bytes)} (${image.bytes})`],
      ['colour', `${image.colour_space}${image.has_alpha ? ', alpha' : ''}${image.has_icc ? ', ICC profile' : ''}`],
      ['orientation', image.orientation],
      ['source', image.source_ref ? `${image.source} (${image.source_ref})` : image.source],
      ['pipeline', image.pipeline],
      ['received', formatTime(image.received_at)],
      ['processed', formatTime(image.processed_at)],
      ['expires', formatTime(image.expires_at)],
      ['sha256', h('span', { class: 'mono small' }, image.sha256)],
      ['phash', image.phash ? h('span', { class: 'mono' }, image.phash) : null],
      ['dominant colour', colour],
    ], 'detail-meta');
    const userMeta = Object.entries(image.metadata ?? {});

    const e = image.exif ?? ({} as Image['exif']);
    const exif = kv([
      ['make', e.make], ['model', e.model], ['lens', e.lens_model], ['taken at (camera time)', e.taken_at],
      ['software', e.software], ['orientation', image.orientation],
    ], 'detail-exif');

    const gps = e.gps
      ? h('div', { class: 'gps', 'data-testid': 'detail-gps' },
        kv([
          ['latitude', `${e.gps.lat.toFixed(6)} (${dms(e.gps.lat, 'N', 'S')})`],
          ['longitude', `${e.gps.lon.toFixed(6)} (${dms(e.gps.lon, 'E', 'W')})`],
          ['altitude', e.gps.alt === null ? null : `${e.gps.alt.toFixed(1)} m`],
        ]),
        gpsPlot(e.gps.lat, e.gps.lon),
        h('p', { class: 'muted small' }, 'Latitude/longitude grid, a line every 30°; the equator and the prime ' +
          'meridian darker. No map service is contacted.'))
      : h('p', { class: 'muted', 'data-testid': 'detail-gps' }, 'No GPS position in this image.');

    const renditions = image.renditions.length
      ? dataTable(['name', 'format', 'pixels', 'bytes', ''], image.renditions.map((rd) =>
        [rd.name, rd.format, `${rd.width}×${rd.height}`, formatBytes(rd.bytes), '']), { testid: 'detail-renditions' })
      : h('p', { class: 'muted' }, image.status === 'processed' ? 'No renditions.' : `None yet (${image.status}).`);
    renditions.querySelectorAll('tbody tr').forEach((tr, i) => {
      const rd = image.renditions[i];
      (tr.lastElementChild as HTMLElement).append(h('button', { class: 'btn btn-small', type: 'button',
        onclick: async () => downloadBlob(await s.api.blob(rd.url), `${image.id}-${rd.name}.${rd.format}`) },
      'Download'));
    });
    const original = s.caps.listImages ? h('button', { class: 'btn btn-small', type: 'button',
      onclick: async () => downloadBlob(await s.api.blob(`/v1/images/${image.id}/original`),
        `${image.id}.${image.format}`) }, 'Download original') : null;

    const errors = h('div', { 'data-testid': 'detail-errors' });
    if (image.error) errors.append(notice('error', h('strong', {}, 'Processing failed: '), image.error));
    const runs = h('div', { 'data-testid': 'detail-runs' });
    if (!s.caps.query) {
      runs.append(needsAnalyst(s, 'The processing runs'));
    } else {
      runs.append(h('p', { class: 'muted' }, 'loading…'));
      s.api.query(runsSql(s.caps.dialect), [image.id]).then((res) => {
        clear(runs);
        if (!res.rows.length) {
          runs.append(h('p', { class: 'muted' }, 'No processing run yet.'));
          return;
        }
        runs.append(dataTable(res.columns, res.rows));
        const errIdx = res.columns.indexOf('error');
        const failed = res.rows.filter((row) => errIdx >= 0 && row[errIdx]);
        if (failed.length && !image.error) {
          errors.append(notice('warn', `${failed.length} attempt${failed.length === 1 ? '' : 's'} failed before ` +
            'a later one succeeded or is pending; see the runs below.'));
        }
      }, (err) => {
        clear(runs);
        runs.append(errorNotice(err));
      });
    }

    body.append(
      errors,
      h('div', { class: 'detail-top' },
        h('div', {}, preview, h('div', { class: 'actions' }, original)),
        section('Metadata', meta)),
      h('div', { class: 'detail-cols' },
        section('EXIF', exif),
        section('GPS', gps),
        section('Client metadata', userMeta.length ? kv(userMeta, 'detail-user-meta')
          : h('p', { class: 'muted' }, 'None.'))),
      section('Renditions', renditions),
      section('Processing runs', runs));
  }
}
