#!/usr/bin/env bash
# The coordinator's front (`fractofl coordinator up`) and its tests: Debian's nginx. fractofl
# runs its own instance (`nginx -c CONF -p PREFIX`), never the package's system service
# (which Debian enables on port 80 where systemd runs: `systemctl disable --now nginx` if
# unwanted). Idempotent: does nothing when nginx is installed. With --if-possible (`make
# setup`: members need no nginx), no root is a note, not a failure; `make test` needs it.
set -euo pipefail

if command -v nginx >/dev/null || [[ -x /usr/sbin/nginx ]]; then
    exit 0
fi

if [[ $(id -u) -eq 0 ]]; then
    apt_get=(apt-get)
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    apt_get=(sudo apt-get)
elif [[ ${1:-} == --if-possible ]]; then
    echo "note: nginx is not installed (the coordinator's front needs it; members do not);" >&2
    echo "  on the coordinator run: sudo apt-get install -y --no-install-recommends nginx" >&2
    exit 0
else
    echo "install-nginx.sh: need root to install nginx; run" >&2
    echo "  sudo apt-get install -y --no-install-recommends nginx" >&2
    echo "or install nginx another way and set deployment.nginx to its path." >&2
    exit 1
fi
echo "installing nginx from Debian's packages ..."
export DEBIAN_FRONTEND=noninteractive
"${apt_get[@]}" install -y --no-install-recommends nginx >/dev/null 2>&1 || {
    "${apt_get[@]}" update -qq
    "${apt_get[@]}" install -y --no-install-recommends nginx
}
