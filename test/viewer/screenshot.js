#!/usr/bin/env node
// Opens an MCAP in Foxglove Studio (@foxglove/studio-base) in headless Chromium and takes one
// screenshot: serves this folder (host page + bundle), the bag and the layout on 127.0.0.1,
// loads the bag with the layout, waits for the data source, lets the panels settle, then writes
// the PNG and prints one JSON line (panel rectangles, the data source's start, end and
// duration as the page shows them, page errors, requests). Used by test/ros/test_viewer.py.
//
// usage: node screenshot.js --bag RUN.mcap --layout LAYOUT.json --out SHOT.png
//            [--time RFC3339] [--chromium PATH] [--width 1600] [--height 1000] [--settle 8]
'use strict';

const fs = require('node:fs');
const http = require('node:http');
const path = require('node:path');
const { parseArgs } = require('node:util');

const puppeteer = require('puppeteer-core');
const serveStatic = require('serve-static');

const LAYOUT_ID = 'persistence_ros';
// Chromium flags measured here (shared/notes/viewer-in-a-browser.md): WebGL on SwiftShader,
// and no host but 127.0.0.1 resolves, so nothing leaves the machine.
const CHROMIUM_ARGS = [
  '--no-sandbox', '--use-angle=swiftshader', '--use-gl=angle', '--enable-unsafe-swiftshader',
  '--ignore-gpu-blocklist', '--disable-dev-shm-usage',
  '--host-resolver-rules=MAP * ~NOTFOUND , EXCLUDE 127.0.0.1',
  '--no-first-run', '--no-default-browser-check', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--metrics-recording-only',
];

function options() {
  const { values } = parseArgs({
    options: {
      bag: { type: 'string' },
      layout: { type: 'string' },
      out: { type: 'string' },
      time: { type: 'string' },
      chromium: { type: 'string', default: '/usr/lib/chromium/chromium' },
      width: { type: 'string', default: '1600' },
      height: { type: 'string', default: '1000' },
      settle: { type: 'string', default: '8' },
      timeout: { type: 'string', default: '90' },
    },
  });
  for (const name of ['bag', 'layout', 'out']) {
    if (!values[name]) {
      throw new Error(`--${name} is required`);
    }
  }
  if (!values.bag.endsWith('.mcap')) {
    throw new Error('--bag must name a .mcap file (the remote-file source picks its reader by '
                    + 'the extension)');
  }
  return values;
}

// Serves each folder under its prefix with HTTP Range support (serve-static, as Express does):
// the remote-file data source reads the bag in ranges.
function startServer(mounts, log) {
  const handlers = mounts.map(([prefix, root]) => [prefix, serveStatic(root, {
    index: ['index.html'], fallthrough: true, dotfiles: 'ignore', cacheControl: false,
  })]);
  const server = http.createServer((req, res) => {
    const url = req.url;
    const notFound = () => {
      log.push({ url, status: 404, range: req.headers.range || null });
      res.statusCode = 404;
      res.end();
    };
    const match = handlers.find(([prefix]) => url.startsWith(prefix));
    if (!match) {
      notFound();
      return;
    }
    res.on('finish', () => log.push({ url, status: res.statusCode,
                                      range: req.headers.range || null }));
    req.url = '/' + url.slice(match[0].length);
    match[1](req, res, notFound);
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => resolve(server));
  });
}

// Reads the data source's start, end and duration from the "Data source info" panel (the text
// a user reads), the current playback time, and every panel's rectangle.
function readPage() {
  const panels = {};
  for (const el of document.querySelectorAll('[data-testid^="panel-mouseenter-container "]')) {
    const id = el.getAttribute('data-testid').slice('panel-mouseenter-container '.length);
    const r = el.getBoundingClientRect();
    panels[id] = { x: r.x, y: r.y, width: r.width, height: r.height };
  }
  const info = {};
  for (const el of document.querySelectorAll('span, p, div')) {
    const label = el.textContent.trim();
    if (['Start time', 'End time', 'Duration'].includes(label) && el.children.length === 0
        && el.nextElementSibling) {
      info[label] = el.nextElementSibling.textContent.trim();
    }
  }
  const playback = document.querySelector('[data-testid="PlaybackTime-text"] input');
  return {
    panels,
    source: info,
    playbackTime: playback ? playback.value : null,
    hostError: document.body.getAttribute('data-host-error'),
  };
}

async function main() {
  const opts = options();
  const bag = path.resolve(opts.bag);
  const layout = path.resolve(opts.layout);
  for (const file of [bag, layout, opts.chromium]) {
    if (!fs.existsSync(file)) {
      throw new Error(`${file} does not exist`);
    }
  }
  const requests = [];
  const server = await startServer([
    ['/bag/', path.dirname(bag)],
    ['/layout/', path.dirname(layout)],
    ['/', __dirname],
  ], requests);
  const base = `http://127.0.0.1:${server.address().port}`;
  const query = new URLSearchParams({
    'ds': 'remote-file',
    'ds.url': `${base}/bag/${encodeURIComponent(path.basename(bag))}`,
    'layoutId': LAYOUT_ID,
    'layoutUrl': `/layout/${encodeURIComponent(path.basename(layout))}`,
  });
  if (opts.time) {
    query.set('time', opts.time);
  }
  const url = `${base}/index.html?${query}`;
  const width = Number(opts.width);
  const height = Number(opts.height);
  const timeoutMs = 1000 * Number(opts.timeout);
  const errors = [];
  const outside = [];
  const browser = await puppeteer.launch({
    executablePath: opts.chromium,
    headless: true,
    args: CHROMIUM_ARGS.concat([`--window-size=${width},${height}`]),
    defaultViewport: { width, height },
  });
  let result;
  try {
    const page = await browser.newPage();
    page.on('pageerror', (error) => errors.push(`pageerror: ${error.message}`));
    page.on('console', (msg) => {
      if (msg.type() === 'error') {
        errors.push(`console: ${msg.text()}`);
      }
    });
    page.on('request', (request) => {
      const target = request.url();
      if (!/^(https?:\/\/127\.0\.0\.1[:/]|data:|blob:)/.test(target)) {
        outside.push(target);
      }
    });
    const started = Date.now();
    await page.goto(url, { waitUntil: 'load', timeout: timeoutMs });
    // The data source is loaded once the info panel shows an end time.
    await page.waitForFunction(() => {
      for (const el of document.querySelectorAll('span, p, div')) {
        if (el.textContent.trim() === 'Duration' && el.children.length === 0
            && el.nextElementSibling
            && /\d/.test(el.nextElementSibling.textContent)) {
          return true;
        }
      }
      return document.body.hasAttribute('data-host-error');
    }, { timeout: timeoutMs, polling: 250 });
    const loadedS = (Date.now() - started) / 1000;
    await new Promise((resolve) => setTimeout(resolve, 1000 * Number(opts.settle)));
    const page_ = await page.evaluate(readPage);
    await page.screenshot({ path: opts.out });
    result = {
      url, viewport: { width, height }, loaded_s: loadedS,
      total_s: (Date.now() - started) / 1000, ...page_, errors, outside_requests: outside,
      requests: requests.length,
      range_requests: requests.filter((r) => r.range && r.status === 206).length,
      failed_requests: requests.filter((r) => r.status >= 400),
    };
  } finally {
    await browser.close();
    server.close();
  }
  process.stdout.write(JSON.stringify(result) + '\n');
}

main().catch((error) => {
  process.stderr.write(`screenshot.js: ${error.stack || error}\n`);
  process.exit(1);
});
