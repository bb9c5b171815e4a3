// Chart.js, with only the parts the dashboard draws (bars and lines on category axes).
import {
  BarController, BarElement, CategoryScale, Chart, Filler, Legend, LinearScale, LineController, LineElement,
  PointElement, Tooltip,
} from 'chart.js';

Chart.register(BarController, BarElement, CategoryScale, Filler, Legend, LinearScale, LineController, LineElement,
  PointElement, Tooltip);
Chart.defaults.font.family = getComputedStyle(document.documentElement).getPropertyValue('--font').trim() ||
  'system-ui, sans-serif';
Chart.defaults.font.size = 12;
Chart.defaults.color = '#4a5565';
Chart.defaults.animation = false;

export const palette = ['#1f6fb2', '#e07b39', '#3a9a5b', '#c2413b', '#7a5cc4', '#8c6d46', '#d35fa7', '#6b7785'];

export interface Series {
  label: string;
  data: (number | null)[];
  color?: string;
}

const live = new WeakMap<HTMLCanvasElement, Chart>();

/** Draws (or redraws) a chart on `canvas`; an old chart on it is destroyed first. */
export function drawChart(canvas: HTMLCanvasElement, kind: 'bar' | 'line', labels: string[], series: Series[],
                          opts: { stacked?: boolean; yTitle?: string; yFormat?: (v: number) => string } = {}): Chart {
  live.get(canvas)?.destroy();
  const chart = new Chart(canvas, {
    type: kind,
    data: {
      labels,
      datasets: series.map((s, i) => {
        const color = s.color ?? palette[i % palette.length];
        return {
          label: s.label,
          data: s.data,
          backgroundColor: kind === 'bar' ? color : color + '33',
          borderColor: color,
          borderWidth: kind === 'bar' ? 0 : 2,
          maxBarThickness: 56,
          pointRadius: labels.length > 60 ? 0 : 2,
          spanGaps: true,
          fill: false,
        };
      }),
    },
    options: {
      responsive: true,
      maintainAspectRatio: false,
      interaction: { mode: 'index', intersect: false },
      plugins: {
        legend: { display: series.length > 1, position: 'bottom', labels: { boxWidth: 12 } },
        tooltip: opts.yFormat ? { callbacks: { label: (c) => `${c.dataset.label}: ${opts.yFormat!(c.parsed.y ?? 0)}` } }
          : {},
      },
      scales: {
        x: { stacked: !!opts.stacked, grid: { display: false }, ticks: { maxRotation: 0, autoSkipPadding: 12 } },
        y: {
          stacked: !!opts.stacked,
          beginAtZero: true,
          title: { display: !!opts.yTitle, text: opts.yTitle ?? '' },
          ticks: opts.yFormat ? { callback: (v) => opts.yFormat!(Number(v)) } : { precision: 0 },
        },
      },
    },
  });
  live.set(canvas, chart);
  return chart;
}
