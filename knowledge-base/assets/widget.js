/* CivicHub 12345 knowledge-base search widget for government websites.
 *
 *   <div data-civichub-kb></div>
 *   <script src="https://HUB/kb/widget.js" defer></script>
 *
 * The widget calls the hub's public search API (the site's origin must be
 * listed with --kb-cors-origin). data-endpoint on the container overrides
 * the hub address, data-size the number of results (default 5). */
(function () {
  'use strict';
  var script = document.currentScript;
  var hub = script && script.src ? new URL(script.src).origin : '';

  var css = '.civichub-kb{font-family:"PingFang SC","Microsoft YaHei",sans-serif;max-width:720px}' +
    '.civichub-kb form{display:flex;gap:8px}' +
    '.civichub-kb input{flex:1;padding:8px;font-size:16px;border:1px solid #bcccdc;border-radius:4px}' +
    '.civichub-kb button{padding:8px 16px;border:0;border-radius:4px;background:#c8102e;color:#fff;font-size:16px;cursor:pointer}' +
    '.civichub-kb ol{list-style:none;padding:0}' +
    '.civichub-kb li{border-bottom:1px solid #e4e7eb;padding:10px 0}' +
    '.civichub-kb .kb-title{font-weight:600;color:#1f2933}' +
    '.civichub-kb .kb-snippet{margin:4px 0;color:#3e4c59;line-height:1.6}' +
    '.civichub-kb em{font-style:normal;color:#c8102e;font-weight:600}' +
    '.civichub-kb .kb-meta,.civichub-kb .kb-status{color:#52606d;font-size:13px}';

  function el(tag, className, text) {
    var node = document.createElement(tag);
    if (className) node.className = className;
    if (text != null) node.textContent = text;
    return node;
  }

  // Snippets are HTML-escaped text with <em> marks: rebuild them as DOM
  // nodes so nothing else from the network is ever parsed as HTML.
  function snippet(html) {
    var out = el('p', 'kb-snippet');
    var decoder = document.createElement('textarea');
    var emphasised = false;
    html.split(/(<\/?em>)/).forEach(function (piece) {
      if (piece === '<em>') { emphasised = true; return; }
      if (piece === '</em>') { emphasised = false; return; }
      decoder.innerHTML = piece;
      var text = document.createTextNode(decoder.value);
      if (emphasised) { var em = el('em'); em.appendChild(text); out.appendChild(em); } else { out.appendChild(text); }
    });
    return out;
  }

  function mount(container) {
    var endpoint = (container.getAttribute('data-endpoint') || hub).replace(/\/$/, '');
    var size = parseInt(container.getAttribute('data-size') || '5', 10) || 5;
    container.classList.add('civichub-kb');
    var listId = 'civichub-kb-suggest-' + Math.random().toString(36).slice(2);
    var form = el('form');
    form.setAttribute('role', 'search');
    var input = el('input');
    input.type = 'search';
    input.name = 'q';
    input.placeholder = '搜索办事指南，如：公积金提取、社保断缴';
    input.setAttribute('aria-label', '搜索办事指南');
    input.setAttribute('list', listId);
    input.maxLength = 200;
    var suggestions = el('datalist');
    suggestions.id = listId;
    var button = el('button', null, '搜索');
    button.type = 'submit';
    form.appendChild(input);
    form.appendChild(button);
    var status = el('p', 'kb-status');
    status.setAttribute('aria-live', 'polite');
    var list = el('ol', 'kb-results');
    container.appendChild(form);
    container.appendChild(suggestions);
    container.appendChild(status);
    container.appendChild(list);

    // The API explains itself in English, for developers; citizens read these.
    function failure(code) {
      if (code === 429) return '搜索的人较多，请稍候片刻再试';
      if (code === 400) return '请换用更简短的关键词再试';
      return '搜索失败，请稍后再试或拨打 12345';
    }

    function search(q) {
      status.textContent = '正在搜索…';
      fetch(endpoint + '/api/public/kb/search?q=' + encodeURIComponent(q) + '&size=' + size)
        .then(function (r) { return r.json().then(function (body) { return { ok: r.ok, status: r.status, body: body }; }); })
        .then(function (res) {
          list.textContent = '';
          if (!res.ok) { status.textContent = failure(res.status); return; }
          status.textContent = res.body.total ? '共找到 ' + res.body.total + ' 条' : '没有找到相关内容，可拨打 12345 咨询';
          res.body.hits.forEach(function (hit) {
            var item = el('li', 'kb-hit');
            item.appendChild(el('div', 'kb-title', hit.title));
            item.appendChild(snippet(hit.snippet));
            if (hit.department) item.appendChild(el('div', 'kb-meta', '承办单位：' + hit.department));
            list.appendChild(item);
          });
        })
        .catch(function () { status.textContent = '暂时无法搜索，请稍后再试或拨打 12345'; });
    }

    form.addEventListener('submit', function (e) {
      e.preventDefault();
      var q = input.value.trim();
      if (q) search(q);
    });
    var timer = null;
    input.addEventListener('input', function () {
      clearTimeout(timer);
      var q = input.value.trim();
      if (!q) return;
      timer = setTimeout(function () {
        fetch(endpoint + '/api/public/kb/suggest?q=' + encodeURIComponent(q))
          .then(function (r) { return r.ok ? r.json() : { suggestions: [] }; })
          .then(function (body) {
            suggestions.textContent = '';
            body.suggestions.forEach(function (title) { var o = el('option'); o.value = title; suggestions.appendChild(o); });
          })
          .catch(function () {});
      }, 200);
    });
  }

  function start() {
    if (!document.getElementById('civichub-kb-style')) {
      var style = el('style', null, css);
      style.id = 'civichub-kb-style';
      document.head.appendChild(style);
    }
    Array.prototype.forEach.call(document.querySelectorAll('[data-civichub-kb]'), mount);
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', start); else start();
})();
