"""The set-up's installer (``scripts/install-python.sh``) hands this machine's pip
configuration to uv: the same indexes, find-links and constraints, whatever file or
``PIP_*`` variable sets them."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "scripts" / "uv_args_from_pip.py"


def _uv_options(tmp_path: Path, config: str, **env: str) -> list[str]:
    """What the script prints with ``config`` as the only pip configuration file."""
    (tmp_path / "pip.conf").write_text(config)
    clean = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    result = subprocess.run(
        [sys.executable, str(SCRIPT), sys.executable],
        capture_output=True,
        text=True,
        check=True,
        # the machine's own pip files are read too: the assertions look for ours among them
        env={**clean, "PIP_CONFIG_FILE": str(tmp_path / "pip.conf"), **env},
    )
    return result.stdout.split()


def test_pips_indexes_find_links_and_constraints_become_uvs(tmp_path: Path) -> None:
    # Prepare: a file with two extra indexes and a constraint, a variable with find-links
    config = (
        "[global]\n"
        "index-url = https://mirror.example/simple\n"
        "extra-index-url = file:///srv/a/simple file:///srv/b/simple\n"
        "constraint = /etc/caps.txt\n"
        "cert = /etc/ssl/ca.crt\n"
        "timeout = 60\n"
    )
    # Execute
    options = _uv_options(tmp_path, config, PIP_FIND_LINKS="/srv/wheels")
    # Assert: each setting carried once, the certificate as uv's use of the system's, and
    # what uv has no twin for (timeout) left out
    assert "--index-url=https://mirror.example/simple" in options
    assert "--extra-index-url=file:///srv/a/simple" in options
    assert "--extra-index-url=file:///srv/b/simple" in options
    assert "--constraint=/etc/caps.txt" in options
    assert "--find-links=/srv/wheels" in options
    assert "--native-tls" in options
    assert not any("60" in option for option in options)


def test_a_setting_given_twice_is_carried_once_and_the_variable_wins(tmp_path: Path) -> None:
    config = "[global]\nfind-links = /srv/wheels\nindex-url = https://file.example/simple\n"
    options = _uv_options(
        tmp_path,
        config,
        PIP_FIND_LINKS="/srv/wheels",
        PIP_INDEX_URL="https://variable.example/simple",
    )
    assert options.count("--find-links=/srv/wheels") == 1
    assert [o for o in options if o.startswith("--index-url")] == [
        "--index-url=https://variable.example/simple"
    ]


def test_an_install_section_beats_global_and_other_commands_sections_are_left_out(
    tmp_path: Path,
) -> None:
    config = (
        "[install]\nindex-url = https://install.example/simple\n"
        "[global]\nindex-url = https://global.example/simple\n"
        "[download]\nfind-links = /srv/only-for-download\n"
    )
    options = _uv_options(tmp_path, config)
    assert [o for o in options if o.startswith("--index-url")] == [
        "--index-url=https://install.example/simple"
    ]
    assert "--find-links=/srv/only-for-download" not in options
