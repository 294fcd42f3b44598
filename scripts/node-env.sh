# Sourced by the project's scripts: puts Node >= 22 on PATH. When the machine's Node is older,
# Node 24 LTS is installed from the npm registry (the `node` package ships the binary) into the
# cache directory outside the repository, once.
AGW_CACHE_DIR=${AGW_CACHE_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/kube-access-gateway}
export AGW_CACHE_DIR
_agw_node_major() { "${1:-node}" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }
if [ "$(_agw_node_major node)" -lt 22 ]; then
  _agw_node_dir=$AGW_CACHE_DIR/node24
  if [ "$(_agw_node_major "$_agw_node_dir/node_modules/.bin/node")" -lt 22 ]; then
    echo "node-env: machine Node is $(node --version 2>/dev/null || echo missing); installing Node 24 from the npm registry" >&2
    mkdir -p "$_agw_node_dir"
    (cd "$_agw_node_dir" && npm install --no-save --no-audit --no-fund --loglevel=error node@24 >&2)
  fi
  [ "$(_agw_node_major "$_agw_node_dir/node_modules/.bin/node")" -ge 22 ] || { echo "node-env: could not install Node 24" >&2; exit 1; }
  export PATH="$_agw_node_dir/node_modules/.bin:$PATH"
fi
