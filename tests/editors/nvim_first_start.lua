-- The first start as a new user meets it (issue [ux]): `require('dgls').setup{}` with no options at all, in a
-- project whose .venv holds dgls, must report nothing (no warning, no message, no hit-enter prompt) and reach
-- "ready"; the ghost-text highlight must be visible without 'termguicolors'; a missing server executable gives
-- exactly one notification that says what to set, and nothing else.
-- Run: DGLS_SERVER=.venv/bin/dgls nvim --headless --clean -c 'luafile tests/editors/nvim_first_start.lua'
local function log(...)
  io.stdout:write(table.concat(vim.tbl_map(tostring, { ... }), ' ') .. '\n')
end

local here = vim.fn.fnamemodify(debug.getinfo(1, 'S').source:sub(2), ':p:h')
local repo = vim.fs.normalize(here .. '/../..')
local SERVER = vim.fn.fnamemodify(os.getenv('DGLS_SERVER') or (repo .. '/.venv/bin/dgls'), ':p')

--- A child Neovim that records every notification and every message before the plugin loads.
local function child()
  local id = vim.fn.jobstart({ vim.v.progpath, '--embed', '--headless', '--clean', '-n' }, { rpc = true })
  assert(id > 0, 'cannot start the child nvim')
  vim.rpcrequest(id, 'nvim_exec_lua', [[
    vim.opt.rtp:prepend(...)
    _G.notes = {}
    vim.notify = function(msg, level) table.insert(_G.notes, { msg = msg, level = level }) end
  ]], { repo .. '/editors/nvim' })
  return id
end

local function c(id, code, ...)
  return vim.rpcrequest(id, 'nvim_exec_lua', code, { ... })
end

local function reported(id)
  local messages = vim.rpcrequest(id, 'nvim_exec2', 'messages', { output = true }).output
  return c(id, 'return _G.notes'), messages
end

local ok, err = xpcall(function()
  assert(vim.fn.executable(SERVER) == 1, 'dgls server not executable: ' .. SERVER)
  -- a project: pyproject.toml and .venv/bin/dgls (a link to this environment's server), found by setup{}'s defaults
  local project = vim.fn.tempname()
  vim.fn.mkdir(project .. '/.venv/bin', 'p')
  vim.fn.writefile({ '[project]', 'name = "demo"' }, project .. '/pyproject.toml')
  assert(vim.uv.fs_symlink(SERVER, project .. '/.venv/bin/dgls'))
  vim.fn.writefile({ 'def add(a, b):', '    return a + b' }, project .. '/demo.py')

  -- 1) setup{} exactly as the README says, then a Python file: ready, and nothing reported
  local a = child()
  c(a, "require('dgls').setup{}; vim.cmd.edit(...)", project .. '/demo.py')
  local ready = vim.wait(120000, function()
    return c(a, [[local d = require('dgls'); local cl = d.client(0)
      return cl ~= nil and d.status[cl.id] ~= nil and d.status[cl.id].state ~= 'loading']])
  end, 50)
  assert(ready, 'the server did not finish loading')
  local state = c(a, "local d = require('dgls'); return d.status[d.client(0).id].state")
  assert(state == 'ready', 'state: ' .. tostring(state))
  vim.wait(300, function() return false end) -- a warning sent with the settings would arrive by now
  local notes, messages = reported(a)
  assert(#notes == 0, 'notifications at start: ' .. vim.inspect(notes))
  assert(messages == '', 'messages at start: ' .. messages)
  log('setup{}: ready, no notification, no message')

  -- 2) the ghost highlight has a terminal colour and italics, so it differs from typed text without termguicolors
  local hl = c(a, "return vim.api.nvim_get_hl(0, { name = 'DglsGhost', link = false })")
  assert(hl.ctermfg ~= nil and hl.italic == true and hl.cterm ~= nil and hl.cterm.italic == true,
    'DglsGhost: ' .. vim.inspect(hl))
  log('DglsGhost:', vim.inspect(hl))
  vim.fn.jobstop(a)

  -- 3) a missing executable: one notification saying what to set, no error message, no second report
  local b = child()
  c(b, "require('dgls').setup{ cmd = { '/nonexistent/dgls', '--stdio' } }; vim.cmd.edit(...)", project .. '/demo.py')
  c(b, 'vim.cmd.edit(...)', project .. '/pyproject.toml.py')
  vim.wait(1000, function() return false end)
  notes, messages = reported(b)
  assert(#notes == 1 and notes[1].msg:find("setup{ cmd =", 1, true), 'notifications: ' .. vim.inspect(notes))
  assert(messages == '', 'messages: ' .. messages)
  log('missing executable:', notes[1].msg)
  vim.fn.jobstop(b)
end, debug.traceback)

if ok then
  log('NVIM OK')
  vim.cmd('qa!')
else
  log('FAILED: ' .. tostring(err))
  vim.cmd('cq')
end
