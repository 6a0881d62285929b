// ANSI colours in command output, as text in styled spans (never HTML): SGR codes 0 (reset),
// 1 (bold), 4 (underline), 22, 24, 39, 30-37 and 90-97 (foreground) are shown; every other
// escape sequence is dropped. A sequence split between two chunks is held until its end comes.
(function () {
  "use strict";

  // An escape sequence: CSI (ESC [ params final), OSC (ESC ] … BEL or ESC \), or ESC and one char.
  const SEQUENCE = /\x1b(?:\[([0-9;?]*)([@-~])|\][^\x07\x1b]*(?:\x07|\x1b\\)|[^[\]])/g;
  // The start of a sequence cut off at a chunk's end.
  const UNFINISHED = /\x1b(?:\[[0-9;?]*|\][^\x07\x1b]*\x1b?)?$/;

  class AnsiWriter {
    constructor(target, streamClass) {
      this.target = target;
      this.streamClass = streamClass || "";
      this.held = "";
      this.colour = null;
      this.bold = false;
      this.underline = false;
    }

    write(chunk) {
      let text = this.held + chunk;
      const cut = text.match(UNFINISHED);
      this.held = cut ? cut[0] : "";
      if (cut) text = text.slice(0, text.length - cut[0].length);
      let at = 0;
      for (const match of text.matchAll(SEQUENCE)) {
        this.span(text.slice(at, match.index));
        at = match.index + match[0].length;
        if (match[2] === "m") this.sgr(match[1]);
      }
      this.span(text.slice(at));
    }

    sgr(params) {
      for (const raw of (params || "0").split(";")) {
        const code = Number(raw || "0");
        if (code === 0) [this.colour, this.bold, this.underline] = [null, false, false];
        else if (code === 1) this.bold = true;
        else if (code === 4) this.underline = true;
        else if (code === 22) this.bold = false;
        else if (code === 24) this.underline = false;
        else if (code === 39) this.colour = null;
        else if ((code >= 30 && code <= 37) || (code >= 90 && code <= 97)) this.colour = code;
      }
    }

    span(text) {
      if (!text) return;
      const span = document.createElement("span");
      const classes = [this.streamClass];
      if (this.colour !== null) classes.push(`ansi-${this.colour}`);
      if (this.bold) classes.push("ansi-bold");
      if (this.underline) classes.push("ansi-underline");
      span.className = classes.filter(Boolean).join(" ");
      span.textContent = text;
      this.target.appendChild(span);
    }
  }

  window.RdevAnsi = { AnsiWriter };
})();
