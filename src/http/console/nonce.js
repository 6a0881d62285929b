// xterm.js writes some of its styles as <style> elements, which the page's
// Content-Security-Policy allows only with this response's nonce: every <style> created from
// here on carries it. Loaded first, before xterm.js.
(function () {
  "use strict";
  const meta = document.querySelector('meta[name="rdev-style-nonce"]');
  const nonce = meta ? meta.content : "";
  const create = Document.prototype.createElement;
  Document.prototype.createElement = function (name, options) {
    const element = create.call(this, name, options);
    if (nonce && String(name).toLowerCase() === "style") {
      element.setAttribute("nonce", nonce);
    }
    return element;
  };
})();
