// Drives the real `dgls --stdio` the way VS Code's client does (vscode-languageserver-protocol over stdio,
// positionEncodings ['utf-16']): inline completion, code action + resolve, the rewrite command through
// workspace/applyEdit, and cancellation. A random tiny model gives garbage text: this checks the mechanics.
//   DGLS_SERVER  the dgls executable (default: ../../.venv/bin/dgls)
//   DGLS_MODEL   the model setting (default: dgls-tiny)
const { test, before, after } = require('node:test');
const assert = require('node:assert/strict');
const cp = require('node:child_process');
const path = require('node:path');
const rpc = require('vscode-jsonrpc/node');
const P = require('vscode-languageserver-protocol/node');

const SERVER = process.env.DGLS_SERVER || path.resolve(__dirname, '..', '..', '..', '.venv', 'bin', 'dgls');
const MODEL = process.env.DGLS_MODEL || 'dgls-tiny';
// The server keeps a fill of a code hole only if it parses: require one only from a model that writes code
// (DGLS_MODEL_WRITES_CODE=1); the young dgls-tiny and a random model are checked for the mechanics alone.
const TRAINED = process.env.DGLS_MODEL_WRITES_CODE === '1';
const URI = 'file:///project/greet.py'; // sent with didOpen, never read from disk
// The cursor and the rewrite sit in a comment: a random model's garbage keeps the file parsing there, so the
// server's parse check does not drop it (code positions would be tested with the trained dgls-tiny).
const LINES = [
  'def greet(name):',
  '    # say h\u00e9llo to \u{1F600} and ', // a surrogate pair before the cursor: utf-16 columns != code points
  '    return "hello " + name',
  '',
  '',
  'def total(xs):',
  '    ...',
  '',
];
const CURSOR = { line: 1, character: LINES[1].length }; // JS string length is in UTF-16 code units

let proc;
let conn;
const doc = { version: 1, text: LINES.join('\n') };
const seen = { status: [], messages: [], applyEdit: [] };

/** Wait until `predicate()` is truthy (polling), or fail after `ms`. */
async function until(predicate, ms, what) {
  const end = Date.now() + ms;
  while (!predicate()) {
    if (Date.now() > end) throw new Error(`timed out after ${ms} ms waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

function offsetAt(text, pos) {
  const lines = text.split('\n');
  let off = 0;
  for (let i = 0; i < pos.line; i++) off += lines[i].length + 1;
  assert.ok(pos.character <= lines[pos.line].length, `character ${pos.character} past the end of line ${pos.line}`);
  return off + pos.character;
}

/** Apply LSP TextEdits (UTF-16 positions, as JS strings index) to `text`, last edit first. */
function applyEdits(text, edits) {
  const spans = edits.map((e) => [offsetAt(text, e.range.start), offsetAt(text, e.range.end), e.newText]);
  spans.sort((a, b) => b[0] - a[0]);
  for (const [s, e, t] of spans) text = text.slice(0, s) + t + text.slice(e);
  return text;
}

function isSurrogateSplit(text, pos) {
  const off = offsetAt(text, pos);
  const code = text.charCodeAt(off);
  return off > 0 && code >= 0xdc00 && code <= 0xdfff;
}

async function setText(text) {
  doc.version += 1;
  doc.text = text;
  await conn.sendNotification(P.DidChangeTextDocumentNotification.type, {
    textDocument: { uri: URI, version: doc.version }, contentChanges: [{ text }],
  });
}

before(async () => {
  proc = cp.spawn(SERVER, ['--stdio'], { stdio: ['pipe', 'pipe', 'inherit'] });
  proc.on('error', (e) => { throw new Error(`cannot start ${SERVER}: ${e.message}`); });
  conn = P.createProtocolConnection(new rpc.StreamMessageReader(proc.stdout), new rpc.StreamMessageWriter(proc.stdin));
  conn.onNotification('dgls/status', (s) => seen.status.push(s));
  conn.onNotification(P.ShowMessageNotification.type, (m) => seen.messages.push(m.message));
  conn.onNotification(P.LogMessageNotification.type, () => {});
  conn.onRequest(P.WorkDoneProgressCreateRequest.type, () => null);
  conn.onProgress(P.WorkDoneProgress.type, '*', () => {});
  conn.onRequest(P.RegistrationRequest.type, () => null);
  conn.onRequest(P.ConfigurationRequest.type, (p) => p.items.map(() => null));
  // VS Code applies a versioned edit only to that version of the document, then sends didChange.
  conn.onRequest(P.ApplyWorkspaceEditRequest.type, async ({ edit }) => {
    seen.applyEdit.push(edit);
    const change = edit.documentChanges[0];
    if (change.textDocument.uri !== URI || change.textDocument.version !== doc.version) {
      return { applied: false, failureReason: `stale: version ${change.textDocument.version} != ${doc.version}` };
    }
    await setText(applyEdits(doc.text, change.edits));
    return { applied: true };
  });
  conn.listen();
  const init = await conn.sendRequest(P.InitializeRequest.type, {
    processId: process.pid,
    clientInfo: { name: 'Visual Studio Code', version: '1.91.0' },
    rootUri: null,
    capabilities: {
      general: { positionEncodings: ['utf-16'] },
      window: { workDoneProgress: true, showMessage: {} },
      workspace: { applyEdit: true, configuration: true, workspaceEdit: { documentChanges: true },
        didChangeConfiguration: { dynamicRegistration: true }, executeCommand: { dynamicRegistration: true } },
      textDocument: {
        synchronization: { dynamicRegistration: true, didSave: true },
        inlineCompletion: { dynamicRegistration: true },
        completion: { completionItem: { snippetSupport: true } },
        codeAction: {
          dynamicRegistration: true, dataSupport: true, isPreferredSupport: true,
          resolveSupport: { properties: ['edit'] },
          codeActionLiteralSupport: { codeActionKind: { valueSet: ['', 'quickfix', 'refactor', 'refactor.rewrite'] } },
        },
      },
    },
    initializationOptions: { model: MODEL, steps: 4, candidates: 2, debounceMs: 500, completionInStrings: true },
  });
  assert.equal(init.capabilities.positionEncoding ?? 'utf-16', 'utf-16');
  assert.ok(init.capabilities.inlineCompletionProvider, 'inlineCompletionProvider advertised');
  assert.equal(init.capabilities.codeActionProvider.resolveProvider, true);
  assert.ok(init.capabilities.executeCommandProvider.commands.includes('dgls.rewrite'));
  await conn.sendNotification(P.InitializedNotification.type, {});
  await conn.sendNotification(P.DidOpenTextDocumentNotification.type, {
    textDocument: { uri: URI, languageId: 'python', version: doc.version, text: doc.text },
  });
  await until(() => seen.status.some((s) => s.state === 'ready' || s.state === 'error'), 90000, 'dgls/status ready');
  const last = seen.status[seen.status.length - 1];
  assert.equal(last.state, 'ready', `model failed to load: ${JSON.stringify(last)}`);
});

after(async () => {
  if (!conn) return;
  const exited = new Promise((r) => proc.on('exit', (code) => r(code)));
  await conn.sendRequest(P.ShutdownRequest.type);
  await conn.sendNotification(P.ExitNotification.type);
  assert.equal(await exited, 0, 'server exit code');
  conn.dispose();
});

const inlineParams = (triggerKind) => ({
  textDocument: { uri: URI }, position: CURSOR, context: { triggerKind },
});

test('inline completion: items in UTF-16 ranges; accepting one keeps the suffix', async () => {
  const before = doc.text;
  const res = await conn.sendRequest(P.InlineCompletionRequest.type, inlineParams(P.InlineCompletionTriggerKind.Invoked));
  const items = Array.isArray(res) ? res : res.items;
  assert.ok(items.length >= 1, `expected ghost text, got ${JSON.stringify(res)}`);
  assert.ok(items.length <= 2, 'no more candidates than the candidates setting');
  for (const item of items) {
    const text = typeof item.insertText === 'string' ? item.insertText : item.insertText.value;
    assert.ok(text.length > 0);
    const { start, end } = item.range;
    assert.ok(!isSurrogateSplit(before, start) && !isSurrogateSplit(before, end), 'range splits a surrogate pair');
    assert.deepEqual(start, CURSOR, 'ghost text starts at the cursor');
    assert.equal(end.line, CURSOR.line, 'replaces at most the rest of the cursor line');
    const accepted = applyEdits(before, [{ range: item.range, newText: text }]);
    const cut = offsetAt(before, end);
    assert.ok(accepted.startsWith(before.slice(0, offsetAt(before, start)) + text));
    assert.ok(accepted.endsWith(before.slice(cut)), 'suffix intact');
    assert.ok(accepted.endsWith(LINES.slice(2).join('\n')), 'lines after the cursor intact');
  }
});

test('code action "Fill holes" resolves lazily to a versioned edit of the hole', async () => {
  const actions = await conn.sendRequest(P.CodeActionRequest.type, {
    textDocument: { uri: URI }, range: { start: { line: 0, character: 0 }, end: { line: 0, character: 0 } },
    context: { diagnostics: [], triggerKind: P.CodeActionTriggerKind.Invoked },
  });
  const fill = actions.find((a) => a.title.startsWith('dgls: Fill'));
  assert.ok(fill, `no Fill holes action in ${JSON.stringify(actions.map((a) => a.title))}`);
  assert.equal(fill.edit, undefined, 'the edit is computed in codeAction/resolve');
  const resolved = await conn.sendRequest(P.CodeActionResolveRequest.type, fill);
  const change = resolved.edit.documentChanges[0];
  assert.equal(change.textDocument.version, doc.version);
  assert.equal(change.textDocument.uri, URI);
  assert.ok(change.edits.length === 1 || (!TRAINED && change.edits.length === 0), JSON.stringify(change.edits));
  for (const edit of change.edits) {
    assert.equal(edit.range.start.line, 6, 'the hole is line 7 ("    ...")');
    const filled = applyEdits(doc.text, [edit]);
    assert.ok(filled.startsWith(LINES.slice(0, 6).join('\n')), 'text before the hole intact');
  }
});

test('"Regenerate selection" is offered for a selection', async () => {
  const actions = await conn.sendRequest(P.CodeActionRequest.type, {
    textDocument: { uri: URI }, range: { start: { line: 2, character: 4 }, end: { line: 2, character: 14 } },
    context: { diagnostics: [] },
  });
  assert.ok(actions.some((a) => a.title === 'dgls: Regenerate selection'), JSON.stringify(actions));
});

test('dgls.rewrite applies through workspace/applyEdit', async () => {
  const before = doc.text;
  const range = { start: { line: 1, character: 6 }, end: { line: 1, character: LINES[1].length } };
  const result = await conn.sendRequest(P.ExecuteCommandRequest.type, {
    command: 'dgls.rewrite', arguments: [URI, range, 'return it in upper case'],
  });
  assert.deepEqual(result, { applied: true, reason: null });
  assert.equal(seen.applyEdit.length, 1);
  assert.notEqual(doc.text, before);
  assert.ok(doc.text.startsWith(`${LINES[0]}\n    # `), 'text before the range intact');
  assert.ok(doc.text.endsWith(LINES.slice(2).join('\n')), 'text after the range intact');
  await setText(before);
});

test('a cancelled request answers RequestCancelled; the next one works', async () => {
  const cts = new rpc.CancellationTokenSource();
  const pending = conn.sendRequest(P.InlineCompletionRequest.type, inlineParams(P.InlineCompletionTriggerKind.Automatic), cts.token);
  setTimeout(() => cts.cancel(), 50); // inside the server's 500 ms debounce
  await assert.rejects(pending, (e) => e instanceof rpc.ResponseError && e.code === P.LSPErrorCodes.RequestCancelled);
  const res = await conn.sendRequest(P.InlineCompletionRequest.type, inlineParams(P.InlineCompletionTriggerKind.Invoked));
  assert.ok((Array.isArray(res) ? res : res.items).length >= 1);
});
