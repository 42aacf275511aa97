// Unit tests of how the extension finds the server (src/command.ts, bundled to out/command.js by `npm test`).
const { test } = require('node:test');
const assert = require('node:assert/strict');
const fs = require('node:fs');
const os = require('node:os');
const path = require('node:path');
const { resolveServerCommand, formatCommandLine, serverSettings, itemConfidence, formatStats } = require('../out/command.js');

function tree() {
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'dgls-cmd-'));
  const make = (rel) => {
    const p = path.join(root, rel);
    fs.mkdirSync(path.dirname(p), { recursive: true });
    fs.writeFileSync(p, '', { mode: 0o755 });
    return p;
  };
  return { root, make };
}

const base = { configuredPath: '', extraArgs: [], workspaceFolders: [], envPath: '', platform: 'linux' };

test('the setting wins; a Python interpreter runs the module', () => {
  const { root, make } = tree();
  const py = make('env/bin/python3.11');
  make('ws/.venv/bin/dgls');
  const r = resolveServerCommand({ ...base, configuredPath: py, workspaceFolders: [path.join(root, 'ws')], extraArgs: ['-v'] });
  assert.deepEqual(r, { command: py, args: ['-m', 'dgls.cli', '--stdio', '-v'], source: 'setting dgls.server.path' });
});

test('${workspaceFolder} in the setting; a missing file is an error naming it', () => {
  const { root, make } = tree();
  const exe = make('ws/tools/dgls');
  const ws = path.join(root, 'ws');
  assert.equal(resolveServerCommand({ ...base, configuredPath: '${workspaceFolder}/tools/dgls', workspaceFolders: [ws] }).command, exe);
  const r = resolveServerCommand({ ...base, configuredPath: '/nope/dgls' });
  assert.match(r.error, /\/nope\/dgls/);
});

test('workspace .venv before PATH; PATH when no venv; an error listing the places otherwise', () => {
  const { root, make } = tree();
  const venv = make('ws/.venv/bin/dgls');
  const onPath = make('bin/dgls');
  const ws = path.join(root, 'ws');
  const envPath = path.join(root, 'bin');
  assert.equal(resolveServerCommand({ ...base, workspaceFolders: [ws], envPath }).command, venv);
  assert.deepEqual(resolveServerCommand({ ...base, workspaceFolders: [root], envPath }),
    { command: onPath, args: ['--stdio'], source: 'PATH' });
  const r = resolveServerCommand({ ...base, workspaceFolders: [root] });
  assert.match(r.error, /\.venv\/bin\/dgls/);
  assert.match(r.error, /dgls\.server\.path/);
});

test('the logged command line is shell-quoted', () => {
  assert.equal(formatCommandLine({ command: '/a b/python', args: ['-m', 'dgls.cli', '--stdio'] }),
    "'/a b/python' -m dgls.cli --stdio");
});

test('client-only keys are not sent to the server', () => {
  assert.deepEqual(serverSettings({ server: { path: 'x' }, trace: { server: 'off' }, model: 'm', steps: null }),
    { model: 'm', steps: null });
});

test("an item's confidence comes from its dgls.accepted command's second argument", () => {
  const command = { command: 'dgls.accepted', arguments: ['7', { confidence: 0.83, tokens: [], unsure: [] }] };
  assert.equal(itemConfidence(command), 0.83);
  assert.equal(itemConfidence({ command: 'dgls.accepted', arguments: ['7'] }), undefined);
  assert.equal(itemConfidence(undefined), undefined);
});

test("dgls.stats in one line, the server's names and order", () => {
  assert.equal(formatStats({ modelCalls: 3, accepted: 1, partiallyAccepted: 0 }),
    'dgls since the server started: modelCalls 3, accepted 1, partiallyAccepted 0');
  assert.equal(formatStats({}), 'dgls since the server started: no counters');
});
