// The live waveform: the analyser's time-domain signal drawn on a canvas every animation frame.
export class Waveform {
  constructor(canvas) {
    this.canvas = canvas;
    this.analyser = null;
    this.frame = 0;
    this.data = null;
  }

  attach(analyser) {
    this.analyser = analyser;
    this.data = new Float32Array(analyser.fftSize);
    cancelAnimationFrame(this.frame);
    const tick = () => {
      this.draw();
      if (this.analyser) this.frame = requestAnimationFrame(tick);
    };
    tick();
  }

  detach() {
    this.analyser = null;
    cancelAnimationFrame(this.frame);
    this.draw();
  }

  draw() {
    const { canvas } = this;
    const ratio = globalThis.devicePixelRatio || 1;
    const width = Math.max(1, Math.round(canvas.clientWidth * ratio));
    const height = Math.max(1, Math.round(canvas.clientHeight * ratio));
    if (canvas.width !== width || canvas.height !== height) Object.assign(canvas, { width, height });
    const ctx = canvas.getContext("2d");
    ctx.clearRect(0, 0, width, height);
    ctx.lineWidth = 2 * ratio;
    ctx.strokeStyle = getComputedStyle(canvas).color;
    ctx.beginPath();
    if (!this.analyser) {
      ctx.moveTo(0, height / 2);
      ctx.lineTo(width, height / 2);
    } else {
      this.analyser.getFloatTimeDomainData(this.data);
      const step = this.data.length / width;
      for (let x = 0; x < width; x++) {
        // Peak of each pixel's samples, so short bursts stay visible at any width.
        let peak = 0;
        for (let i = Math.floor(x * step); i < Math.floor((x + 1) * step); i++) {
          if (Math.abs(this.data[i]) > Math.abs(peak)) peak = this.data[i];
        }
        const y = height / 2 - Math.max(-1, Math.min(1, peak * 2)) * (height / 2 - ratio);
        if (x === 0) ctx.moveTo(x, y);
        else ctx.lineTo(x, y);
      }
    }
    ctx.stroke();
  }
}
