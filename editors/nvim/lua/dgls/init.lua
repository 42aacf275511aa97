-- dgls for Neovim 0.11+: starts `dgls --stdio` through vim.lsp.config/vim.lsp.enable, shows its inline
-- completions as ghost text (lua/dgls/ghost.lua, or vim.lsp.inline_completion on 0.12+) and adds commands.
local M = {}

M.name = 'dgls'

M.defaults = {
  cmd = nil, -- string[]; nil: <root>/.venv/bin/dgls, <root>/venv/bin/dgls, $VIRTUAL_ENV/bin/dgls, then dgls on PATH
  filetypes = nil, -- string[]; nil: every file buffer (the server's `languages` setting filters)
  root_markers = { 'pyproject.toml', 'setup.py', '.git' },
  settings = {}, -- server settings, camelCase as in the server's docs: { model = 'dgls-tiny', steps = 8, ... }
  ghost = {
    enabled = true,
    auto_trigger = true, -- ask while typing in Insert mode (else only on next/prev)
    debounce_ms = 30, -- client-side wait after a keystroke; the server waits settings.debounceMs more
    builtin = true, -- on 0.12+, use vim.lsp.inline_completion instead of lua/dgls/ghost.lua
  },
  keymaps = {
    accept = '<M-l>',
    accept_word = '<M-Right>',
    accept_line = '<M-Down>',
    next = '<M-]>',
    prev = '<M-[>',
    dismiss = '<C-]>',
  },
}

M.config = nil ---@type table? the options after setup()
M.status = {} ---@type table<integer, table> client id -> last dgls/status
M.last_cmd = nil ---@type string[]? the last command line started

local function validate(opts)
  vim.validate('opts', opts, 'table')
  vim.validate('opts.cmd', opts.cmd, 'table', true)
  vim.validate('opts.filetypes', opts.filetypes, 'table', true)
  vim.validate('opts.root_markers', opts.root_markers, 'table')
  vim.validate('opts.settings', opts.settings, 'table')
  vim.validate('opts.ghost', opts.ghost, 'table')
  vim.validate('opts.ghost.enabled', opts.ghost.enabled, 'boolean')
  vim.validate('opts.ghost.auto_trigger', opts.ghost.auto_trigger, 'boolean')
  vim.validate('opts.ghost.debounce_ms', opts.ghost.debounce_ms, 'number')
  vim.validate('opts.ghost.builtin', opts.ghost.builtin, 'boolean')
  vim.validate('opts.keymaps', opts.keymaps, 'table')
  for action in pairs(M.defaults.keymaps) do
    local key = opts.keymaps[action]
    vim.validate('opts.keymaps.' .. action, key, function(v)
      return v == false or type(v) == 'string'
    end, 'a key (string) or false')
  end
  for action in pairs(opts.keymaps) do
    if M.defaults.keymaps[action] == nil then
      error(('opts.keymaps.%s: unknown action (expected one of accept, accept_word, accept_line, next, prev, dismiss)')
        :format(action))
    end
  end
end

--- The server command for a project root: opts.cmd, else the first dgls found (see M.defaults.cmd).
---@param root string?
---@return string[] cmd, string where
function M.resolve_cmd(root)
  local cfg = M.config or M.defaults
  if cfg.cmd then
    return cfg.cmd, 'setup{cmd}'
  end
  local candidates = {}
  for _, dir in ipairs({ root, vim.fn.getcwd() }) do
    if dir then
      table.insert(candidates, { vim.fs.joinpath(dir, '.venv', 'bin', 'dgls'), 'project .venv' })
      table.insert(candidates, { vim.fs.joinpath(dir, 'venv', 'bin', 'dgls'), 'project venv' })
    end
  end
  if vim.env.VIRTUAL_ENV then
    table.insert(candidates, { vim.fs.joinpath(vim.env.VIRTUAL_ENV, 'bin', 'dgls'), '$VIRTUAL_ENV' })
  end
  for _, c in ipairs(candidates) do
    if vim.fn.executable(c[1]) == 1 then
      return { c[1], '--stdio' }, c[2]
    end
  end
  local exe = vim.fn.exepath('dgls')
  return { exe ~= '' and exe or 'dgls', '--stdio' }, exe ~= '' and 'PATH' or 'not found'
end

local function on_status(_, result, ctx)
  M.status[ctx.client_id] = result
  vim.api.nvim_exec_autocmds('User', { pattern = 'DglsStatus', data = result, modeline = false })
end

--- The dgls client attached to a buffer (default: current), if any.
---@param bufnr integer?
---@return vim.lsp.Client?
function M.client(bufnr)
  return vim.lsp.get_clients({ bufnr = bufnr or 0, name = M.name })[1]
end

--- `t`, or an empty dict when it is empty: an empty Lua table encodes as a JSON array ([]), not an object.
local function as_object(t)
  return next(t) == nil and vim.empty_dict() or t
end

--- An RPC client that is already closed: what the client gets when there is no server to start, so that Neovim
--- neither spawns nor reports a spawn failure (with a traceback and a hit-enter prompt) after our own message.
local function closed_rpc()
  return {
    request = function() return false end,
    notify = function() return false end,
    is_closing = function() return true end,
    terminate = function() end,
  }
end

local missing_reported = {} ---@type table<string, boolean> executables already reported missing

--- window/showMessage as one notification (Neovim's own handler writes it with a line break, which asks the user
--- to press ENTER when it comes in Insert mode, as the "not trained on go" notice does while typing).
local function on_message(_, params)
  if type(params) ~= 'table' or type(params.message) ~= 'string' then
    return
  end
  local levels = vim.log.levels
  local level = ({ levels.ERROR, levels.WARN, levels.INFO, levels.DEBUG })[params.type] or levels.INFO
  vim.schedule(function()
    vim.notify('dgls: ' .. params.message, level)
  end)
end

local function lsp_config(opts)
  return {
    cmd = function(dispatchers, config)
      local cmd, where = M.resolve_cmd(config.root_dir)
      M.last_cmd = cmd
      local line = table.concat(vim.tbl_map(vim.fn.shellescape, cmd), ' ')
      vim.lsp.log.info('dgls: starting the server (' .. where .. '): ' .. line)
      if vim.fn.executable(cmd[1]) ~= 1 then
        if not missing_reported[cmd[1]] then
          missing_reported[cmd[1]] = true
          local found = where == 'not found' and 'no dgls executable found (project .venv, $VIRTUAL_ENV, PATH)'
            or ('%s is not an executable (%s)'):format(cmd[1], where)
          vim.notify(('dgls: %s; install dgls (pip install dgls) or set ' ..
            "require('dgls').setup{ cmd = { '/path/to/dgls', '--stdio' } }"):format(found), vim.log.levels.ERROR)
        end
        return closed_rpc()
      end
      return vim.lsp.rpc.start(cmd, dispatchers, { cwd = config.cmd_cwd, env = config.cmd_env })
    end,
    filetypes = opts.filetypes,
    root_markers = opts.root_markers,
    init_options = as_object(opts.settings),
    settings = { dgls = as_object(opts.settings) },
    handlers = { ['dgls/status'] = on_status, ['window/showMessage'] = on_message },
  }
end

--- Configure and enable dgls. Safe to call again (new options replace the old ones).
---@param opts table? see M.defaults
function M.setup(opts)
  opts = vim.tbl_deep_extend('force', vim.deepcopy(M.defaults), opts or {})
  validate(opts)
  M.config = opts
  -- Grey italics in both colour modes: linked to Comment it had only a GUI colour without 'termguicolors' (tmux),
  -- and ghost text looked like typed text. `default`: a colour scheme's or the user's own DglsGhost wins.
  vim.api.nvim_set_hl(0, 'DglsGhost', { default = true, fg = '#808080', ctermfg = 244, italic = true,
    cterm = { italic = true } })
  -- The tokens the model was unsure of (confidence at most the `lowConfidence` setting): grey italics too, but
  -- darker and underdotted, so a doubtful part stands out without looking like typed text.
  vim.api.nvim_set_hl(0, 'DglsGhostUnsure', { default = true, fg = '#5f5f5f', ctermfg = 240, italic = true,
    underdotted = true, cterm = { italic = true, underline = true } })
  vim.lsp.config(M.name, lsp_config(opts))
  vim.lsp.enable(M.name)
  require('dgls.commands').create()
  local group = vim.api.nvim_create_augroup('dgls.attach', { clear = true })
  vim.api.nvim_create_autocmd('LspAttach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == M.name and opts.ghost.enabled then
        require('dgls.ghost').attach(ev.buf, client, opts)
      end
    end,
  })
  vim.api.nvim_create_autocmd('LspDetach', {
    group = group,
    callback = function(ev)
      local client = vim.lsp.get_client_by_id(ev.data.client_id)
      if client and client.name == M.name then
        require('dgls.ghost').detach(ev.buf)
      end
    end,
  })
end

--- Send new server settings (merged into the current ones) to running clients.
---@param settings table camelCase server settings
function M.update_settings(settings)
  vim.validate('settings', settings, 'table')
  assert(M.config, 'dgls: call setup() first')
  M.config.settings = vim.tbl_deep_extend('force', M.config.settings, settings)
  vim.lsp.config(M.name, lsp_config(M.config))
  for _, client in ipairs(vim.lsp.get_clients({ name = M.name })) do
    client.settings = { dgls = as_object(M.config.settings) }
    client:notify('workspace/didChangeConfiguration', { settings = client.settings })
  end
end

--- A short status for a statusline: "dgls: ready cpu 180ms" (empty when no client is attached).
function M.statusline()
  local client = M.client(0)
  local s = client and M.status[client.id]
  if not s then
    return client and 'dgls' or ''
  end
  local out = 'dgls: ' .. s.state
  if s.state == 'ready' then
    out = out .. (s.device and (' ' .. s.device) or '')
    if s.lastLatencyMs then
      out = out .. (' %dms'):format(s.lastLatencyMs)
    end
  end
  return out
end

return M
