// Human-readable sizes, speeds and durations for the progress line.

const UNITS = ["B", "KB", "MB", "GB", "TB"];

export function bytes(n) {
  let value = n;
  let unit = 0;
  while (value >= 1000 && unit < UNITS.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit === 0 ? 0 : 1)} ${UNITS[unit]}`;
}

export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return "–";
  const s = Math.round(seconds);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

// Speed over a sliding window of recent progress events, so that a resumed upload
// (whose offset jumps) and a stall both show what the connection does now.
export class SpeedMeter {
  constructor(windowMs = 3000) {
    this.windowMs = windowMs;
    this.samples = [];
  }

  reset() {
    this.samples = [];
  }

  add(sent, now = performance.now()) {
    this.samples.push({ sent, now });
    while (this.samples.length > 2 && now - this.samples[0].now > this.windowMs) {
      this.samples.shift();
    }
  }

  // Bytes per second, or 0 before two samples.
  rate() {
    if (this.samples.length < 2) return 0;
    const first = this.samples[0];
    const last = this.samples[this.samples.length - 1];
    const seconds = (last.now - first.now) / 1000;
    return seconds > 0 ? Math.max(0, last.sent - first.sent) / seconds : 0;
  }
}
