-- Ghost text from textDocument/inlineCompletion. On 0.12+ this hands over to vim.lsp.inline_completion; on 0.11
-- it requests itself (debounced in Insert mode, cancelled when the cursor moves) and draws extmarks: the first
-- line inline at the cursor, the others as virtual lines below it.
local M = {}

M.ns = vim.api.nvim_create_namespace('dgls.ghost')

--- Per buffer: client, timer, req (in-flight request id), pos ({row, col} of the cursor it is for), tick
--- (changedtick it was asked on), own_tick (changedtick after a partial accept), items ({text, sr, sc, er, ec}:
--- byte positions, 0-based; command: the item's `dgls.accepted` command; unsure: {{from, to}, ...} byte ranges
--- of text, 0-based, end exclusive, that the model was unsure of), index, invoked (the items came from an
--- Invoked request).
local state = {} ---@type table<integer, table>

local INVOKED, AUTOMATIC = 1, 2

local function resolve(bufnr)
  return (bufnr == nil or bufnr == 0) and vim.api.nvim_get_current_buf() or bufnr
end

local function builtin(opts)
  return opts.ghost.builtin and vim.lsp.inline_completion ~= nil
end

local function cursor()
  local pos = vim.api.nvim_win_get_cursor(0)
  return { pos[1] - 1, pos[2] }
end

local function line_at(bufnr, row)
  return vim.api.nvim_buf_get_lines(bufnr, row, row + 1, false)[1] or ''
end

--- Remove the ghost text (the request, if any, is left alone).
function M.clear(bufnr)
  bufnr = resolve(bufnr)
  local s = state[bufnr]
  if s then
    s.items, s.index = nil, nil
  end
  if vim.api.nvim_buf_is_valid(bufnr) then
    vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  end
end

--- Cancel the pending timer and in-flight request ($/cancelRequest), and remove the ghost text.
function M.dismiss(bufnr)
  bufnr = resolve(bufnr)
  local s = state[bufnr]
  if not s then
    return
  end
  s.timer:stop()
  if s.req then
    s.client:cancel_request(s.req)
    s.req = nil
  end
  M.clear(bufnr)
end

--- Whether ghost text is shown in `bufnr`.
function M.visible(bufnr)
  bufnr = resolve(bufnr)
  local s = state[bufnr]
  return s ~= nil and s.items ~= nil
end

--- The shown item: { text, sr, sc, er, ec } (byte positions), or nil.
function M.current(bufnr)
  bufnr = resolve(bufnr)
  local s = state[bufnr]
  return s and s.items and s.items[s.index]
end

--- The in-flight request id, or nil.
function M.pending(bufnr)
  bufnr = resolve(bufnr)
  return state[bufnr] and state[bufnr].req
end

--- One line of ghost text (starting at byte `at` of the item's text) as virt_text chunks.
local function highlighted(line, at, unsure)
  local chunks, pos = {}, 0 -- pos: bytes of `line` already in chunks
  for _, r in ipairs(unsure) do
    local from, to = math.max(r[1] - at, pos), math.min(r[2] - at, #line)
    if from < to then
      if from > pos then
        table.insert(chunks, { line:sub(pos + 1, from), 'DglsGhost' })
      end
      table.insert(chunks, { line:sub(from + 1, to), 'DglsGhostUnsure' })
      pos = to
    end
  end
  if pos < #line or #chunks == 0 then
    table.insert(chunks, { line:sub(pos + 1), 'DglsGhost' })
  end
  return chunks
end

local function draw(bufnr)
  vim.api.nvim_buf_clear_namespace(bufnr, M.ns, 0, -1)
  local item = M.current(bufnr)
  if not item then
    return
  end
  local text = item.text
  if item.er == item.sr and item.ec > item.sc and not text:find('\n', 1, true) then
    -- The edit replaces text after the cursor (closers): do not show what is already there twice.
    local replaced = line_at(bufnr, item.sr):sub(item.sc + 1, item.ec)
    if text:sub(-#replaced) == replaced then
      text = text:sub(1, #text - #replaced)
    end
  end
  local lines = vim.split(text, '\n', { plain = true })
  local chunks, at = {}, 0 -- each line as virt_text chunks: DglsGhost, DglsGhostUnsure where the model was unsure
  for i, l in ipairs(lines) do
    chunks[i] = highlighted(l, at, item.unsure or {})
    at = at + #l + 1
  end
  local mark = { virt_text = chunks[1], virt_text_pos = 'inline', hl_mode = 'combine' }
  if #lines > 1 then
    mark.virt_lines = vim.list_slice(chunks, 2)
  end
  vim.api.nvim_buf_set_extmark(bufnr, M.ns, item.sr, item.sc, mark)
end

--- The ranges of `text` the model was unsure of, in bytes: from the `unsure` ranges (in `enc` units) that dgls
--- sends in the second argument of an item's command.
local function unsure_ranges(text, command, enc)
  local info = type(command) == 'table' and type(command.arguments) == 'table' and command.arguments[2]
  local out = {}
  for _, r in ipairs(type(info) == 'table' and type(info.unsure) == 'table' and info.unsure or {}) do
    local ok_from, from = pcall(vim.str_byteindex, text, enc, r[1], false)
    local ok_to, to = pcall(vim.str_byteindex, text, enc, r[2], false)
    if ok_from and ok_to and from < to then
      table.insert(out, { from, to })
    end
  end
  return out
end

--- LSP items -> byte-positioned items on the buffer as it is now (the caller checked it did not change).
local function convert(bufnr, result, pos, enc)
  local items = {}
  for _, it in ipairs(result and (result.items or result) or {}) do
    local text = type(it.insertText) == 'table' and it.insertText.value or it.insertText
    local r = it.range or { start = { line = pos[1] }, ['end'] = { line = pos[1] } }
    local sr, er = r.start.line, r['end'].line
    local sc = it.range and vim.str_byteindex(line_at(bufnr, sr), enc, r.start.character, false) or pos[2]
    local ec = it.range and vim.str_byteindex(line_at(bufnr, er), enc, r['end'].character, false) or pos[2]
    if type(text) == 'string' and text ~= '' then
      table.insert(items, { text = text, sr = sr, sc = sc, er = er, ec = ec, command = it.command,
        unsure = unsure_ranges(text, it.command, enc) })
    end
  end
  return items
end

--- Ask for ghost text at the cursor. `kind`: 1 Invoked (several candidates), 2 Automatic (typing).
---@param on_done fun(items: table[])? called with the shown items (not called when cancelled)
function M.request(bufnr, kind, on_done)
  bufnr = resolve(bufnr)
  local s = state[bufnr]
  if not s then
    return
  end
  M.dismiss(bufnr)
  local pos, enc = cursor(), s.client.offset_encoding
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    position = { line = pos[1], character = vim.str_utfindex(line_at(bufnr, pos[1]), enc, pos[2], false) },
    context = { triggerKind = kind },
  }
  local tick = vim.api.nvim_buf_get_changedtick(bufnr)
  local ok, id
  ok, id = s.client:request('textDocument/inlineCompletion', params, function(err, result)
    if s.req ~= id then
      return -- superseded
    end
    s.req = nil
    local here = cursor()
    if err or vim.api.nvim_get_current_buf() ~= bufnr or vim.api.nvim_buf_get_changedtick(bufnr) ~= tick
      or here[1] ~= pos[1] or here[2] ~= pos[2] then
      return
    end
    local items = convert(bufnr, result, pos, enc)
    if #items > 0 then
      s.items, s.index, s.pos, s.tick, s.invoked = items, 1, pos, tick, kind == INVOKED
      draw(bufnr)
    end
    if on_done then
      on_done(items)
    end
  end, bufnr)
  s.req, s.pos, s.tick = ok and id or nil, pos, tick
  return s.req
end

--- Show the next (delta 1) or previous (-1) candidate; the first time, ask for all candidates.
function M.cycle(bufnr, delta)
  bufnr = resolve(bufnr)
  local s = state[bufnr]
  if not s then
    return
  end
  if not s.invoked or not s.items then
    return M.request(bufnr, INVOKED, function(items)
      if #items > 1 and delta ~= 0 then
        s.index = delta > 0 and 2 or #items
        draw(bufnr)
      end
    end)
  end
  s.index = (s.index - 1 + delta) % #s.items + 1
  draw(bufnr)
end

--- Tell the server what became of `item` (the acceptance signals it counts in memory, see `dgls.stats`): the
--- item's own command on a full accept, `dgls.partiallyAccepted` {id, chars} or `dgls.dismissed` {id}.
local function signal(s, bufnr, item, command, extra)
  local cmd = item.command
  if type(cmd) ~= 'table' or type(cmd.arguments) ~= 'table' then
    return -- not from dgls (or an older server): nothing to report
  end
  local args = command and { cmd.arguments[1], extra } or cmd.arguments
  s.client:request('workspace/executeCommand', { command = command or cmd.command, arguments = args },
    function() end, bufnr)
end

local function chunk_of(text, what)
  if what == 'line' then
    return text:match('^[^\n]*\n') or text
  end
  return text:match('^%s*[%w_]+') or text:match('^%s*[^%w_%s]+') or text:match('^%s+') or text
end

--- Accept the ghost text: all of it, or its next 'word' or 'line'. Returns false when none is shown.
---@param what 'all'|'word'|'line'|nil
function M.accept(bufnr, what)
  bufnr = resolve(bufnr)
  local s, item = state[bufnr], M.current(bufnr)
  if not item then
    return false
  end
  local chunk = what and what ~= 'all' and chunk_of(item.text, what) or item.text
  local lines = vim.split(chunk, '\n', { plain = true })
  local last = #lines[#lines]
  local row = item.sr + #lines - 1
  local col = (#lines == 1 and item.sc or 0) + last
  M.dismiss(bufnr)
  if chunk == item.text then
    vim.api.nvim_buf_set_text(bufnr, item.sr, item.sc, item.er, item.ec, lines)
    signal(s, bufnr, item)
  else
    -- Partial: insert the chunk, keep the rest as ghost text (its range moves with the inserted text).
    vim.api.nvim_buf_set_text(bufnr, item.sr, item.sc, item.sr, item.sc, lines)
    local er, ec = item.er + #lines - 1, item.ec
    if item.er == item.sr then
      ec = col + (item.ec - item.sc)
    end
    signal(s, bufnr, item, 'dgls.partiallyAccepted', vim.str_utfindex(chunk, 'utf-32'))
    local unsure = vim.tbl_map(function(r) return { r[1] - #chunk, r[2] - #chunk } end, item.unsure or {})
    s.items, s.index = { { text = item.text:sub(#chunk + 1), sr = row, sc = col, er = er, ec = ec,
      command = item.command, unsure = unsure } }, 1
    s.pos, s.own_tick = { row, col }, vim.api.nvim_buf_get_changedtick(bufnr)
    draw(bufnr)
  end
  vim.api.nvim_win_set_cursor(0, { row + 1, col })
  return true
end

--- Dismiss the shown ghost text at the user's request and tell the server (`dgls.dismissed`). Returns false
--- when none is shown.
function M.reject(bufnr)
  bufnr = resolve(bufnr)
  local s, item = state[bufnr], M.current(bufnr)
  M.dismiss(bufnr)
  if item then
    signal(s, bufnr, item, 'dgls.dismissed')
  end
  return item ~= nil
end

local function on_change(bufnr, opts)
  local s = state[bufnr]
  if not s or vim.api.nvim_buf_get_changedtick(bufnr) == s.own_tick then
    return -- our own partial accept
  end
  M.dismiss(bufnr)
  s.pos = nil -- the debounced request goes out at wherever the cursor is then
  if opts.ghost.auto_trigger then
    s.timer:start(opts.ghost.debounce_ms, 0, vim.schedule_wrap(function()
      if state[bufnr] and vim.api.nvim_get_current_buf() == bufnr and vim.fn.mode():sub(1, 1) == 'i' then
        M.request(bufnr, AUTOMATIC)
      end
    end))
  end
end

local function on_move(bufnr)
  local s = state[bufnr]
  if s and s.pos then
    local here = cursor()
    if here[1] ~= s.pos[1] or here[2] ~= s.pos[2] then
      M.dismiss(bufnr)
    end
  end
end

--- Insert-mode keymaps; a key does its usual thing when there is no ghost text.
local function map_keys(bufnr, opts)
  local km = opts.keymaps
  local function map(lhs, fn, desc)
    if not lhs then
      return
    end
    vim.keymap.set('i', lhs, function()
      if not fn() then
        vim.api.nvim_feedkeys(vim.keycode(lhs), 'n', false)
      end
    end, { buffer = bufnr, desc = 'dgls: ' .. desc })
  end
  if builtin(opts) then
    local ic = vim.lsp.inline_completion
    map(km.accept, function() return ic.get() end, 'accept ghost text')
    map(km.next, function() ic.select({ count = 1 }) return true end, 'next candidate')
    map(km.prev, function() ic.select({ count = -1 }) return true end, 'previous candidate')
    return
  end
  map(km.accept, function() return M.accept(bufnr, 'all') end, 'accept ghost text')
  map(km.accept_word, function() return M.accept(bufnr, 'word') end, 'accept a word of the ghost text')
  map(km.accept_line, function() return M.accept(bufnr, 'line') end, 'accept a line of the ghost text')
  map(km.next, function() M.cycle(bufnr, 1) return true end, 'next candidate')
  map(km.prev, function() M.cycle(bufnr, -1) return true end, 'previous candidate')
  map(km.dismiss, function() return M.reject(bufnr) end, 'dismiss ghost text')
end

function M.attach(bufnr, client, opts)
  if state[bufnr] then
    return
  end
  if builtin(opts) then
    vim.lsp.inline_completion.enable(true, { bufnr = bufnr })
    state[bufnr] = { client = client, timer = assert(vim.uv.new_timer()), builtin = true }
    map_keys(bufnr, opts)
    return
  end
  state[bufnr] = { client = client, timer = assert(vim.uv.new_timer()) }
  local group = vim.api.nvim_create_augroup('dgls.ghost.' .. bufnr, { clear = true })
  local function au(events, fn)
    vim.api.nvim_create_autocmd(events, { group = group, buffer = bufnr, callback = fn })
  end
  au({ 'InsertEnter', 'TextChangedI', 'TextChangedP' }, function() on_change(bufnr, opts) end)
  au('CursorMovedI', function() on_move(bufnr) end)
  au({ 'InsertLeave', 'BufLeave' }, function() M.dismiss(bufnr) end)
  map_keys(bufnr, opts)
end

function M.detach(bufnr)
  local s = state[bufnr]
  if not s then
    return
  end
  if not s.builtin then
    M.dismiss(bufnr)
    pcall(vim.api.nvim_del_augroup_by_name, 'dgls.ghost.' .. bufnr)
  end
  s.timer:close()
  state[bufnr] = nil
end

return M
