# The pinned Python venvs of scripts/ (sourced, not run).
#
# ensure_venv DIR PIN...: the venv DIR with exactly these `name==version` pins. Created when
#   missing; pins whose package is absent are installed; a package present at another version is
#   refused (the outputs of these scripts are only meaningful with the pinned versions), naming
#   the pin, and the function returns 1.
# venv_has_pin PYTHON PIN: whether the venv of PYTHON has exactly that version.

venv_pin_state() { # PYTHON PIN -> prints ok, absent or other
  local name="${2%%==*}"
  "$1" - "${name%%\[*}" "${2##*==}" <<'PYEOF'
import sys
from importlib.metadata import PackageNotFoundError, version
try:
    print("ok" if version(sys.argv[1]) == sys.argv[2] else "other")
except PackageNotFoundError:
    print("absent")
PYEOF
}

venv_has_pin() {
  [[ "$(venv_pin_state "$1" "$2" 2>/dev/null)" == ok ]]
}

ensure_venv() {
  local venv="$1" py="$1/bin/python" pin state missing=() other=()
  shift
  if [[ ! -x "$py" ]]; then
    echo "creating the venv $venv" >&2
    python3 -m venv "$venv"
    "$venv/bin/pip" install --quiet --upgrade pip
  fi
  for pin in "$@"; do
    state="$(venv_pin_state "$py" "$pin")"
    case "$state" in
      absent) missing+=("$pin") ;;
      other) other+=("$pin") ;;
    esac
  done
  if ((${#other[@]})); then
    echo "$venv does not match the pins ${other[*]} (another version is installed)" >&2
    return 1
  fi
  if ((${#missing[@]})); then
    echo "installing ${missing[*]} into $venv" >&2
    "$venv/bin/pip" install --quiet "${missing[@]}"
  fi
  for pin in "$@"; do
    venv_has_pin "$py" "$pin" || { echo "$venv does not match the pin $pin" >&2; return 1; }
  done
}
