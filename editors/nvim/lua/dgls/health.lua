-- :checkhealth dgls: Neovim version, the server executable and version, the model and device.
local M = {}

function M.check()
  local h = vim.health
  local dgls = require('dgls')
  h.start('dgls: Neovim')
  if vim.fn.has('nvim-0.11') == 1 then
    h.ok(('Neovim %s'):format(tostring(vim.version())))
  else
    h.error('Neovim 0.11 or newer is required (vim.lsp.config / vim.lsp.enable)')
  end
  local builtin = vim.lsp.inline_completion ~= nil and (dgls.config or dgls.defaults).ghost.builtin
  h.info('ghost text: ' .. (builtin and 'vim.lsp.inline_completion (built in)' or 'dgls extmarks (0.11 mode)'))
  if not dgls.config then
    h.warn("require('dgls').setup() has not been called", { "call require('dgls').setup({}) in your config" })
  end

  h.start('dgls: server')
  local root = vim.fs.root(0, (dgls.config or dgls.defaults).root_markers)
  local cmd, where = dgls.resolve_cmd(root)
  if vim.fn.executable(cmd[1]) ~= 1 then
    h.error(('server executable not found: %s (%s)'):format(cmd[1], where),
      { 'pip install dgls into the project .venv or onto PATH', "or setup({ cmd = { '/path/to/dgls', '--stdio' } })" })
    return
  end
  h.ok(('executable (%s): %s'):format(where, table.concat(cmd, ' ')))
  -- the same program without the transport flag: `dgls --version`, `dgls doctor`
  local base = vim.tbl_filter(function(a) return a ~= '--stdio' end, cmd)
  local version = vim.system(vim.list_extend(vim.deepcopy(base), { '--version' }), { text = true }):wait(20000)
  if version.code == 0 then
    h.ok('server version: ' .. vim.trim(version.stdout))
  else
    h.error('`--version` failed: ' .. vim.trim(version.stderr or ''))
  end
  local settings = (dgls.config or dgls.defaults).settings
  local doctor_cmd = vim.list_extend(vim.deepcopy(base), { 'doctor', '--json', '--model', settings.model or 'dgls-tiny' })
  local doctor = vim.system(doctor_cmd, { text = true }):wait(60000)
  local ok, report = pcall(vim.json.decode, doctor.stdout or '')
  if not ok or type(report) ~= 'table' then
    h.warn('`dgls doctor` gave no report: ' .. vim.trim(doctor.stderr or ''))
  else
    local model = report.model or {}
    if model.error then
      h.error('model: ' .. model.error)
    else
      h.ok(('model: %s (%s, %s parameters)'):format(model.name, model.path, tostring(model.params)))
    end
    h.info('device available: ' .. tostring(report.device))
  end

  h.start('dgls: running clients')
  local clients = vim.lsp.get_clients({ name = dgls.name })
  if #clients == 0 then
    h.info('no dgls client running (open a file the server covers)')
  end
  for _, c in ipairs(clients) do
    local s = dgls.status[c.id] or {}
    local line = ('client %d: %s, model %s on %s'):format(c.id, s.state or 'starting', tostring(s.model),
      tostring(s.device))
    if s.state == 'error' then
      h.error(line .. ': ' .. tostring(s.error))
    else
      h.ok(line)
    end
  end
end

return M
