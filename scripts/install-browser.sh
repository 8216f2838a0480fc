#!/usr/bin/env bash
# The browser the web page's tests drive: Debian's Chromium (Playwright's own browser
# download does not work offline), plus a Japanese font so the page's Japanese labels
# render in screenshots. Idempotent: does nothing when both are installed.
set -euo pipefail

packages=()
[[ -n ${FRACTOFL_CHROMIUM:-} || -x /usr/bin/chromium ]] || packages+=(chromium)
fc-list 2>/dev/null | grep -qi "ipagothic\|noto sans cjk" || packages+=(fonts-ipafont-gothic)
[[ ${#packages[@]} -eq 0 ]] && exit 0

if [[ $(id -u) -eq 0 ]]; then
    apt_get=(apt-get)
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
    apt_get=(sudo apt-get)
else
    echo "install-browser.sh: need root to install ${packages[*]}; run" >&2
    echo "  sudo apt-get install -y --no-install-recommends ${packages[*]}" >&2
    echo "or set FRACTOFL_CHROMIUM to a Chromium binary you have." >&2
    exit 1
fi
echo "installing ${packages[*]} from Debian's packages ..."
export DEBIAN_FRONTEND=noninteractive
"${apt_get[@]}" install -y --no-install-recommends "${packages[@]}" >/dev/null 2>&1 || {
    "${apt_get[@]}" update -qq
    "${apt_get[@]}" install -y --no-install-recommends "${packages[@]}"
}
