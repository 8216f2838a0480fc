"""Commands that train nothing start without torch or Flower (about 0.3 s instead of 3 s)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
from pathlib import Path

from fractofl.cli.main import USER_ERRORS, is_user_error
from fractofl.core.trust.registry import ModelVerificationError

HEAVY = ("torch", "torchvision", "flwr", "ray")


def test_commands_that_train_nothing_import_neither_torch_nor_flower(tmp_path: Path) -> None:
    # A fresh process, as a user's shell starts one: what a command imports is what the
    # user waits for. `member add` with a key that is not there fails with a user error;
    # telling a user error from a bug must not import the modules of every error class.
    probe = (
        "import json, sys\n"
        "from fractofl.cli.main import main\n"
        "loaded = {}\n"
        "for name, argv in json.loads(sys.argv[1]):\n"
        "    code = main(argv)\n"
        f"    loaded[name] = [code, sorted(m for m in {HEAVY!r} if m in sys.modules)]\n"
        "print(json.dumps(loaded))\n"
    )
    pki, member = tmp_path / "pki", tmp_path / "member"
    coordinator = [f"deployment.state_dir={tmp_path / 'coordinator'}", f"deployment.pki_dir={pki}"]
    commands = [
        ("ca init", ["ca", "init", *coordinator]),
        ("member keys", ["member", "keys", "--dir", str(member)]),
        (
            "member add",
            ["member", "add", str(tmp_path / "missing.pub"), "--name", "acme", *coordinator],
        ),
    ]
    result = subprocess.run(
        [sys.executable, "-c", probe, json.dumps(commands)],
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
        cwd=tmp_path,  # `ca init` keeps its settings in deployment.state_dir
    )
    assert result.returncode == 0, result.stderr[-3000:]
    loaded = json.loads(result.stdout.strip().splitlines()[-1])
    assert loaded == {"ca init": [0, []], "member keys": [0, []], "member add": [1, []]}
    assert (member / "member.pub").is_file()
    assert f"public key {tmp_path / 'missing.pub'} does not exist" in result.stderr


def test_every_listed_user_error_is_an_exception_class_and_is_recognised() -> None:
    # The list names classes by text, so a renamed or moved class would silently become a
    # traceback; importing each one here catches that.
    for path in USER_ERRORS:
        module_name, class_name = path.split(":")
        error = getattr(importlib.import_module(module_name), class_name)
        assert issubclass(error, Exception), path
        assert is_user_error(error.__new__(error)), path
    assert is_user_error(ModelVerificationError("bad signature"))  # a subclass of one
    assert is_user_error(FileExistsError("run folder exists"))
    assert not is_user_error(ValueError("a bug"))
