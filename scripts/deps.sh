#!/usr/bin/env bash
# Installs what litefs-rs needs to run and to be tested, on Debian 12 (bookworm):
#
#   - Debian packages: fuse3 (fusermount3), sqlite3, python3 (with its sqlite3 module),
#     pkg-config, libssl-dev (the Consul client's HTTP stack links OpenSSL), curl, and for the
#     fault campaign's disks e2fsprogs and util-linux (usually there already);
#   - /dev/fuse;
#   - the Consul agent, which bookworm does not ship: Debian bullseye's `consul` package
#     (1.8.7) is fetched with `apt-get download` through a temporary sources list that reuses
#     the mirror already configured for bookworm, and unpacked with `dpkg -x` into
#     <repo>/.cache/consul/, so the binary is <repo>/.cache/consul/usr/bin/consul.
#     The system's apt configuration is never changed.
#
# Idempotent and silent when everything is already there. Installing Debian packages and
# creating /dev/fuse need root; as another user it prints the commands to run and exits 1.
#
# Usage: scripts/deps.sh [-v]     (-v: also say where consul is when nothing was installed)
set -euo pipefail

repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
consul_dir="$repo/.cache/consul"
consul_bin="$consul_dir/usr/bin/consul"
keyring=/usr/share/keyrings/debian-archive-keyring.gpg

verbose=0
case "${1:-}" in
  -v | --verbose) verbose=1 ;;
  "") ;;
  *)
    echo "usage: $0 [-v]" >&2
    exit 2
    ;;
esac

export DEBIAN_FRONTEND=noninteractive

say() { echo "deps.sh: $*" >&2; }
die() {
  say "$*"
  exit 1
}

# Runs a command with its output captured; shows the output only if it fails.
quietly() {
  local log status=0
  log=$(mktemp)
  "$@" >"$log" 2>&1 || status=$?
  if ((status != 0)); then
    say "failed ($status): $*"
    cat "$log" >&2
  fi
  rm -f "$log"
  return "$status"
}

is_root() { [[ $(id -u) -eq 0 ]]; }

# --- Debian packages --------------------------------------------------------------------

python_has_sqlite() {
  local py
  for py in python3 /usr/bin/python3; do
    if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import sqlite3' >/dev/null 2>&1; then
      return 0
    fi
  done
  return 1
}

missing=()
command -v fusermount3 >/dev/null 2>&1 || missing+=(fuse3)
command -v sqlite3 >/dev/null 2>&1 || missing+=(sqlite3)
python_has_sqlite || missing+=(python3)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
# OpenSSL's headers: the Consul client's HTTP stack (reqwest 0.11 through rustify) links it.
if ! pkg-config --exists openssl 2>/dev/null && ! [[ -e /usr/include/openssl/ssl.h ]]; then
  missing+=(libssl-dev)
fi
command -v curl >/dev/null 2>&1 || missing+=(curl)
# The fault campaign's disks: ext4 images, loop-mounted, checked after a failure.
command -v mkfs.ext4 >/dev/null 2>&1 || missing+=(e2fsprogs)
command -v findmnt >/dev/null 2>&1 || missing+=(util-linux)
[[ -r $keyring ]] || missing+=(debian-archive-keyring)

need_fuse_dev=0
[[ -e /dev/fuse ]] || need_fuse_dev=1

if ((${#missing[@]} > 0 || need_fuse_dev)) && ! is_root; then
  say "missing: ${missing[*]}$( ((need_fuse_dev)) && echo ' /dev/fuse')"
  say "run as root (or run this script with sudo):"
  if ((${#missing[@]} > 0)); then
    echo "  sudo apt-get update && sudo DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends ${missing[*]}" >&2
  fi
  if ((need_fuse_dev)); then
    echo "  sudo mknod /dev/fuse c 10 229 && sudo chmod 666 /dev/fuse" >&2
  fi
  exit 1
fi

if ((${#missing[@]} > 0)); then
  say "installing Debian packages: ${missing[*]}"
  quietly apt-get update
  quietly apt-get install -y --no-install-recommends -o DPkg::Lock::Timeout=300 "${missing[@]}"
  command -v fusermount3 >/dev/null 2>&1 || die "fusermount3 is still not on PATH"
  python_has_sqlite || die "python3 still cannot import sqlite3"
fi

if ! python3 -c 'import sqlite3' >/dev/null 2>&1; then
  say "warning: the python3 on PATH ($(command -v python3 || echo none)) cannot import sqlite3;" \
    "/usr/bin/python3 can"
fi

# --- /dev/fuse --------------------------------------------------------------------------

if ((need_fuse_dev)); then
  say "creating /dev/fuse"
  mknod /dev/fuse c 10 229 || die "cannot create /dev/fuse (a container needs --device /dev/fuse)"
  chmod 666 /dev/fuse
fi

# --- Consul -----------------------------------------------------------------------------

# The URI of the Debian mirror configured for the running release (bookworm): the first URI
# of the deb822 stanza whose Suites include it, else a classic `deb URI bookworm ...` line.
debian_mirror() {
  local suite uri f
  # shellcheck source=/dev/null
  suite=$(. /etc/os-release 2>/dev/null && echo "${VERSION_CODENAME:-}")
  suite=${suite:-bookworm}
  for f in /etc/apt/sources.list.d/debian.sources /etc/apt/sources.list.d/*.sources; do
    [[ -r $f ]] || continue
    uri=$(awk -v suite="$suite" '
      function flush() {
        if (!found && enabled != "no" && (" " types " ") ~ / deb / &&
            (" " suites " ") ~ (" " suite " ") && uris != "") {
          split(uris, u, " "); print u[1]; found = 1
        }
        types = suites = uris = ""; enabled = "yes"
      }
      BEGIN { enabled = "yes" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      /^[^ \t][^:]*:/ {
        key = tolower(substr($0, 1, index($0, ":") - 1))
        val = substr($0, index($0, ":") + 1)
        gsub(/[ \t]+/, " ", val); sub(/^ /, "", val); sub(/ $/, "", val)
        if (key == "types") types = val
        else if (key == "suites") suites = val
        else if (key == "uris") uris = val
        else if (key == "enabled") enabled = tolower(val)
      }
      END { flush() }
    ' "$f")
    if [[ -n $uri ]]; then
      echo "$uri"
      return 0
    fi
  done
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [[ -r $f ]] || continue
    uri=$(awk -v suite="$suite" '
      $1 == "deb" {
        i = 2
        if ($i ~ /^\[/) { while (i <= NF && $i !~ /\]$/) i++; i++ }
        if ($(i + 1) == suite) { print $i; exit }
      }
    ' "$f")
    if [[ -n $uri ]]; then
      echo "$uri"
      return 0
    fi
  done
  return 1
}

install_consul() {
  local mirror tmp deb
  mirror=$(debian_mirror) || die "no Debian mirror for bookworm found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list"
  say "installing consul from Debian bullseye ($mirror) into $consul_dir"

  tmp=$(mktemp -d)
  # shellcheck disable=SC2064 # expand $tmp now
  trap "rm -rf '$tmp'" EXIT
  mkdir -p "$tmp/lists/partial" "$tmp/cache/archives/partial" "$tmp/download"
  # Signed with the bullseye keys, which bookworm's debian-archive-keyring still carries.
  echo "deb [signed-by=$keyring target=Packages] $mirror bullseye main" >"$tmp/sources.list"
  local apt_opts=(
    -o "Dir::Etc::sourcelist=$tmp/sources.list"
    -o "Dir::Etc::sourceparts=-"
    -o "Dir::State::Lists=$tmp/lists"
    -o "Dir::Cache=$tmp/cache"
    -o "Dir::Cache::pkgcache=" -o "Dir::Cache::srcpkgcache="
  )
  # apt would hand the downloads to the unprivileged _apt user, who cannot write to $tmp.
  if is_root; then apt_opts+=(-o "APT::Sandbox::User=root"); fi

  quietly apt-get "${apt_opts[@]}" update
  (cd "$tmp/download" && quietly apt-get "${apt_opts[@]}" download consul)
  deb=$(echo "$tmp"/download/consul_*.deb)
  [[ -f $deb ]] || die "apt-get download consul produced no .deb"

  # Unpack next to the final place, then swap it in, so an interrupted run leaves no half tree.
  rm -rf "$consul_dir.new"
  dpkg -x "$deb" "$consul_dir.new"
  dpkg-deb -f "$deb" Package Version >"$consul_dir.new/PACKAGE"
  "$consul_dir.new/usr/bin/consul" version >/dev/null || die "the unpacked consul does not run"
  rm -rf "$consul_dir"
  mv "$consul_dir.new" "$consul_dir"

  rm -rf "$tmp"
  trap - EXIT
}

consul_runs() { [[ -x $consul_bin ]] && "$consul_bin" version >/dev/null 2>&1; }

if consul_runs; then
  if ((verbose)); then say "consul: $consul_bin ($("$consul_bin" version | head -n1))"; fi
else
  # One installer at a time (test.sh and run.sh may start together); recheck once we hold it.
  mkdir -p "$(dirname "$consul_dir")"
  exec 9>"$consul_dir.lock"
  flock 9
  if ! consul_runs; then install_consul; fi
  say "consul: $consul_bin ($("$consul_bin" version | head -n1))"
fi
