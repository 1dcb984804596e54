# Debian packages that the check scripts need (sourced, not run).
#
# ensure_debian_package COMMAND PACKAGE: installs PACKAGE with apt-get (through sudo when not
#   root) unless COMMAND is on the PATH already.
ensure_debian_package() {
  command -v "$1" >/dev/null && return 0
  local sudo=""
  [[ "$(id -u)" == 0 ]] || sudo=sudo
  $sudo apt-get update -qq && $sudo apt-get install -y -qq "$2" >/dev/null
}
