-- User commands: :DglsRewrite, :DglsFillHoles, :DglsRestart, :DglsStatus.
-- a resolve refused because the buffer changed since the action was offered: LSP ContentModified, or the
-- RequestFailed dgls answers for a stale action
local STALE = { [-32801] = true, [-32803] = true }
local M = {}

local function dgls()
  return require('dgls')
end

local function client_or_warn(bufnr)
  local client = dgls().client(bufnr)
  if not client then
    vim.notify('dgls: no dgls client is attached to this buffer', vim.log.levels.WARN)
  end
  return client
end

--- The LSP range of a command's line range (or of the charwise visual selection it came from).
local function command_range(bufnr, cmd, enc)
  local l1, l2 = cmd.line1 - 1, cmd.line2 - 1
  local vs, ve = vim.api.nvim_buf_get_mark(bufnr, '<'), vim.api.nvim_buf_get_mark(bufnr, '>')
  if cmd.range > 0 and vim.fn.visualmode() == 'v' and vs[1] - 1 == l1 and ve[1] - 1 == l2 then
    return vim.lsp.util.make_given_range_params(vs, ve, bufnr, enc).range
  end
  local last = vim.api.nvim_buf_get_lines(bufnr, l2, l2 + 1, false)[1] or ''
  return {
    start = { line = l1, character = 0 },
    ['end'] = { line = l2, character = vim.str_utfindex(last, enc, #last, false) },
  }
end

--- Rewrite `range` following `instruction`; the server applies the edit through workspace/applyEdit.
function M.rewrite(bufnr, range, instruction, on_done)
  local client = client_or_warn(bufnr)
  if not client then
    return
  end
  local args = { vim.uri_from_bufnr(bufnr), range, instruction }
  client:request('workspace/executeCommand', { command = 'dgls.rewrite', arguments = args }, function(err, result)
    if err then
      vim.notify('dgls: rewrite failed: ' .. err.message, vim.log.levels.WARN)
    elseif result and result.applied == false and result.reason then
      vim.notify('dgls: rewrite not applied: ' .. result.reason, vim.log.levels.INFO)
    end
    if on_done then
      on_done(err, result)
    end
  end, bufnr)
end

--- Fill the holes of the buffer (or of `range`): the "dgls: Fill ..." code action, resolved and applied.
function M.fill_holes(bufnr, range, on_done, retried)
  local client = client_or_warn(bufnr)
  if not client then
    return
  end
  local params = {
    textDocument = { uri = vim.uri_from_bufnr(bufnr) },
    range = range or { start = { line = 0, character = 0 }, ['end'] = { line = 0, character = 0 } },
    context = { diagnostics = {}, only = { 'refactor.rewrite' }, triggerKind = 1 },
  }
  local function done(err, applied)
    if on_done then
      on_done(err, applied)
    end
  end
  client:request('textDocument/codeAction', params, function(err, actions)
    local fill = vim.iter(actions or {}):find(function(a)
      return type(a.title) == 'string' and vim.startswith(a.title, 'dgls: Fill')
    end)
    if err or not fill then
      vim.notify('dgls: no holes here (a hole is a line holding only a hole marker such as ...)')
      return done(err, false)
    end
    client:request('codeAction/resolve', fill, function(rerr, resolved)
      if rerr and STALE[rerr.code] and not retried then
        -- the buffer changed between the offer and the resolve: ask for the action again, once
        return M.fill_holes(bufnr, range, on_done, true)
      end
      if rerr or not (resolved and resolved.edit) then
        vim.notify('dgls: ' .. (rerr and rerr.message or 'no edit'), vim.log.levels.WARN)
        return done(rerr, false)
      end
      vim.lsp.util.apply_workspace_edit(resolved.edit, client.offset_encoding)
      done(nil, true)
    end, bufnr)
  end, bufnr)
end

--- Stop every dgls client, then start them again on their buffers.
function M.restart()
  local clients = vim.lsp.get_clients({ name = dgls().name })
  for _, c in ipairs(clients) do
    c:stop()
  end
  local timer = assert(vim.uv.new_timer())
  local waited = 0
  timer:start(50, 50, vim.schedule_wrap(function()
    waited = waited + 50
    local running = vim.iter(clients):any(function(c)
      return not c:is_stopped()
    end)
    if running and waited < 5000 then
      return
    end
    timer:stop()
    timer:close()
    for _, c in ipairs(clients) do
      c:stop(true)
    end
    vim.lsp.enable(dgls().name, false)
    vim.lsp.enable(dgls().name)
  end))
end

--- Status lines for :DglsStatus.
function M.status_lines()
  local lines = {}
  local clients = vim.lsp.get_clients({ name = dgls().name })
  if #clients == 0 then
    return { 'dgls: no client running' .. (dgls().config and '' or ' (setup() not called)') }
  end
  for _, c in ipairs(clients) do
    local s = dgls().status[c.id] or {}
    table.insert(lines, ('dgls client %d: %s, root %s, encoding %s'):format(
      c.id, s.state or 'starting', c.root_dir or '(single file)', c.offset_encoding))
    table.insert(lines, '  command: ' .. table.concat(dgls().last_cmd or {}, ' '))
    if s.model then
      table.insert(lines, ('  model: %s on %s (%s)'):format(s.model, s.device or '?', s.dtype or '?'))
    end
    if s.lastLatencyMs then
      table.insert(lines, ('  last completion: %d ms, %s model passes; %d requests'):format(
        s.lastLatencyMs, tostring(s.lastNfe), s.requests or 0))
    end
    if s.error then
      table.insert(lines, '  error: ' .. s.error)
    end
  end
  return lines
end

function M.create()
  vim.api.nvim_create_user_command('DglsRewrite', function(cmd)
    local bufnr = vim.api.nvim_get_current_buf()
    local client = client_or_warn(bufnr)
    if not client then
      return
    end
    local range = command_range(bufnr, cmd, client.offset_encoding)
    if cmd.args ~= '' then
      return M.rewrite(bufnr, range, cmd.args)
    end
    vim.ui.input({ prompt = 'dgls rewrite (instruction): ' }, function(instruction)
      if instruction ~= nil then
        M.rewrite(bufnr, range, instruction)
      end
    end)
  end, { range = true, nargs = '?', desc = 'dgls: rewrite the lines (or selection) following an instruction' })

  vim.api.nvim_create_user_command('DglsFillHoles', function(cmd)
    local bufnr = vim.api.nvim_get_current_buf()
    local client = client_or_warn(bufnr)
    if client then
      M.fill_holes(bufnr, cmd.range > 0 and command_range(bufnr, cmd, client.offset_encoding) or nil)
    end
  end, { range = true, desc = 'dgls: fill the holes (lines holding only ...) of the buffer or range' })

  vim.api.nvim_create_user_command('DglsRestart', M.restart, { desc = 'dgls: restart the server' })

  vim.api.nvim_create_user_command('DglsStatus', function()
    vim.notify(table.concat(M.status_lines(), '\n'))
  end, { desc = 'dgls: client and model status' })
end

return M
